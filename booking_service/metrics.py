"""Every Prometheus metric the service exports, defined once (names: DESIGN §5).

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` is set by ``gunicorn.conf.py`` before this module
is imported, so each worker writes its samples to files that ``/metrics`` aggregates.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

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


# An upcoming event this full raises the capacity alert (deploy/alerts.yml).
NEAR_CAPACITY_RATIO = 0.9


@dataclass(frozen=True)
class UpcomingCapacity:
    """Seats of the events that have not started yet, read when /metrics is scraped."""

    events: int
    near_capacity: int
    max_utilisation: float
    booked_seats: int
    capacity_seats: int


@dataclass(frozen=True)
class ScrapeState:
    """What the scrape-time gauges report; ``capacity`` is None when PostgreSQL is down."""

    dependencies: dict[str, bool]
    capacity: UpcomingCapacity | None
    # (event id, lock requests in the live view's window), hottest first, a handful at most.
    hot_events: tuple[tuple[int, float], ...] = ()


class ScrapeTimeCollector:
    """Gauges computed once per scrape from PostgreSQL and Redis, not kept by any worker."""

    # Nothing per worker to sum here. The capacity and hot-event gauges are the same on every
    # instance (aggregate them with max, not sum); readiness is this instance's own view.

    def __init__(self, read: Callable[[], ScrapeState]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        ready = GaugeMetricFamily(
            "booking_ready", "1 when PostgreSQL and Redis both answer (what /readyz reports)."
        )
        ready.add_metric([], float(all(state.dependencies.values())))
        yield ready
        dependency = GaugeMetricFamily(
            "booking_dependency_up",
            "1 when the dependency answered a probe during this scrape.",
            labels=["dependency"],
        )
        for name, up in sorted(state.dependencies.items()):
            dependency.add_metric([name], float(up))
        yield dependency
        if state.capacity is not None:
            capacity = state.capacity
            for name, help_text, value in (
                ("booking_upcoming_events", "Events that have not started yet.", capacity.events),
                (
                    "booking_upcoming_events_near_capacity",
                    f"Upcoming events at least {NEAR_CAPACITY_RATIO:.0%} booked.",
                    capacity.near_capacity,
                ),
                (
                    "booking_upcoming_event_max_utilisation_ratio",
                    "Booked share of the fullest upcoming event (0 to 1).",
                    capacity.max_utilisation,
                ),
                (
                    "booking_upcoming_booked_seats",
                    "Seats booked across all upcoming events.",
                    capacity.booked_seats,
                ),
                (
                    "booking_upcoming_capacity_seats",
                    "Seats offered across all upcoming events.",
                    capacity.capacity_seats,
                ),
            ):
                yield GaugeMetricFamily(name, help_text, value=float(value))
        hot = GaugeMetricFamily(
            "booking_hot_event_lock_requests",
            "Lock requests (acquired + timed out) in the live lock view's window, for its few "
            "hottest events only; per-event detail stays in the live lock view.",
            labels=["event_id"],
        )
        for event_id, requests in state.hot_events:
            hot.add_metric([str(event_id)], requests)
        yield hot


def _registry() -> CollectorRegistry:
    """The registry to read: every worker's files when multiprocess is on, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def render_latest(*extra: ScrapeTimeCollector) -> tuple[bytes, str]:
    """Return the exposition text, summed across every worker when multiprocess is on."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_registry())
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def collect_families() -> list[Metric]:
    """Return the metric families, summed across every worker when multiprocess is on."""
    return list(_registry().collect())


@lru_cache(maxsize=256)
def endpoint_label(rule: str) -> str:
    """Return the route rule without converters, e.g. ``/api/v1/events/<event_id>``."""
    # Labels come from route rules, so their number is bounded by the routes, never by ids.
    return re.sub(r"<(?:[^<>]*:)?(\w+)>", r"<\1>", rule)


def instrument(app: Flask) -> None:
    """Count and time every request by endpoint (the route, never the raw path)."""
    if not recording:
        return  # no hooks at all: METRICS_ENABLED=false must cost nothing per request

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("request_started", None)
        if started is not None:
            endpoint = endpoint_label(request.url_rule.rule) if request.url_rule else "unmatched"
            status = str(response.status_code)
            http_request_duration_seconds.labels(request.method, endpoint, status).observe(
                time.perf_counter() - started
            )
            http_requests_total.labels(request.method, endpoint, status).inc()
        return response
