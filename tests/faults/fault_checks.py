"""Fault-injection harness: a stateful load driver, fault helpers and the checks after a fault.

A run looks like this: customers (one thread each, round-robin over the app instances) keep
booking, cancelling and reactivating on a few small events plus one roomy "probe" event; the test
injects a fault mid-load, lets the load run on, stops it and hands the recorded calls to
``evaluate``, which compares them with the rows in PostgreSQL:

- rows: ``booked_count`` equals the active bookings and stays within capacity; at most one active
  booking per (event, customer);
- calls vs rows: every 201/200 a client saw is in the rows (booking row, history entry); no row or
  history entry exists for a request that got an error (a request whose connection broke has an
  unknown outcome: it is excluded from this check and counted);
- answers: every failure is a 409/422 business outcome or a 503 with a known ``code`` and
  ``Retry-After``; no 500; no request slower than the lock wait plus a margin (except requests
  that a frozen worker could not answer while frozen);
- recovery: how long after the fault ended a booking that needs the lock succeeded again.

Threads, not processes, drive the load: the work is network-bound, and a thread's calls land in
one list that the checks read directly.
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
import requests
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.locking import lock_key
from booking_service.services.invariants import find_drift
from harness.instances import AppInstance
from harness.pgbouncer import PgBouncer
from harness.processes import wait_until
from harness.redis_servers import RedisSentinelGroup, RedisServer
from tests import factories

API = "/api/v1"

# The suite's lock timings: a short lease so that a lost holder costs seconds, a wait shorter
# than the lease, and a statement timeout below the lease (config.validate insists on that).
LOCK_EXPIRE_SECONDS = 2
LOCK_WAIT_SECONDS = 1.0
FAULT_SETTINGS: dict[str, Any] = {
    "LOCK_EXPIRE_SECONDS": LOCK_EXPIRE_SECONDS,
    "LOCK_WAIT_SECONDS": LOCK_WAIT_SECONDS,
    "DB_STATEMENT_TIMEOUT_MS": 1500,
    "DB_POOL_TIMEOUT_SECONDS": 1.0,
    # The Redis socket timeout is the lock wait plus this; a paused Redis costs a request at
    # most two of those (the client retries a timed-out command once).
    "REDIS_SOCKET_TIMEOUT_SECONDS": 0.5,
    "RETRY_AFTER_SECONDS": 1,
    "LOG_LEVEL": "WARNING",
}

# "No request waits longer than the lock wait plus a margin." The margin covers what a request
# may legitimately spend outside the lock wait under these faults: one statement up to its
# timeout (1.5 s, e.g. behind a frozen holder's row lock), or one Redis command stuck in a pause
# until its socket timeout and its one retry; plus scheduling slack on a loaded 2-core machine.
# Without the bounds in the service a stuck request would wait for gunicorn's 30 s timeout or
# the client's, so this still tells bounded from unbounded.
LATENCY_MARGIN_SECONDS = 4.0
MAX_REQUEST_SECONDS = LOCK_WAIT_SECONDS + LATENCY_MARGIN_SECONDS
CLIENT_TIMEOUT_SECONDS = 20.0

BUSINESS_CODES = {
    "book": {409: {"event_full", "already_booked"}, 422: {"event_started", "event_ended"}},
    "cancel": {409: {"not_active"}, 422: {"event_started", "event_ended"}},
    "reactivate": {
        409: {"already_active", "event_full", "already_booked"},
        422: {"event_started", "event_ended"},
    },
    "resync": {},
}
UNAVAILABLE_CODES = {"lock_timeout", "lock_unavailable", "db_unavailable", "outcome_unknown"}
LOCK_TAKING = {"book", "reactivate"}
ACTION_BY_OP = {"book": "create", "cancel": "cancel", "reactivate": "reactivate"}


# --- the cluster ----------------------------------------------------------------------------


@dataclass
class FaultCluster:
    """App instances sharing PostgreSQL (directly or through a PgBouncer) and a Redis (or
    Sentinel group) the suite started."""

    instances: list[AppInstance]
    redis: RedisServer | None = None
    sentinels: RedisSentinelGroup | None = None
    pgbouncer: PgBouncer | None = None

    def fault(self, name: str) -> str:
        """The fault's name in the table, saying whether the database was behind PgBouncer."""
        return f"{name} (via PgBouncer)" if self.pgbouncer is not None else name

    @property
    def urls(self) -> list[str]:
        return [instance.base_url for instance in self.instances]

    def control(self) -> redis.Redis:
        """A Redis client for the test itself (lock inspection, CLIENT PAUSE), on the primary."""
        if self.sentinels is not None:
            address = self.sentinels.primary_address()
            assert address is not None, "no sentinel names a primary"
            return redis.Redis(host=address[0], port=address[1], socket_timeout=10)
        assert self.redis is not None
        return redis.Redis(port=self.redis.port, socket_timeout=10)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every instance answers /readyz with all its workers up (e.g. after a respawn)."""

        def healthy() -> bool:
            for instance in self.instances:
                if len(instance.worker_pids()) != instance.workers:
                    return False
                try:
                    if requests.get(f"{instance.base_url}/readyz", timeout=2).status_code != 200:
                        return False
                except requests.RequestException:
                    return False
            return True

        wait_until(healthy, timeout=timeout, interval=0.2, what="all instances ready")

    def lock_lost_total(self, index: int) -> float:
        """``booking_lock_lost_total`` of one instance, summed over its workers."""
        body = requests.get(f"{self.instances[index].base_url}/metrics", timeout=10).text
        match = re.search(r"^booking_lock_lost_total (\S+)$", body, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def logs(self) -> str:
        return "\n".join(f"--- {i.name}\n{i.log()[-3000:]}" for i in self.instances)


# --- the load -------------------------------------------------------------------------------


@dataclass
class Call:
    """One request as its client saw it."""

    customer: int  # user id
    op: str  # book | cancel | reactivate | resync
    event_id: int
    booking_id: int | None  # the booking acted on (cancel/reactivate) or created (201)
    instance: int
    started: float  # time.monotonic()
    ended: float
    status: int | None = None  # None: no HTTP answer (refused, reset, timed out)
    code: str | None = None  # problem+json code
    content_type: str = ""
    retry_after: str | None = None
    error: str | None = None  # exception name when there was no answer

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)

    @property
    def outcome_unknown(self) -> bool:
        """No answer, or an answer saying the change may or may not have been made."""
        return self.status is None or self.code == "outcome_unknown"


@dataclass
class Seat:
    """What a customer believes about its booking for one event."""

    booking_id: int | None = None
    active: bool = False
    unknown: bool = False  # an answer went missing: ask the service before acting again


@dataclass(frozen=True)
class Participant:
    user_id: int
    token: str
    event_ids: tuple[int, ...]


class Customer(threading.Thread):
    """One customer: book when it holds nothing, cancel when active, reactivate when cancelled."""

    def __init__(
        self,
        participant: Participant,
        urls: Sequence[str],
        stop: threading.Event,
        *,
        seed: int,
        think: tuple[float, float],
    ) -> None:
        super().__init__(name=f"customer-{participant.user_id}", daemon=True)
        self.participant = participant
        self.urls = list(urls)
        self.stop_event = stop
        self.rng = random.Random(seed)
        self.think = think
        self.calls: list[Call] = []
        self.seats = {event_id: Seat() for event_id in participant.event_ids}
        self.sessions = [requests.Session() for _ in self.urls]
        self.headers = {"Authorization": f"Bearer {participant.token}"}
        self._next_instance = self.rng.randrange(len(self.urls))
        self.crashed: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                event_id = self.rng.choice(self.participant.event_ids)
                seat = self.seats[event_id]
                if seat.unknown:
                    self._resync(event_id)
                elif seat.booking_id is None:
                    self._book(event_id)
                elif seat.active:
                    self._cancel(event_id, seat)
                else:
                    self._reactivate(event_id, seat)
                self.stop_event.wait(self.rng.uniform(*self.think))
        except BaseException as error:  # surfaced by the driver: a broken driver must fail
            self.crashed = error
        finally:
            for session in self.sessions:
                session.close()

    def _send(
        self,
        op: str,
        event_id: int,
        booking_id: int | None,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> tuple[Call, Any]:
        index = self._next_instance
        self._next_instance = (index + 1) % len(self.urls)
        started = time.monotonic()
        call = Call(self.participant.user_id, op, event_id, booking_id, index, started, started)
        try:
            response = self.sessions[index].request(
                method,
                f"{self.urls[index]}{API}{path}",
                headers=self.headers,
                timeout=(3.0, CLIENT_TIMEOUT_SECONDS),
                **kwargs,
            )
        except requests.RequestException as error:
            call.ended = time.monotonic()
            call.error = type(error).__name__
            # A dead keep-alive connection must not poison the next request to this instance.
            self.sessions[index].close()
            self.sessions[index] = requests.Session()
            self.calls.append(call)
            return call, None
        call.ended = time.monotonic()
        call.status = response.status_code
        call.content_type = response.headers.get("Content-Type", "")
        call.retry_after = response.headers.get("Retry-After")
        payload: Any = None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if call.content_type.startswith("application/problem+json") and isinstance(payload, dict):
            call.code = payload.get("code")
        self.calls.append(call)
        return call, payload

    def _book(self, event_id: int) -> None:
        call, body = self._send(
            "book", event_id, None, "POST", "/bookings", json={"event_id": event_id}
        )
        if call.status == 201:
            call.booking_id = body["id"]
            self.seats[event_id] = Seat(booking_id=body["id"], active=True)
        elif call.outcome_unknown or call.code == "already_booked":
            self.seats[event_id].unknown = True

    def _cancel(self, event_id: int, seat: Seat) -> None:
        call, _ = self._send(
            "cancel", event_id, seat.booking_id, "POST", f"/bookings/{seat.booking_id}/cancel"
        )
        if call.status == 200:
            seat.active = False
        elif call.outcome_unknown or call.code == "not_active":
            seat.unknown = True

    def _reactivate(self, event_id: int, seat: Seat) -> None:
        call, _ = self._send(
            "reactivate",
            event_id,
            seat.booking_id,
            "POST",
            f"/bookings/{seat.booking_id}/reactivate",
        )
        if call.status == 200:
            seat.active = True
        elif call.outcome_unknown or call.code in ("already_active", "already_booked"):
            seat.unknown = True

    def _resync(self, event_id: int) -> None:
        call, body = self._send(
            "resync",
            event_id,
            None,
            "GET",
            "/bookings",
            params={"event_id": event_id, "page_size": 100},
        )
        if call.status != 200:
            return
        active = [b for b in body if b["status"] == "active"]
        if active:
            self.seats[event_id] = Seat(booking_id=active[0]["id"], active=True)
        elif body:  # newest first: reactivate the latest cancelled one
            self.seats[event_id] = Seat(booking_id=body[0]["id"], active=False)
        else:
            self.seats[event_id] = Seat()


@dataclass
class LoadResult:
    calls: list[Call]
    event_ids: list[int]
    customer_ids: list[int]
    capacities: dict[int, int]


class LoadDriver:
    """Runs the customers until stopped; ``calls`` is everything they saw."""

    def __init__(
        self,
        urls: Sequence[str],
        participants: Sequence[Participant],
        capacities: dict[int, int],
        *,
        think: tuple[float, float] = (0.005, 0.04),
        seed: int = 20240601,
    ) -> None:
        self.stop_event = threading.Event()
        self.capacities = capacities
        self.customers = [
            Customer(p, urls, self.stop_event, seed=seed + n, think=think)
            for n, p in enumerate(participants)
        ]

    def start(self) -> LoadDriver:
        for customer in self.customers:
            customer.start()
        return self

    def stop(self) -> LoadResult:
        self.stop_event.set()
        for customer in self.customers:
            customer.join(timeout=CLIENT_TIMEOUT_SECONDS + 10)
            assert not customer.is_alive(), f"{customer.name} did not stop"
            if customer.crashed is not None:
                raise AssertionError(f"{customer.name} crashed") from customer.crashed
        return LoadResult(
            calls=sorted(
                (call for customer in self.customers for call in customer.calls),
                key=lambda call: call.started,
            ),
            event_ids=sorted(self.capacities),
            customer_ids=[c.participant.user_id for c in self.customers],
            capacities=dict(self.capacities),
        )

    def snapshot(self) -> list[Call]:
        """Calls so far (lists are appended to by their own thread only; copying is safe)."""
        return [call for customer in self.customers for call in list(customer.calls)]

    def wait_for_lock_successes(self, count: int, *, since: float, timeout: float) -> None:
        """Block until ``count`` bookings or reactivations started after ``since`` succeeded."""

        def enough() -> bool:
            return (
                sum(
                    1
                    for call in self.snapshot()
                    if call.op in LOCK_TAKING and call.ok and call.started >= since
                )
                >= count
            )

        wait_until(enough, timeout=timeout, interval=0.05, what=f"{count} lock-taking successes")


@dataclass
class Population:
    """Who books what in one fault run."""

    participants: list[Participant]
    capacities: dict[int, int]
    probe_event: int


SMALL_EVENTS = 3
SMALL_CAPACITY = 3
SMALL_CUSTOMERS = 9  # three per seat: the small events are contended and often full
PROBE_CUSTOMERS = 6  # on one roomy event: a steady stream of bookings that need the lock
PROBE_CAPACITY = 500


def populate(client: FlaskClient) -> Population:
    """An organizer's small events and probe event, and the customers who book them."""
    organizer = factories.organizer(client)
    capacities: dict[int, int] = {}
    small = []
    for _ in range(SMALL_EVENTS):
        event = factories.create_event(client, organizer["token"], capacity=SMALL_CAPACITY)
        small.append(event["id"])
        capacities[event["id"]] = SMALL_CAPACITY
    probe = factories.create_event(client, organizer["token"], capacity=PROBE_CAPACITY)["id"]
    capacities[probe] = PROBE_CAPACITY
    participants = []
    for n in range(SMALL_CUSTOMERS + PROBE_CUSTOMERS):
        signed_in = factories.customer(client)
        events = tuple(small) if n < SMALL_CUSTOMERS else (probe,)
        participants.append(Participant(signed_in["user"]["id"], signed_in["token"], events))
    return Population(participants, capacities, probe)


