"""Group commit in the seat ledger (services/ledger.py), with real threads, Redis and PostgreSQL.

Intents that find the event's lock taken queue in Redis; whoever takes the lock next applies
them all in one statement. These tests hold the lock themselves (python-redis-lock
on the app's Redis), so the batch forms deterministically, and they race the seat statement
against a second database session that bypasses the Redis lock (as a holder that lost its lease
would): the seat function locks the event row first, so every answer stays exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis_lock
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import text

from booking_service.database import db
from booking_service.errors import LockTimeout
from booking_service.locking import intents_key, lock_name, locks, stats_key
from booking_service.services import ledger
from booking_service.services.ledger_sql import APPLY_INTENTS
from tests import factories
from tests.support.instances import event_snapshot

WAIT_SECONDS = 10.0


def _customers(client: FlaskClient, count: int) -> list[int]:
    return [factories.customer(client)["user"]["id"] for _ in range(count)]


def _event(client: FlaskClient, capacity: int) -> int:
    organizer = factories.organizer(client)
    return factories.create_event(client, organizer["token"], capacity=capacity)["id"]


def _batch_metrics() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("booking_seat_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("booking_seat_batch_size_sum") or 0.0
    return count, total


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _queued(event_id: int) -> int:
    # The intents queued in Redis for whoever holds the lock next.
    return int(locks.client.llen(intents_key(ledger.combiner.kind, event_id)))


def _book(event_id: int, customer_id: int) -> dict[str, Any]:
    """One booking through the group commit: its outcome (a refusal is an outcome too)."""
    return ledger.run(event_id, ledger.intent("book", customer_id=customer_id, seats=1))


def _apply(event_id: int, customer_ids: list[int]) -> list[dict[str, Any]]:
    """One batch of bookings straight through the ledger's statement, no lock."""
    intents = [ledger.intent("book", customer_id=c, seats=1) for c in customer_ids]
    with db.single_write() as connection:
        return ledger.apply(connection, event_id, intents)[0]


def _booked(outcome: dict[str, Any]) -> int | None:
    return outcome["booking"]["customer_id"] if "booking" in outcome else None


def _take_in_threads(
    event_id: int, customer_ids: list[int]
) -> tuple[list[Any], list[threading.Thread]]:
    """Start one thread per customer calling the seat queue; outcomes land in request order."""
    outcomes: list[Any] = [None] * len(customer_ids)

    def take(index: int, customer_id: int) -> None:
        try:
            outcomes[index] = _book(event_id, customer_id)
        except Exception as error:  # the outcome under test, whatever it is
            outcomes[index] = error

    threads = [
        threading.Thread(target=take, args=(index, customer_id), daemon=True)
        for index, customer_id in enumerate(customer_ids)
    ]
    for started, thread in enumerate(threads, start=1):
        thread.start()
        # One at a time, so the arrival order (and so the seat order) is known.
        _until(lambda n=started: _queued(event_id) == n, "the request to queue")
    return outcomes, threads


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive(), "a request never got its outcome"


@contextmanager
def _lock_held_elsewhere(redis_conn: redis.Redis, event_id: int) -> Iterator[None]:
    lock = redis_lock.Lock(redis_conn, lock_name(event_id), expire=30)
    assert lock.acquire(blocking=False)
    try:
        yield
    finally:
        lock.release()  # wakes the one waiter: the batch's leader


def test_requests_queued_together_share_one_lock_hold_and_commit(
    client: FlaskClient, redis_conn: redis.Redis
):
    event_id = _event(client, capacity=4)
    customers = _customers(client, 6)
    batches_before, requests_before = _batch_metrics()

    with _lock_held_elsewhere(redis_conn, event_id):
        outcomes, threads = _take_in_threads(event_id, customers)
    _join(threads)

    batches_after, requests_after = _batch_metrics()
    assert (batches_after - batches_before, requests_after - requests_before) == (1, 6)
    # The live lock view counts one acquisition that served six requests.
    stats = redis_conn.hgetall(stats_key(event_id))
    assert (int(stats[b"acquired"]), int(stats[b"requests"])) == (1, 6)
    # Seats in arrival order; the two late requests find none (no booking, no seat left).
    assert all(isinstance(outcome, dict) for outcome in outcomes), outcomes
    assert [_booked(o) for o in outcomes] == [*customers[:4], None, None]
    assert [o.get("error") for o in outcomes[4:]] == ["event_full"] * 2
    assert [o["available"] for o in outcomes[4:]] == [0, 0]
    snapshot = event_snapshot(event_id)
    assert snapshot["booked_count"] == snapshot["active_rows"] == 4
    assert factories.count_rows("history_entries", action="create", entity_type="booking") == 4


def test_a_failed_lock_wait_fails_every_request_of_the_batch_and_writes_nothing(
    client: FlaskClient, redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
):
    event_id = _event(client, capacity=10)
    customers = _customers(client, 3)
    monkeypatch.setattr(locks, "wait_seconds", 0.5)

    with _lock_held_elsewhere(redis_conn, event_id):
        outcomes, threads = _take_in_threads(event_id, customers)
        _join(threads)

    assert all(isinstance(outcome, LockTimeout) for outcome in outcomes), outcomes
    assert len({id(outcome) for outcome in outcomes}) == 3, "one exception raised in 3 threads"
    snapshot = event_snapshot(event_id)
    assert snapshot["booked_count"] == snapshot["active_rows"] == 0


