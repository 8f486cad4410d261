"""The benchmark database: schema, seeding with plain SQL, invariant checks, activity sampling.

Seeding goes straight to PostgreSQL (generate_series): registering 200,000 customers over HTTP
would take longer than the benchmark and measure the password hash, not the booking path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, text

from booking_service.services.invariants import COUNT_DRIFT_SQL, DUPLICATE_ACTIVE_SQL
from booking_service.services.sessions import hash_token
from harness.database import recreate_schema
from harness.sampling import PeriodicSampler

ORGANIZER_ID = 1
# Customer number k (1-based) has user id CUSTOMER_ID_OFFSET + k and token token_for(k).
CUSTOMER_ID_OFFSET = 1_000
TOKEN_PREFIX = "bench-"
# Start far enough ahead that no run outlives it, end an hour later.
EVENT_START = "now() + interval '30 days'"


def token_for(customer: int) -> str:
    """The raw bearer token of customer number ``customer``; wrk's Lua builds the same.

    Shaped like the service's own tokens, ``<user id>.<secret>``: the user id up front lets a
    booking count its rate limit in the round trip of its session lookup.
    """
    return f"{CUSTOMER_ID_OFFSET + customer}.{TOKEN_PREFIX}{customer}"


def connect(url: str) -> Engine:
    return create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)


def recreate(url: str) -> Engine:
    """Create the database if needed and give it an empty schema at the latest migration."""
    recreate_schema(url)
    return connect(url)


def seed_accounts(engine: Engine, customers: int) -> None:
    """One organizer and ``customers`` customers, each with a live token (hash stored only)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO users (id, username, username_key, email, password_hash, role,
                                   organization_name, business_address)
                VALUES (:id, 'bench-organizer', 'bench-organizer', 'organizer@bench.invalid',
                        '!', 'organizer', 'Bench Org', '1 Bench Street')
                """
            ),
            {"id": ORGANIZER_ID},
        )
        # ASCII lower-case names: each is its own username key (booking_service.usernames).
        # '!' is no valid werkzeug hash: these accounts can use their token but never log in.
        connection.execute(
            text(
                """
                INSERT INTO users (id, username, username_key, email, password_hash, role)
                SELECT :offset + k, 'bench-customer-' || k, 'bench-customer-' || k,
                       'c' || k || '@bench.invalid', '!', 'customer'
                  FROM generate_series(1, :customers) AS k
                """
            ),
            {"offset": CUSTOMER_ID_OFFSET, "customers": customers},
        )
        connection.execute(
            text(
                """
                INSERT INTO api_tokens (user_id, token_hash, expires_at)
                SELECT :offset + k,
                       encode(sha256(convert_to((:offset + k) || '.' || :prefix || k, 'UTF8')),
                              'hex'),
                       now() + interval '7 days'
                  FROM generate_series(1, :customers) AS k
                """
            ),
            {"offset": CUSTOMER_ID_OFFSET, "customers": customers, "prefix": TOKEN_PREFIX},
        )
        # Explicit ids bypassed the sequence; anything the service creates comes after them.
        connection.execute(
            text("SELECT setval(pg_get_serial_sequence('users', 'id'), max(id)) FROM users")
        )
        # The SQL hash must be the service's hash, or every request would be a 401.
        stored = connection.scalar(
            text("SELECT token_hash FROM api_tokens WHERE user_id = :id"),
            {"id": CUSTOMER_ID_OFFSET + 1},
        )
    if stored != hash_token(token_for(1)):
        raise RuntimeError("seeded token hash differs from sessions.hash_token")
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("ANALYZE users; ANALYZE api_tokens")
        )


def create_events(engine: Engine, *, count: int, capacity: int, title: str) -> list[int]:
    """Insert ``count`` upcoming events; return their ids in order (contiguous)."""
    with engine.begin() as connection:
        ids = connection.scalars(
            text(
                f"""
                INSERT INTO events (organizer_id, title, description, start_time, end_time,
                                    capacity)
                SELECT :organizer, :title || ' ' || n, 'benchmark event',
                       {EVENT_START}, {EVENT_START} + interval '1 hour', :capacity
                  FROM generate_series(1, :count) AS n
                RETURNING id
                """
            ),
            {"organizer": ORGANIZER_ID, "title": title, "capacity": capacity, "count": count},
        ).all()
    ids = sorted(ids)
    if ids != list(range(ids[0], ids[0] + count)):
        raise RuntimeError("event ids are not contiguous; the Lua scripts assume they are")
    return ids


def fill_event(engine: Engine, event_id: int, *, first_customer: int) -> None:
    """Book every seat of an event directly (a sold-out event without running S1)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                WITH seats AS (
                    UPDATE events SET booked_count = capacity WHERE id = :event
                    RETURNING capacity
                )
                INSERT INTO bookings (event_id, customer_id, status)
                SELECT :event, :offset + k, 'active'
                  FROM seats, generate_series(:first, :first + seats.capacity - 1) AS k
                """
            ),
            {"event": event_id, "offset": CUSTOMER_ID_OFFSET, "first": first_customer},
        )


def empty_bookings(engine: Engine) -> None:
    """Remove every booking, hold, waitlist entry and their history; every seat is free."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE bookings, holds, waitlist_entries, history_entries"))
        connection.execute(
            text(
                "UPDATE events SET booked_count = 0, held_count = 0, waitlist_length = 0 "
                "WHERE booked_count <> 0 OR held_count <> 0 OR waitlist_length <> 0"
            )
        )
    analyze(engine)