def load_driver(cluster: FaultCluster, population: Population) -> LoadDriver:
    return LoadDriver(cluster.urls, population.participants, population.capacities)


def warm_up(driver: LoadDriver, successes: int = 20) -> None:
    """Wait until the load is really flowing before injecting anything."""
    driver.wait_for_lock_successes(successes, since=0.0, timeout=30)


@contextmanager
def running_load(driver: LoadDriver) -> Iterator[LoadDriver]:
    """Start the driver; always stop its threads, even when the test body fails."""
    driver.start()
    try:
        yield driver
    finally:
        driver.stop_event.set()


# --- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrozenHolder:
    """A worker stopped (SIGSTOP) while it held an event's lock."""

    instance: int
    pid: int
    lock_value: bytes
    frozen_at: float
    lease_left: float  # seconds of lease left when it was caught


def freeze_lock_holder(
    cluster: FaultCluster, event_id: int, *, timeout: float = 30.0
) -> tuple[FrozenHolder, int]:
    """Catch a worker inside its critical section for ``event_id`` and SIGSTOP it.

    The lock's value names the holder (``<instance>:<pid>:<random>``, EventLocks._holder_id).
    Poll it, stop that pid, then confirm that the same value is still there once the process
    can no longer act: only then was it stopped while holding. Otherwise it released in the
    meantime: let it go on and try again. Returns the holder and how many attempts it took.
    """
    control = cluster.control()
    key = lock_key(event_id)
    names = {instance.name: n for n, instance in enumerate(cluster.instances)}
    attempts = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = control.get(key)
        if value is None:
            continue
        name, pid_text, _ = value.decode().split(":", 2)
        index = names.get(name)
        pid = int(pid_text)
        # Only ever signal a worker of our own instances.
        if index is None or pid not in cluster.instances[index].worker_pids():
            continue
        attempts += 1
        os.kill(pid, signal.SIGSTOP)
        # SIGSTOP lands asynchronously: the process may act until the kernel stops it.
        wait_until(
            lambda pid=pid: _stopped(pid), timeout=5, interval=0.005, what=f"pid {pid} to stop"
        )
        frozen_at = time.monotonic()
        # A release already on the wire still reaches Redis, later still on a loaded machine:
        # give it time to land.
        time.sleep(0.2)
        if control.get(key) == value:
            lease_left = max(0.0, control.pttl(key) / 1000 + (time.monotonic() - frozen_at))
            return FrozenHolder(index, pid, value, frozen_at, lease_left), attempts
        os.kill(pid, signal.SIGCONT)
    raise AssertionError(
        f"no worker was caught holding the lock of event {event_id} in {timeout}s "
        f"({attempts} attempts)"
    )


