"""The live lock view: held locks with holder and lease, waiters, timeouts, acquisitions, loss.

Real Redis and PostgreSQL; locks are held from the test with python-redis-lock itself, under
the same key the service uses.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis_lock
from flask import Flask
from flask.testing import FlaskClient

from booking_service.locking import lock_key, lock_name, locks, stats_key
from booking_service.ops.dashboard import quantile_from_buckets
from booking_service.services import accounts
from tests.factories import API, PASSWORD, auth, book, create_event, customer, organizer

LOCKS = f"{API}/ops/locks"
STATS = f"{API}/ops/stats"
HOLDER = "tester-host:4242:abcdef123456"


@pytest.fixture
def admin(client: FlaskClient) -> dict[str, str]:
    accounts.create_admin(username="ops-admin", password=PASSWORD, email="ops@example.com")
    response = client.post(
        f"{API}/auth/login", json={"username": "ops-admin", "password": PASSWORD}
    )
    assert response.status_code == 200
    return auth(response.get_json()["token"])


@pytest.fixture
def organizer_token(client: FlaskClient) -> str:
    return organizer(client)["token"]


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # The configured wait is 2 s; a timeout test need not sit that long.
    monkeypatch.setattr(locks, "wait_seconds", 0.5)


@contextmanager
def held_by_test(conn: redis.Redis, event_id: int, holder: str = HOLDER) -> Iterator[None]:
    """Hold the event's lock from outside the service, exactly as a service instance would."""
    lock = redis_lock.Lock(conn, lock_name(event_id), expire=locks.expire_seconds, id=holder)
    assert lock.acquire(blocking=False)
    try:
        yield
    finally:
        lock.release()