def seed_growth(engine: Engine, *, rows: int, hot_rows: int, hot_event: int) -> float:
    """Bulk-load ``rows`` bookings (``hot_rows`` on ``hot_event``) plus their history rows.

    Every 10th booking is cancelled, so the partial unique index and the active counters are
    exercised like in a real database. Returns the seconds it took.
    """
    started = time.monotonic()
    per_event = 1_000
    other_events = max(1, (rows - hot_rows) // per_event)
    others = create_events(engine, count=other_events, capacity=per_event, title="S5 filler")
    with engine.begin() as connection:
        # Hot event: customers 1..hot_rows; fillers: customers 1..per_event on each event.
        connection.execute(
            text(
                """
                INSERT INTO bookings (event_id, customer_id, status, created_at, updated_at)
                SELECT :hot, :offset + k,
                       CASE WHEN k % 10 = 0 THEN 'cancelled' ELSE 'active' END,
                       now() - interval '1 day' + k * interval '1 ms', now()
                  FROM generate_series(1, :hot_rows) AS k
                """
            ),
            {"hot": hot_event, "offset": CUSTOMER_ID_OFFSET, "hot_rows": hot_rows},
        )
        connection.execute(
            text(
                """
                INSERT INTO bookings (event_id, customer_id, status, created_at, updated_at)
                SELECT e, :offset + k,
                       CASE WHEN k % 10 = 0 THEN 'cancelled' ELSE 'active' END,
                       now() - interval '1 day' + k * interval '1 ms', now()
                  FROM generate_series(:first_event, :last_event) AS e,
                       generate_series(1, :per_event) AS k
                """
            ),
            {
                "offset": CUSTOMER_ID_OFFSET,
                "first_event": others[0],
                "last_event": others[-1],
                "per_event": per_event,
            },
        )
        connection.execute(
            text(
                """
                INSERT INTO history_entries (user_id, action, entity_type, entity_id, details,
                                             created_at)
                SELECT customer_id, 'create', 'booking', id,
                       jsonb_build_object('event_id', event_id), created_at
                  FROM bookings
                """
            )
        )
        connection.execute(
            text(
                """
                UPDATE events e SET booked_count = a.active
                  FROM (SELECT event_id, count(*) AS active FROM bookings
                         WHERE status = 'active' GROUP BY event_id) a
                 WHERE e.id = a.event_id
                """
            )
        )
    # What autovacuum would do shortly after such a load; without it the planner guesses.
    analyze(engine)
    return time.monotonic() - started


def analyze(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


def count_bookings(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT count(*) FROM bookings")))


@dataclass(frozen=True)
class BookingRate:
    """Bookings committed on some events, and the rate between the first and the last."""

    bookings: int
    span_seconds: float

    @property
    def per_second(self) -> float | None:
        if self.bookings < 2 or self.span_seconds <= 0:
            return None
        # n bookings bound n - 1 intervals.
        return (self.bookings - 1) / self.span_seconds


def clock(engine: Engine) -> datetime:
    """The database's clock: booking timestamps come from it, so measurement windows do too."""
    with engine.connect() as connection:
        return connection.scalar(text("SELECT clock_timestamp()"))


def booking_rate(
    engine: Engine, first_event: int, last_event: int, *, since: datetime
) -> BookingRate:
    """Rate measured by the database's own clock: independent of the load generator.

    Only bookings created at or after ``since`` count (S5's hot event has seeded ones).
    """
    with engine.connect() as connection:
        row = connection.execute(
            text(
                """
                SELECT count(*),
                       coalesce(extract(epoch FROM max(created_at) - min(created_at)), 0)
                  FROM bookings
                 WHERE event_id BETWEEN :first AND :last AND created_at >= :since
                """
            ),
            {"first": first_event, "last": last_event, "since": since},
        ).one()
    return BookingRate(int(row[0]), float(row[1]))


def event_counts(engine: Engine, event_id: int) -> dict[str, int]:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                """
                SELECT e.capacity, e.booked_count,
                       (SELECT count(*) FROM bookings b
                         WHERE b.event_id = e.id AND b.status = 'active')
                  FROM events e WHERE e.id = :id
                """
            ),
            {"id": event_id},
        ).one()
    return {"capacity": row[0], "booked_count": row[1], "active_rows": row[2]}


def booked(engine: Engine, event_id: int) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(
                text("SELECT booked_count FROM events WHERE id = :id"), {"id": event_id}
            )
        )