def _stopped(pid: int) -> bool:
    """The process is stopped by a signal (state T in /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def terminate_app_backends(database_url: str) -> int:
    """pg_terminate_backend every connection the service has to the test database."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(
        database_url, poolclass=NullPool, connect_args={"application_name": "fault-injector"}
    )
    try:
        with engine.begin() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                        "FROM pg_stat_activity "
                        "WHERE datname = current_database() "
                        "AND application_name = 'booking-service' AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


# --- checks ---------------------------------------------------------------------------------


@dataclass
class Stall:
    """Requests to this instance during this window may wait: one of its workers was frozen."""

    instance: int
    start: float
    end: float


@dataclass
class FaultReport:
    fault: str
    requests: int = 0
    successes: int = 0
    business: int = 0  # 409/422 business outcomes
    unavailable: int = 0  # 503
    server_errors: int = 0  # 500 (and any other 5xx but 503)
    unknown: int = 0  # no answer, or 503 outcome_unknown: excluded from the row checks
    stalled: int = 0  # slow only because a frozen worker held them
    max_latency: float = 0.0
    recovery: float | None = None
    recovery_bound: float = 0.0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self) -> list[str]:
        recovery = "never" if self.recovery is None else f"{self.recovery:.2f}s"
        return [
            self.fault,
            str(self.requests),
            str(self.successes),
            str(self.business),
            str(self.unavailable),
            str(self.server_errors),
            str(self.unknown),
            f"{self.max_latency:.2f}s",
            str(len(self.violations)),
            f"{recovery} (≤{self.recovery_bound:g}s)",
        ]

    def failure_message(self) -> str:
        shown = "\n  ".join(self.violations[:25])
        more = f"\n  ... and {len(self.violations) - 25} more" if len(self.violations) > 25 else ""
        return f"{self.fault}: {len(self.violations)} violation(s):\n  {shown}{more}"


