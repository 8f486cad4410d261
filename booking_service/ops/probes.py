"""Health probes and the Prometheus scrape, outside the versioned API."""

from __future__ import annotations

import logging

from flask import Response, abort, current_app
from flask.views import MethodView
from sqlalchemy import text

from booking_service import metrics
from booking_service.api.access import bearer_token, token_equals
from booking_service.api.blueprint import Blueprint
from booking_service.api.problems import problems
from booking_service.database import db
from booking_service.errors import Unauthorized
from booking_service.ops import lock_table
from booking_service.ops.scrape_gauges import (
    QueueGauge,
    ScrapeState,
    ScrapeTimeCollector,
    UpcomingCapacity,
    hot_queues,
    upcoming_capacity,
)
from booking_service.redis_clients import redis_client
from booking_service.services.relay import OutboxState, outbox_state
from booking_service.web.problems import problem_response

blp = Blueprint("ops", __name__, description="Health and metrics")
log = logging.getLogger(__name__)

# Top of the live lock view exported as gauges: a fixed, small number of series per scrape.
HOT_EVENTS_EXPORTED = 5


def _check(name: str) -> str | None:
    """Return None when the dependency answers, else why not."""
    try:
        if name == "postgresql":
            with db.read_transaction() as session:
                session.execute(text("SELECT 1"))
        else:
            redis_client.get().ping()
    except Exception as error:  # any failure means "not ready"; the reason is reported
        return f"{type(error).__name__}"
    return None


def _scrape_state() -> ScrapeState:
    """Probe both dependencies for the scrape-time gauges; the capacity query doubles as one."""
    try:
        upcoming: UpcomingCapacity | None = upcoming_capacity()
    except Exception:  # PostgreSQL down: report it as a gauge, keep the rest of the scrape
        upcoming = None
    redis_up = _check("redis") is None
    return ScrapeState(
        dependencies={"postgresql": upcoming is not None, "redis": redis_up},
        capacity=upcoming,
        hot_events=_hot_events() if redis_up else (),
        queues=_hot_queues() if redis_up and upcoming is not None else (),
        outbox=_outbox() if upcoming is not None else None,
    )


def _hot_queues() -> tuple[QueueGauge, ...]:
    try:
        return hot_queues()
    except Exception:  # the scrape must still report everything else
        log.warning("waiting rooms not exported", exc_info=True)
        return ()


def _hot_events() -> tuple[tuple[int, float], ...]:
    """The hottest events of the live lock view with their lock requests in its window."""
    try:
        table = lock_table.lock_table(limit=HOT_EVENTS_EXPORTED)
    except Exception:  # the scrape must still report everything else
        log.warning("hot events not exported", exc_info=True)
        return ()
    return tuple((row.event_id, float(row.requests + row.timeouts)) for row in table.events)


@blp.route("/livez")
class Livez(MethodView):
    @blp.response(200)
    def get(self) -> dict[str, str]:
        """Report that the process is up (checks no dependency)"""
        return {"status": "ok"}


@blp.route("/readyz")
class Readyz(MethodView):
    @blp.response(200)
    @blp.alt_response(503, description="PostgreSQL or Redis unreachable; the body names which.")
    def get(self) -> dict[str, object] | Response:
        """Report whether PostgreSQL and Redis are reachable"""
        failures = {
            name: reason for name in ("postgresql", "redis") if (reason := _check(name)) is not None
        }
        if failures:
            return problem_response(
                status=503,
                code="not_ready",
                title="Not ready",
                detail="Unreachable: " + ", ".join(sorted(failures)),
                errors={name: [reason] for name, reason in failures.items()},
            )
        return {"status": "ok", "checks": {"postgresql": "ok", "redis": "ok"}}


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(
        responses={"200": {"description": "Prometheus text exposition format"}},
        # Open unless METRICS_TOKEN is set: either alternative may apply.
        security=[{}, {"bearerAuth": []}],
    )
    @problems(blp, Unauthorized)
    def get(self) -> Response:
        """Prometheus metrics summed over every worker (bearer METRICS_TOKEN if set)"""
        if not metrics.recording:
            abort(404)
        expected = current_app.config["METRICS_TOKEN"]
        if expected and not token_equals(bearer_token(), expected):
            raise Unauthorized("Send 'Authorization: Bearer <METRICS_TOKEN>'.")
        body, content_type = metrics.render_latest(ScrapeTimeCollector(_scrape_state))
        return Response(body, content_type=content_type)


def _outbox() -> OutboxState | None:
    """The webhook outbox's lag and backlog (services/relay.py)."""
    try:
        return outbox_state()
    except Exception:  # the scrape must still report everything else
        log.warning("webhook outbox not exported", exc_info=True)
        return None
