"""Every Prometheus metric the service exports, defined once (names: DESIGN §5).

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` is set by ``gunicorn.conf.py`` before this module
is imported, so each worker writes its samples to files that ``/metrics`` aggregates.
"""

from __future__ import annotations

import os
import time

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
    "HTTP request latency by method and endpoint.",
    ["method", "endpoint"],
    buckets=REQUEST_BUCKETS,
)

for outcome in ("acquired", "timeout", "error"):
    lock_acquisitions_total.labels(outcome=outcome)
for result in (
    "created",
    "event_full",
    "already_booked",
    "rejected",
    "lock_timeout",
    "unavailable",
):
    bookings_total.labels(result=result)


def render_latest() -> tuple[bytes, str]:
    """Return the exposition text, summed across every worker when multiprocess is on."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def instrument(app: Flask) -> None:
    """Count and time every request by endpoint (the route, never the raw path)."""

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("request_started", None)
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule else "unmatched"
            http_request_duration_seconds.labels(request.method, endpoint).observe(
                time.perf_counter() - started
            )
            http_requests_total.labels(request.method, endpoint, str(response.status_code)).inc()
        return response