def test_batch_gives_one_seat_per_customer_in_arrival_order(client: FlaskClient):
    event_id = _event(client, capacity=3)
    first, second, holder, late = _customers(client, 4)
    factories.insert_active_booking(event_id=event_id, customer_id=holder)
    outcomes = _apply(event_id, [first, holder, first, second, late])

    assert [_booked(o) for o in outcomes] == [first, None, None, second, None]
    # The holder already had a seat, the repeat of ``first`` came second; ``late`` found none.
    assert [o.get("error") for o in outcomes] == [
        None, "already_booked", "already_booked", None, "event_full"
    ]  # fmt: skip
    snapshot = event_snapshot(event_id)
    assert snapshot["booked_count"] == snapshot["active_rows"] == 3
    assert snapshot["duplicate_active"] == 0


def test_batch_on_a_started_event_writes_nothing(client: FlaskClient):
    organizer = factories.organizer(client)
    event_id = factories.insert_event(
        organizer_id=organizer["user"]["id"],
        start=factories.in_hours(-1),
        end=factories.in_hours(1),
        capacity=5,
    )
    outcomes = _apply(event_id, _customers(client, 3))

    assert [o.get("error") for o in outcomes] == ["event_started"] * 3
    assert event_snapshot(event_id)["booked_count"] == 0


# --- a booking that bypassed the lock (lost lease) commits while the batch runs -------------


@contextmanager
def _rival_booking(
    event_id: int, customer_id: int, *, counts_the_seat: bool = True
) -> Iterator[Callable[[], None]]:
    """A second session books ``customer_id`` and keeps its locks until commit: the event row
    too when it ``counts_the_seat``, else only the new booking row (a writer that skips the
    event row, as none of the service's does)."""
    assert db.engine is not None
    with db.engine.connect() as rival:
        transaction = rival.begin()
        if counts_the_seat:
            rival.execute(
                text("UPDATE events SET booked_count = booked_count + 1 WHERE id = :id"),
                {"id": event_id},
            )
        rival.execute(
            text("INSERT INTO bookings (event_id, customer_id, status) VALUES (:e, :c, 'active')"),
            {"e": event_id, "c": customer_id},
        )
        yield transaction.commit


def _batch_in_thread(
    event_id: int, customer_ids: list[int], outcomes: list[dict[str, Any]]
) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: outcomes.extend(_apply(event_id, customer_ids)), daemon=True
    )
    thread.start()

    def blocked_on_the_event_row() -> bool:
        with db.single_statement() as connection:
            return bool(
                connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND strpos(query, :function) > 0"
                    ),
                    {"function": f"{APPLY_INTENTS.name}("},
                )
            )

    _until(blocked_on_the_event_row, "the batch to wait for the rival's row lock")
    return thread


def test_batch_behind_a_rival_that_took_a_seat_answers_from_the_row_it_locked(
    client: FlaskClient,
):
    event_id = _event(client, capacity=2)
    rival, first, second = _customers(client, 3)
    outcomes: list[dict[str, Any]] = []

    with _rival_booking(event_id, rival) as commit_rival:
        # The batch's snapshot still shows two free seats; the row it waits for will show one.
        thread = _batch_in_thread(event_id, [first, second], outcomes)
        commit_rival()
    _join([thread])

    assert [_booked(o) for o in outcomes] == [first, None]
    assert outcomes[1] == {"error": "event_full", "available": 0}
    snapshot = event_snapshot(event_id)
    assert snapshot["booked_count"] == snapshot["active_rows"] == snapshot["capacity"] == 2


def test_batch_meeting_the_one_active_index_answers_already_booked_for_that_intent_only(
    client: FlaskClient,
):
    event_id = _event(client, capacity=10)
    twice, other = _customers(client, 2)
    outcomes: list[dict[str, Any]] = []

    with _rival_booking(event_id, twice, counts_the_seat=False) as commit_rival:
        thread = _batch_in_thread(event_id, [twice, other], outcomes)
        commit_rival()
    _join([thread])

    # The batch's insert waited for the rival's and then met the index (ON CONFLICT): that
    # intent alone is refused, its neighbour is booked in the same statement.
    assert [o.get("error") for o in outcomes] == ["already_booked", None]
    assert _booked(outcomes[1]) == other
    snapshot = event_snapshot(event_id)
    # The counter has the batch's one seat; the rival never counted its own.
    assert (snapshot["booked_count"], snapshot["active_rows"]) == (1, 2)
    assert snapshot["duplicate_active"] == 0


def test_batches_of_one_when_group_commit_is_off(
    client: FlaskClient, redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
):
    event_id = _event(client, capacity=10)
    customers = _customers(client, 3)
    monkeypatch.setattr(ledger.combiner, "batch_max", 1)
    batches_before, _ = _batch_metrics()
    waiters_before = _lock_waiters()

    threads = [threading.Thread(target=_book, args=(event_id, c), daemon=True) for c in customers]
    with _lock_held_elsewhere(redis_conn, event_id):
        for thread in threads:
            thread.start()
        _until(lambda: _lock_waiters() - waiters_before == 3, "three separate lock waiters")
    _join(threads)

    assert _batch_metrics()[0] - batches_before == 3
    assert event_snapshot(event_id)["active_rows"] == 3


def _lock_waiters() -> float:
    """Requests of this process waiting on an event lock itself (not behind a leader)."""
    return REGISTRY.get_sample_value("booking_lock_waiters") or 0.0