def lock_view(client: FlaskClient, admin: dict[str, str], **query: Any) -> dict[str, Any]:
    response = client.get(LOCKS, headers=admin, query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def row_for(view: dict[str, Any], event_id: int) -> dict[str, Any] | None:
    return next((row for row in view["events"] if row["event_id"] == event_id), None)


def wait_for(check: Callable[[], bool], *, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_held_lock_shows_event_holder_lease_and_held_for(
    client: FlaskClient, admin: dict[str, str], organizer_token: str, redis_conn: redis.Redis
) -> None:
    event = create_event(client, organizer_token, title="Sold-out gala")
    with held_by_test(redis_conn, event["id"]):
        time.sleep(0.3)
        view = lock_view(client, admin)
        row = row_for(view, event["id"])
        assert row is not None, view
        assert row["title"] == "Sold-out gala"
        assert row["held"] is True
        assert row["holder"] == HOLDER
        assert (row["holder_instance"], row["holder_pid"]) == ("tester-host", 4242)
        expire_ms = locks.expire_seconds * 1000
        assert expire_ms - 2000 < row["lease_left_ms"] <= expire_ms - 250
        assert 250 <= row["held_for_ms"] < 2000
        assert row["waiters"] == 0 and row["acquired"] == 0
        assert view["lock_expire_seconds"] == locks.expire_seconds
    # Released and never used through the service: nothing left to show.
    assert row_for(lock_view(client, admin), event["id"]) is None


def test_holder_without_instance_and_pid_is_shown_raw(
    client: FlaskClient, admin: dict[str, str], redis_conn: redis.Redis
) -> None:
    # A key with no event row behind it (deleted event): shown, without a title.
    with held_by_test(redis_conn, 987654, holder="opaque-holder-id"):
        row = row_for(lock_view(client, admin), 987654)
    assert row is not None
    assert row["held"] is True and row["title"] is None
    assert row["holder"] == "opaque-holder-id"
    assert row["holder_instance"] is None and row["holder_pid"] is None


def test_waiter_is_counted_while_waiting_and_timeout_after(
    app: Flask,
    client: FlaskClient,
    admin: dict[str, str],
    organizer_token: str,
    redis_conn: redis.Redis,
    short_wait: None,
) -> None:
    event = create_event(client, organizer_token)
    token = customer(client)["token"]
    answers: list[Any] = []
    with held_by_test(redis_conn, event["id"]):
        waiter = threading.Thread(
            target=lambda: answers.append(book(app.test_client(), token, event["id"]))
        )
        waiter.start()
        wait_for(lambda: (row_for(lock_view(client, admin), event["id"]) or {}).get("waiters") == 1)
        waiter.join(timeout=5)
        assert not waiter.is_alive()
        row = row_for(lock_view(client, admin), event["id"])
    assert answers[0].status_code == 503
    assert answers[0].get_json()["code"] == "lock_timeout"
    assert row is not None
    assert row["timeouts"] == 1
    assert row["waiters"] == 0
    assert row["acquired"] == 0
    assert row["held"] is True  # still ours when we looked


def test_acquisitions_match_successful_bookings(
    client: FlaskClient, admin: dict[str, str], organizer_token: str
) -> None:
    event = create_event(client, organizer_token, capacity=3)
    for _ in range(3):
        assert book(client, customer(client)["token"], event["id"]).status_code == 201
    # Sold out: rejected before the lock, so it is no acquisition.
    late = book(client, customer(client)["token"], event["id"])
    assert late.get_json()["code"] == "event_full"

    row = row_for(lock_view(client, admin), event["id"])
    assert row is not None
    assert row["acquired"] == row["requests"] == 3  # one at a time: batches of one
    assert row["held"] is False and row["holder"] is None and row["lease_left_ms"] is None
    assert row["waiters"] == 0 and row["timeouts"] == 0 and row["lost"] == 0
    assert row["avg_hold_ms"] is not None and row["avg_hold_ms"] > 0
    assert row["last_activity"] is not None and row["since"] <= row["last_activity"]


def test_lost_lease_is_counted(
    client: FlaskClient, admin: dict[str, str], organizer_token: str, redis_conn: redis.Redis
) -> None:
    event = create_event(client, organizer_token)
    with locks.locked(event["id"]):
        # The lease disappears under the holder (expiry, failover); release then notices.
        redis_conn.delete(lock_key(event["id"]))
    row = row_for(lock_view(client, admin), event["id"])
    assert row is not None
    assert (row["acquired"], row["lost"]) == (1, 1)


def test_hottest_event_comes_first(
    client: FlaskClient, admin: dict[str, str], organizer_token: str
) -> None:
    calm = create_event(client, organizer_token, title="Calm")
    hot = create_event(client, organizer_token, title="Hot")
    assert book(client, customer(client)["token"], calm["id"]).status_code == 201
    for _ in range(3):
        assert book(client, customer(client)["token"], hot["id"]).status_code == 201
    events = lock_view(client, admin)["events"]
    assert [row["title"] for row in events] == ["Hot", "Calm"]
    assert [row["acquired"] for row in events] == [3, 1]


def test_many_held_locks_are_found_and_limit_applies(
    client: FlaskClient, admin: dict[str, str], redis_conn: redis.Redis
) -> None:
    ids = range(1000, 1120)
    pipe = redis_conn.pipeline()
    for event_id in ids:
        pipe.set(lock_key(event_id), f"other:1:{event_id}", ex=30)
        pipe.set(f"unrelated:{event_id}", "x", ex=30)  # SCAN pattern must skip these
    pipe.execute()
    view = lock_view(client, admin, limit=500)
    assert {row["event_id"] for row in view["events"]} == set(ids)
    assert all(row["held"] and row["holder_instance"] == "other" for row in view["events"])
    assert len(lock_view(client, admin, limit=5)["events"]) == 5
    assert client.get(LOCKS, headers=admin, query_string={"limit": 0}).status_code == 422


def test_release_works_after_redis_forgot_its_scripts(
    client: FlaskClient, admin: dict[str, str], organizer_token: str, redis_conn: redis.Redis
) -> None:
    event = create_event(client, organizer_token)
    assert book(client, customer(client)["token"], event["id"]).status_code == 201
    redis_conn.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    response = book(client, customer(client)["token"], event["id"])
    assert response.status_code == 201, response.get_json()
    assert redis_conn.exists(lock_key(event["id"])) == 0
    assert row_for(lock_view(client, admin), event["id"])["acquired"] == 2


def test_broken_statistics_never_fail_a_booking(
    client: FlaskClient, admin: dict[str, str], organizer_token: str, redis_conn: redis.Redis
) -> None:
    event = create_event(client, organizer_token)
    # A stats key of the wrong type makes every statistics write fail with WRONGTYPE.
    redis_conn.set(stats_key(event["id"]), "not a hash")
    response = book(client, customer(client)["token"], event["id"])
    assert response.status_code == 201, response.get_json()
    assert redis_conn.exists(lock_key(event["id"])) == 0  # released all the same
    row = row_for(lock_view(client, admin), event["id"])  # the view still answers
    assert row is not None and row["acquired"] == 0


def test_stats_reflect_bookings_of_this_process(
    client: FlaskClient,
    admin: dict[str, str],
    organizer_token: str,
    redis_conn: redis.Redis,
    short_wait: None,
) -> None:
    event = create_event(client, organizer_token, title="Nearly full", capacity=4)
    before = client.get(STATS, headers=admin).get_json()
    for _ in range(2):
        assert book(client, customer(client)["token"], event["id"]).status_code == 201
    with held_by_test(redis_conn, event["id"]):
        assert book(client, customer(client)["token"], event["id"]).status_code == 503
    after = client.get(STATS, headers=admin).get_json()

    def delta(*path: str) -> float:
        old, new = before, after
        for key in path:
            old, new = old[key], new[key]
        return new - old

    assert delta("bookings", "created") == 2
    assert delta("bookings", "lock_timeout") == 1
    assert delta("lock_acquisitions", "acquired") == 2
    assert delta("lock_acquisitions", "timeout") == 1
    assert delta("lock_wait", "count") == 3
    assert delta("lock_hold", "count") == 2
    # Percentiles of just these three waits, from bucket deltas as the dashboard does it:
    # the timed-out wait (0.5 s) is the slowest.
    window = [
        (bound, new - old)
        for (bound, new), (_, old) in zip(
            after["lock_wait"]["buckets"], before["lock_wait"]["buckets"], strict=True
        )
    ] + [(math.inf, 3)]
    assert 0.5 <= quantile_from_buckets(0.99, window) <= 1.0  # bucket (0.5, 1]
    assert quantile_from_buckets(0.5, window) < 0.1
    assert after["lock_waiters"] == 0
    upcoming = after["upcoming"]
    assert upcoming[0]["event_id"] == event["id"]
    assert upcoming[0]["utilisation"] == pytest.approx(0.5)