def check_invariants(engine: Engine) -> list[str]:
    """Every broken invariant, as text: the reconciliation queries of the service itself."""
    problems: list[str] = []
    with engine.connect() as connection:
        for row in connection.execute(COUNT_DRIFT_SQL):
            problems.append(
                f"event {row.id}: booked_count={row.booked_count} held_count={row.held_count} "
                f"waitlist_length={row.waitlist_length}, rows {row.booked_rows} booked "
                f"{row.held_rows} held {row.waiting_rows} waiting, capacity {row.capacity}"
            )
        for event_id, customer_id, rows in connection.execute(DUPLICATE_ACTIVE_SQL):
            problems.append(f"event {event_id}: customer {customer_id} has {rows} active rows")
        over = connection.scalar(
            text("SELECT count(*) FROM events WHERE booked_count + held_count > capacity")
        )
        if over:
            problems.append(f"{over} events have more seats booked and held than capacity")
    return problems


# The service's sessions on this database: open, busy (checked out: active or idle in
# transaction) and waiting on a row lock; and every client session on the whole server.
ACTIVITY_SQL = text(
    """
    SELECT count(*) FILTER (WHERE service),
           count(*) FILTER (WHERE service AND state <> 'idle'),
           count(*) FILTER (WHERE service AND wait_event_type = 'Lock'),
           count(*) FILTER (WHERE backend_type = 'client backend')
      FROM (SELECT *, datname = current_database()
                      AND application_name = 'booking-service' AS service
              FROM pg_stat_activity) activity
    """
)
NAMES = ("db_connections", "db_busy", "db_lock_waiting", "server_sessions", "redis_blocked")


class ActivitySampler(PeriodicSampler):
    """Samples, every ``interval`` seconds while running, where requests wait.

    PostgreSQL: the service's connections that are open, busy and waiting on a row lock, and
    the client sessions of the whole server. Redis: clients blocked in BLPOP, i.e. requests
    queued for an event lock without holding any database connection.
    """

    def __init__(self, engine: Engine, redis_url: str, interval: float = 0.1) -> None:
        super().__init__(interval)
        self.engine = engine
        self.redis_url = redis_url
        self.samples: list[tuple[int, ...]] = []

    @contextmanager
    def connected(self) -> Iterator[Callable[[], None]]:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=1)
        with self.engine.connect() as connection:

            def take() -> None:
                database = connection.execute(ACTIVITY_SQL).one()
                connection.rollback()  # fresh snapshot of pg_stat_activity next time
                blocked = client.info("clients").get("blocked_clients", 0)
                self.samples.append((*(int(n) for n in database), int(blocked)))

            yield take

    def peak(self, name: str) -> int:
        return max((sample[NAMES.index(name)] for sample in self.samples), default=0)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        out: dict[str, Any] = {"samples": len(self.samples)}
        for index, name in enumerate(NAMES):
            values = [sample[index] for sample in self.samples]
            out[f"{name}_mean"] = round(sum(values) / len(values), 2)
            out[f"{name}_max"] = max(values)
        return out
