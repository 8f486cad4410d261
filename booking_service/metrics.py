"""Every Prometheus metric the service records, defined once (names: docs/architecture.md).

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` is set by ``gunicorn.conf.py`` before this module
is imported, so each worker writes its samples to files that ``/metrics`` aggregates.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Lock holds are sub-millisecond to a few ms; waits run up to the configured lock wait.
LOCK_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

lock_wait_seconds = Histogram(
    "booking_lock_wait_seconds",
    "Time spent waiting for a per-event lock, whatever the outcome.",
    buckets=LOCK_BUCKETS,
)
lock_hold_seconds = Histogram(
    "booking_lock_hold_seconds",
    "Time a per-event lock was held, from acquisition to release.",
    buckets=LOCK_BUCKETS,
)
seat_batch_size = Histogram(
    "booking_seat_batch_size",
    "Bookings of one event taken under one lock hold and committed together (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
lock_acquisitions_total = Counter(
    "booking_lock_acquisitions",
    "Attempts to take a per-event lock, by outcome (acquired, timeout, error).",
    ["outcome"],
)
lock_lost_total = Counter(
    "booking_lock_lost",
    "Locks whose lease had expired or been taken over before their holder released them.",
)
lock_waiters = Gauge(
    "booking_lock_waiters",
    "Requests currently waiting for a per-event lock.",
    multiprocess_mode="livesum",
)
bookings_total = Counter(
    "bookings",
    "Booking attempts by result.",
    ["result"],
)
booking_request_seconds = Histogram(
    "booking_request_seconds",
    "Wall time of booking requests (POST /bookings), lock wait included.",
    buckets=REQUEST_BUCKETS,
)
db_pool_connections = Gauge(
    "booking_db_pool_connections",
    "This process's database pool: connections in use, idle, and threads waiting for one.",
    ["state"],
    # One series per worker process (a pid label): a pool is per process, and one worker
    # starved of connections must not hide in a sum.
    multiprocess_mode="liveall",
)
db_unavailable_total = Counter(
    "booking_db_unavailable",
    "Requests answered 503 db_unavailable, by cause: connect_refused (no new connection: "
    "server down or out of connections), pool_timeout (every pooled connection busy), "
    "server_gone (a connection died in use), statement_timeout, schema_outdated.",
    ["cause"],
)
holds_total = Counter(
    "booking_holds",
    "Holds by outcome: created (waitlist offers too), confirmed, released, expired.",
    ["outcome"],
)
waitlist_offers_total = Counter(
    "booking_waitlist_offers",
    "Seats offered to waitlist entries (each offer is a hold for the customer).",
)
waitlist_conversions_total = Counter(
    "booking_waitlist_conversions",
    "Waitlist offers confirmed into bookings.",
)
seat_freed_to_offer_seconds = Histogram(
    "booking_seat_freed_to_offer_seconds",
    "From seats coming free (a cancel, a released or expired hold, more capacity) to their "
    "offer to the waitlist.",
    buckets=REQUEST_BUCKETS,
)
webhook_deliveries_total = Counter(
    "booking_webhook_deliveries",
    "Webhook delivery attempts by result: success, gone (410: the endpoint is disabled), "
    "http_error (any other non-2xx, redirects included), timeout, connection_error, "
    "refused_target (the URL's host resolved to an address webhooks are not sent to).",
    ["result"],
)
webhook_delivery_seconds = Histogram(
    "booking_webhook_delivery_seconds",
    "Time of one webhook delivery attempt, from resolving the host to the answer.",
    buckets=REQUEST_BUCKETS,
)
http_requests_total = Counter(
    "http_requests",
    "HTTP requests by method, endpoint and status.",
    ["method", "endpoint", "status"],
)
http_request_duration_seconds = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by method, endpoint and status.",
    ["method", "endpoint", "status"],
    buckets=REQUEST_BUCKETS,
)

LOCK_OUTCOMES = ("acquired", "timeout", "error")
POOL_STATES = ("in_use", "idle", "waiting")
HOLD_OUTCOMES = ("created", "confirmed", "released", "expired")
DB_UNAVAILABLE_CAUSES = (
    "connect_refused",
    "pool_timeout",
    "server_gone",
    "statement_timeout",
    "schema_outdated",
)
BOOKING_RESULTS = (
    "created",
    "event_full",
    "already_booked",
    "rejected",
    "lock_timeout",
    "unavailable",
)
# Every label value exported from the start, so rates exist before the first occurrence.
for outcome in LOCK_OUTCOMES:
    lock_acquisitions_total.labels(outcome=outcome)
for result in BOOKING_RESULTS:
    bookings_total.labels(result=result)
for cause in DB_UNAVAILABLE_CAUSES:
    db_unavailable_total.labels(cause=cause)
for state in POOL_STATES:
    db_pool_connections.labels(state=state)
for outcome in HOLD_OUTCOMES:
    holds_total.labels(outcome=outcome)


class _Disabled:
    """Stands in for every recorder when METRICS_ENABLED is false: each call does nothing."""

    def labels(self, *args: object, **kwargs: object) -> _Disabled:
        return self

    def inc(self, amount: float = 1) -> None:
        """Record nothing."""

    def dec(self, amount: float = 1) -> None:
        """Record nothing."""

    def observe(self, amount: float) -> None:
        """Record nothing."""

    def set(self, value: float) -> None:
        """Record nothing."""


# Callers look recorders up as ``metrics.<name>`` at call time, so rebinding these names
# switches recording off everywhere without a branch on the hot path.
_RECORDERS: dict[str, object] = {
    name: globals()[name]
    for name in (
        "lock_wait_seconds",
        "lock_hold_seconds",
        "seat_batch_size",
        "lock_acquisitions_total",
        "lock_lost_total",
        "lock_waiters",
        "bookings_total",
        "booking_request_seconds",
        "db_pool_connections",
        "db_unavailable_total",
        "holds_total",
        "waitlist_offers_total",
        "waitlist_conversions_total",
        "seat_freed_to_offer_seconds",
        "http_requests_total",
        "http_request_duration_seconds",
    )
}
recording = True


def configure(*, enabled: bool) -> None:
    """Turn recording on or off for this process (METRICS_ENABLED)."""
    global recording
    recording = enabled
    for name, recorder in _RECORDERS.items():
        globals()[name] = recorder if enabled else _Disabled()


def _registry() -> CollectorRegistry:
    """The registry to read: every worker's files when multiprocess is on, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def render_latest(*extra: Collector) -> tuple[bytes, str]:
    """Return the exposition text, summed across every worker when multiprocess is on."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_registry())
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def collect_families() -> list[Metric]:
    """Return the metric families, summed across every worker when multiprocess is on."""
    return list(_registry().collect())
