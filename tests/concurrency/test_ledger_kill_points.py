"""The seat ledger's holder SIGKILLed at each point of its hold, in each set-up: every other
caller's answer is still the database's truth.

tests/concurrency/test_combining.py proves the same kill points on a toy workload; here the
workload is the real one: worker processes (tests/support/ledger_worker.py) build the service's
app and book seats through ``ledger.run`` for distinct customers, on an event with fewer seats
than they ask for. Everyone queues behind a plain python-redis-lock holder; when it lets go, a
waiter wins the lock and drains the queue, and the first holder to reach the kill point
(after winning the lock, after draining a batch, after committing it) SIGKILLs its process.
The survivors' answers are then held against the booking rows, the event's counter and the
ledger's journal (``seat_intents``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis_lock
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.locking import intents_key, lock_key, lock_name
from booking_service.services import ledger
from booking_service.services.invariants import find_drift
from harness.pgbouncer import PgBouncer
from harness.processes import PROJECT_ROOT, wait_until
from harness.redis_cluster import RedisClusterGroup
from harness.redis_servers import RedisServer
from tests import factories
from tests.concurrency.test_combining import Workers, collect
from tests.conftest import TEST_DATABASE_URL

pytestmark = pytest.mark.slow

SETUPS = ("direct", "pgbouncer", "redis-cluster")
KILL_POINTS = ("acquired", "drained", "committed")
WORKERS = 3
THREADS = 4
PER_THREAD = 3
INTENTS = WORKERS * THREADS * PER_THREAD  # one per customer, 1 or 2 seats each
# Fewer seats than intents (and half the seats asked for): the later ones are refused.
CAPACITY = 24
MAX_SEATS = 2
# How many intents wait behind the plain lock before it is let go (at most one per thread).
QUEUED = 10
# The lease a dead holder leaves behind; the waits around it. Worker 0 gives up early: its
# callers take the deadline path (LREM, then the journal), the others outwait the lease.
EXPIRE_SECONDS = 2
SHORT_WAIT_SECONDS = 2.0
LONG_WAIT_SECONDS = 8.0
# After their launch, the workers start booking together: their apps are built by then (about
# a second each, three at once on two cores).
START_DELAY_SECONDS = 3.0

Record = dict[str, Any]


@dataclass
class Deployment:
    """Where the workers book: their database URL and lock Redis, and a client of the latter."""

    name: str
    database_url: str
    redis_settings: dict[str, Any]
    lock_client: Any


@pytest.fixture(scope="module", params=SETUPS)
def deployment(app: Any, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    # ``app`` first: it creates the test database the workers (and PgBouncer) connect to.
    with ExitStack() as stack:
        redis_settings: dict[str, Any]
        if request.param == "redis-cluster":
            group = stack.enter_context(RedisClusterGroup())
            redis_settings = {"cluster_nodes": group.nodes}
            lock_client: Any = group.client(socket_timeout=10)
        else:
            server = stack.enter_context(RedisServer())
            redis_settings = {"redis_url": server.url}
            lock_client = server.client()
        database_url = TEST_DATABASE_URL
        if request.param == "pgbouncer":
            pooler = stack.enter_context(PgBouncer(default_pool_size=10))
            database_url = pooler.url(TEST_DATABASE_URL.rsplit("/", 1)[1])
        yield Deployment(request.param, database_url, redis_settings, lock_client)


@pytest.fixture
def started() -> Iterator[Workers]:
    """The test's worker processes; none outlives its test."""
    workers: Workers = []
    yield workers
    for process, _ in workers:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def start_workers(
    started: Workers,
    tmp_path: Path,
    deployment: Deployment,
    *,
    event_id: int,
    customers: list[tuple[int, int]],
    kill_at: str,
    marker: Path,
) -> Workers:
    """WORKERS processes of tests/support/ledger_worker.py, each booking for its share of the
    customers, starting together."""
    start_at = time.time() + START_DELAY_SECONDS
    share = len(customers) // WORKERS
    for n in range(WORKERS):
        results = tmp_path / f"worker-{n}.json"
        settings = {
            "database_url": deployment.database_url,
            **deployment.redis_settings,
            "event_id": event_id,
            "customers": customers[n * share : (n + 1) * share],
            "threads": THREADS,
            "wait_seconds": SHORT_WAIT_SECONDS if n == 0 else LONG_WAIT_SECONDS,
            "expire_seconds": EXPIRE_SECONDS,
            "name": f"ledger-worker-{n}",
            "results": str(results),
            "start_at": start_at,
            "kill_at": kill_at,
            "marker": str(marker),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.ledger_worker", json.dumps(settings)],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )
        started.append((process, results))
    return started


@dataclass
class Truth:
    """What the database holds for the event."""

    capacity: int
    booked_count: int
    bookings: list[Record]  # every booking row of the event
    journal: dict[str, Record]  # outcome per journaled intent id


def read_truth(event_id: int) -> Truth:
    with db.read_transaction() as session:
        capacity, booked_count = session.execute(
            text("SELECT capacity, booked_count FROM events WHERE id = :e"), {"e": event_id}
        ).one()
        bookings = [
            dict(row)
            for row in session.execute(
                text("SELECT id, customer_id, seats, status FROM bookings WHERE event_id = :e"),
                {"e": event_id},
            ).mappings()
        ]
        journal = dict(
            session.execute(  # type: ignore[arg-type]
                text("SELECT id, outcome FROM seat_intents WHERE event_id = :e"), {"e": event_id}
            ).all()
        )
    return Truth(capacity, booked_count, bookings, journal)


def check_invariants(truth: Truth) -> dict[int, Record]:
    """Nothing booked twice or beyond capacity, the counter in step with the rows, and every
    booking journaled; returns the active booking per customer."""
    active = [row for row in truth.bookings if row["status"] == "active"]
    by_customer = {row["customer_id"]: row for row in active}
    assert len(by_customer) == len(active), "a customer has two active bookings"
    assert truth.booked_count == sum(row["seats"] for row in active)
    assert truth.booked_count <= truth.capacity
    assert find_drift() == []
    # Only bookings ran: every journaled booking is a row (the rows that are not journaled are
    # checked against the answers: an intent applied by its own submitter, never queued).
    journaled = {
        outcome["booking"]["id"] for outcome in truth.journal.values() if "booking" in outcome
    }
    assert journaled <= {row["id"] for row in truth.bookings}
    assert all(row["status"] == "active" for row in truth.bookings)
    return by_customer


def check_unjournaled_rows(truth: Truth, records: list[Record], dead: set[int]) -> None:
    """A booking row without a journal entry was applied by its own submitter unqueued: a
    survivor that was answered that very booking, or a customer of the dead worker."""
    journaled = {
        outcome["booking"]["id"] for outcome in truth.journal.values() if "booking" in outcome
    }
    answered = {
        record["outcome"]["booking"]["id"]
        for record in records
        if "booking" in record.get("outcome", {})
    }
    for row in truth.bookings:
        if row["id"] not in journaled:
            assert row["id"] in answered or row["customer_id"] in dead, row


def check_answer(record: Record, truth: Truth, active: dict[int, Record]) -> None:
    """One survivor's answer is the database's truth."""
    assert set(record) & {"outcome", "error"}, record  # no "unexpected" exception
    row = active.get(record["customer"])
    any_row = any(b["customer_id"] == record["customer"] for b in truth.bookings)
    if "outcome" in record:
        outcome = record["outcome"]
        # Journaled unless its own submitter applied it unqueued; never journaled otherwise.
        assert truth.journal.get(record["id"], outcome) == outcome, record
        if "booking" in outcome:
            booking = outcome["booking"]
            assert row is not None, f"answered a booking that is not there: {record}"
            assert (booking["id"], booking["customer_id"], booking["seats"]) == (
                row["id"],
                record["customer"],
                record["seats"],
            ), (record, row)
        else:
            assert outcome["error"] == "event_full", record
            assert not any_row, f"refused, yet booked: {record}"
    else:
        assert record["error"] == "lock_timeout", record
        assert not any_row, f"timed out, yet booked: {record}"
        # Given up: at most fenced off in the journal, never applied.
        assert truth.journal.get(record["id"], ledger.WITHDRAWN) == ledger.WITHDRAWN, (
            f"timed out, yet applied: {record}"
        )


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_a_killed_ledger_holder_leaves_every_answer_true(
    deployment: Deployment,
    client: FlaskClient,
    started: Workers,
    tmp_path: Path,
    kill_at: str,
) -> None:
    organizer = factories.organizer(client)
    event_id = factories.create_event(
        client, organizer["token"], capacity=CAPACITY, max_seats_per_booking=MAX_SEATS
    )["id"]
    customers = [(factories.customer(client)["user"]["id"], 1 + n % 2) for n in range(INTENTS)]
    lock = deployment.lock_client
    queue = intents_key(ledger.combiner.kind, event_id)
    marker = tmp_path / "killed"

    blocker = redis_lock.Lock(lock, lock_name(event_id), expire=60, strict=False)
    assert blocker.acquire(blocking=False)
    try:
        start_workers(
            started,
            tmp_path,
            deployment,
            event_id=event_id,
            customers=customers,
            kill_at=kill_at,
            marker=marker,
        )
        # Everyone queues behind the plain lock; then a waiter wins it and dies at the point.
        wait_until(lambda: lock.llen(queue) >= QUEUED, timeout=30, what="intents queued")
    finally:
        blocker.release()
    records, codes = collect(started)

    assert marker.exists(), "no holder reached the kill point"
    assert sorted(codes) == [-9, 0, 0], codes
    # Every survivor answered every one of its intents, each once.
    assert len(records) == (WORKERS - 1) * THREADS * PER_THREAD
    assert len({record["id"] for record in records}) == len(records)

    truth = read_truth(event_id)
    active = check_invariants(truth)
    for record in records:
        check_answer(record, truth, active)
    survivors = {record["customer"] for record in records}
    check_unjournaled_rows(truth, records, {c for c, _ in customers} - survivors)
    answers = [record.get("outcome", {}).get("error", record.get("error")) for record in records]
    assert "event_full" in answers, "the event never filled up: nothing was refused"

    # What the dead holder had drained (the marker lists it): its callers that survived got
    # an outcome, from its journal or applied again; committed, all of it is journaled.
    stranded = set(json.loads(marker.read_text()))
    if kill_at == "acquired":
        assert stranded == set()
    else:
        assert len(stranded) > 1
        # At least QUEUED intents were queued when it won, at most THREADS of them its own.
        assert any(record["id"] in stranded for record in records)
    for record in records:
        if record["id"] in stranded:
            assert "outcome" in record, record
    if kill_at == "committed":
        assert stranded <= set(truth.journal)

    # Nothing is left queued, and the lock is free (a dead holder's within its lease).
    assert lock.llen(queue) == 0
    wait_until(
        lambda: lock.get(lock_key(event_id)) is None, timeout=EXPIRE_SECONDS + 1, what="lock"
    )
