"""Every request counted and timed by method, endpoint and status (the metrics themselves are
defined in ``booking_service.metrics``)."""

from __future__ import annotations

import re
import time
from functools import lru_cache

from flask import Flask, Response, g, request

from booking_service import metrics

# Request methods kept as label values; any other (a client may send any token) is "other".
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The method as a label value: a standard one as itself, anything else as ``other``."""
    # Every label value is a series for the life of the process; invented methods must not
    # each add one (200 made-up methods grew /metrics by 3,400 lines).
    return method if method in STANDARD_METHODS else "other"


@lru_cache(maxsize=256)
def endpoint_label(rule: str) -> str:
    """Return the route rule without converters, e.g. ``/api/v1/events/<event_id>``."""
    # Labels come from route rules, so their number is bounded by the routes, never by ids.
    return re.sub(r"<(?:[^<>]*:)?(\w+)>", r"<\1>", rule)


def instrument(app: Flask) -> None:
    """Count and time every request by method, endpoint and status.

    Every label value is bounded by the code, never by what a client sends: the method is a
    standard one or ``other``, the endpoint the matched route rule (never the raw path) or
    ``unmatched``, the status one the app answered with.
    """
    if not metrics.recording:
        return  # no hooks at all: METRICS_ENABLED=false must cost nothing per request

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("request_started", None)
        if started is not None:
            method = method_label(request.method)
            endpoint = endpoint_label(request.url_rule.rule) if request.url_rule else "unmatched"
            status = str(response.status_code)
            metrics.http_request_duration_seconds.labels(method, endpoint, status).observe(
                time.perf_counter() - started
            )
            metrics.http_requests_total.labels(method, endpoint, status).inc()
        return response
