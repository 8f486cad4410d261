"""Health probes and Prometheus metrics, outside the versioned API."""

from __future__ import annotations

import hmac

from flask import Response, current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import text

from booking_service import metrics
from booking_service.errors import Unauthorized, problem_response
from booking_service.extensions import db, redis_client

blp = Blueprint("ops", __name__, description="Health and metrics")


def token_matches(expected: str) -> bool:
    """Constant-time comparison of the request's bearer token with ``expected``."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)


def _check(name: str) -> str | None:
    """Return None when the dependency answers, else why not."""
    try:
        if name == "postgresql":
            with db.transaction() as session:
                session.execute(text("SELECT 1"))
        else:
            redis_client.get().ping()
    except Exception as error:  # any failure means "not ready"; the reason is reported
        return f"{type(error).__name__}"
    return None


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
        security=[{"bearerAuth": []}],
    )
    def get(self) -> Response:
        """Prometheus metrics summed over every worker (bearer METRICS_TOKEN if set)"""
        expected = current_app.config["METRICS_TOKEN"]
        if expected and not token_matches(expected):
            raise Unauthorized("Send 'Authorization: Bearer <METRICS_TOKEN>'.")
        body, content_type = metrics.render_latest()
        return Response(body, content_type=content_type)