FAULT_REPORTS: list[FaultReport] = []
"""Every fault evaluated in this pytest session, in order: the table printed at the end."""

TABLE_HEADER = [
    "fault",
    "requests",
    "2xx",
    "409/422",
    "503",
    "500",
    "unknown",
    "max latency",
    "violations",
    "recovery",
]


def format_table(reports: Iterable[FaultReport]) -> str:
    rows = [TABLE_HEADER] + [report.row() for report in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def _check_answer(call: Call, stalls: Sequence[Stall]) -> tuple[list[str], bool]:
    """Problems with one call's answer and timing; second value: excused as stalled."""
    problems: list[str] = []
    where = f"{call.op} event={call.event_id} booking={call.booking_id} instance={call.instance}"
    stalled = any(
        stall.instance == call.instance and call.started < stall.end and call.ended > stall.start
        for stall in stalls
    )
    if call.elapsed > MAX_REQUEST_SECONDS:
        if not stalled:
            problems.append(f"{where}: took {call.elapsed:.2f}s > {MAX_REQUEST_SECONDS:g}s")
    else:
        stalled = False  # within the bound anyway: nothing to excuse
    if call.status is None or call.ok or (call.op == "resync" and call.status == 200):
        return problems, stalled
    if call.status >= 500 and call.status != 503:
        return problems, stalled  # counted as a server error on its own
    if not call.content_type.startswith("application/problem+json") or not call.code:
        problems.append(f"{where}: {call.status} without a problem+json code")
    elif call.status == 503:
        if call.code not in UNAVAILABLE_CODES:
            problems.append(f"{where}: 503 with unexpected code {call.code!r}")
        if not (call.retry_after or "").isdigit():
            problems.append(f"{where}: 503 {call.code} without a Retry-After")
    elif call.code not in BUSINESS_CODES[call.op].get(call.status, set()):
        problems.append(f"{where}: unexpected {call.status} {call.code}")
    return problems, stalled


def _load_rows(
    event_ids: list[int], customer_ids: list[int]
) -> tuple[dict[int, dict[str, Any]], dict[int, list[str]]]:
    with db.transaction() as session:
        bookings = {
            row["id"]: dict(row)
            for row in session.execute(
                text(
                    "SELECT id, event_id, customer_id, status FROM bookings "
                    "WHERE event_id = ANY(:events)"
                ),
                {"events": event_ids},
            ).mappings()
        }
        history: dict[int, list[str]] = defaultdict(list)
        for entity_id, action in session.execute(
            text(
                "SELECT entity_id, action FROM history_entries "
                "WHERE entity_type = 'booking' AND user_id = ANY(:customers) ORDER BY id"
            ),
            {"customers": customer_ids},
        ):
            history[entity_id].append(action)
    return bookings, history


def _is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    remaining = iter(haystack)
    return all(item in remaining for item in needle)


def check_rows(result: LoadResult) -> tuple[list[str], list[str]]:
    """Compare the rows with what clients were told. Returns (violations, notes)."""
    violations = [f"drift: event {d.event_id}: {d.problem}" for d in find_drift()]
    bookings, history = _load_rows(result.event_ids, result.customer_ids)
    notes: list[str] = []

    confirmed: dict[int, list[str]] = defaultdict(list)  # booking -> actions clients saw succeed
    unknown_on_booking: Counter[int] = Counter()
    unknown_creates: Counter[tuple[int, int]] = Counter()  # (customer, event) -> unknown books
    for call in result.calls:  # in start order; each customer's calls are sequential
        if call.op == "resync":
            continue
        if call.outcome_unknown:
            if call.op == "book":
                unknown_creates[(call.customer, call.event_id)] += 1
            else:
                unknown_on_booking[call.booking_id] += 1  # type: ignore[index]
        elif call.ok:
            confirmed[call.booking_id].append(ACTION_BY_OP[call.op])  # type: ignore[index]

    # Rows whose creation no client was told about: each needs a booking request that got no
    # answer (a connection cut by the fault) for the same customer and event.
    untold_creates: Counter[tuple[int, int]] = Counter(
        (row["customer_id"], row["event_id"])
        for booking_id, row in bookings.items()
        if booking_id not in confirmed
    )
    for booking_id, actions in confirmed.items():
        row = bookings.get(booking_id)
        if row is None:
            violations.append(f"booking {booking_id}: clients got {actions} but there is no row")
            continue
        seen = history.get(booking_id, [])
        allowed_extra = unknown_on_booking[booking_id]
        if seen[:1] == ["create"] and "create" not in actions:
            # Created by a request whose answer was lost; the client found it by resync and
            # went on with it. Accounted for with the other untold creations below.
            untold_creates[(row["customer_id"], row["event_id"])] += 1
            allowed_extra += 1
        extra = len(seen) - len(actions)
        if not _is_subsequence(actions, seen) or extra > allowed_extra:
            violations.append(
                f"booking {booking_id}: clients saw {actions} succeed, history has {seen} "
                f"({unknown_on_booking[booking_id]} unknown outcomes)"
            )
        if seen and row["status"] != ("cancelled" if seen[-1] == "cancel" else "active"):
            violations.append(f"booking {booking_id}: status {row['status']} after {seen}")

    for pair, rows in untold_creates.items():
        if rows > unknown_creates[pair]:
            violations.append(
                f"customer {pair[0]} event {pair[1]}: {rows} booking row(s) no client was told "
                f"about, {unknown_creates[pair]} booking request(s) without an answer"
            )
        elif rows:
            notes.append(f"{rows} booking(s) created by requests whose answer was lost")
    return violations, notes


def evaluate(
    fault: str,
    result: LoadResult,
    *,
    recovered_from: float,
    recovery_bound: float,
    recovery_events: Iterable[int] | None = None,
    stalls: Sequence[Stall] = (),
) -> FaultReport:
    """Build the fault's report (counts, violations, recovery) and add it to the table."""
    report = FaultReport(fault, recovery_bound=recovery_bound)
    FAULT_REPORTS.append(report)
    for call in result.calls:
        report.requests += 1
        if call.outcome_unknown:
            report.unknown += 1
        elif call.ok:
            report.successes += 1
        elif call.status == 503:
            report.unavailable += 1
        elif call.status >= 500:
            report.server_errors += 1
        elif call.status in (409, 422):
            report.business += 1
        problems, stalled = _check_answer(call, stalls)
        report.violations.extend(problems)
        if stalled:
            report.stalled += 1
        else:
            report.max_latency = max(report.max_latency, call.elapsed)
    row_violations, notes = check_rows(result)
    report.violations.extend(row_violations)
    report.notes.extend(notes)

    targets = set(recovery_events) if recovery_events is not None else None
    recovered = [
        call.ended - recovered_from
        for call in result.calls
        if call.op in LOCK_TAKING
        and call.ok
        and call.started >= recovered_from
        and (targets is None or call.event_id in targets)
    ]
    report.recovery = min(recovered) if recovered else None
    return report


def assert_clean(report: FaultReport, cluster: FaultCluster | None = None) -> None:
    """The fault's pass criteria: no 500, no violation, recovered within its bound."""
    logs = f"\n{cluster.logs()}" if cluster is not None and report.server_errors else ""
    assert report.server_errors == 0, f"{report.fault}: {report.server_errors} 5xx answers{logs}"
    assert not report.violations, report.failure_message()
    assert report.recovery is not None, f"{report.fault}: bookings never succeeded again"
    assert report.recovery <= report.recovery_bound, (
        f"{report.fault}: bookings succeeded again only after {report.recovery:.2f}s "
        f"(bound {report.recovery_bound}s)"
    )


class FaultTablePlugin:
    """Prints the fault table in pytest's terminal summary (registered by the fault tests)."""

    name = "booking-fault-table"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not FAULT_REPORTS:
            return
        terminalreporter.section("fault injection")
        terminalreporter.write_line(format_table(FAULT_REPORTS))
        for report in FAULT_REPORTS:
            if report.stalled:
                terminalreporter.write_line(
                    f"{report.fault}: {report.stalled} request(s) waited on a frozen worker "
                    "(excused from the latency bound)"
                )
            for note in report.notes:
                terminalreporter.write_line(f"{report.fault}: {note}")


def register_table(config: Any) -> None:
    """Register the table printer once per session (from any fault test module)."""
    if not config.pluginmanager.has_plugin(FaultTablePlugin.name):
        config.pluginmanager.register(FaultTablePlugin(), FaultTablePlugin.name)
