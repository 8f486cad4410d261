"""Operator views (admin role or OPS_TOKEN): the live lock table, dashboard numbers, the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import marshmallow as ma
from flask import Blueprint as FlaskBlueprint
from flask import Response, send_file
from flask.views import MethodView

from booking_service.api.access import ops_access_required
from booking_service.api.blueprint import Blueprint
from booking_service.api.problems import problems
from booking_service.api.schemas import timestamp
from booking_service.errors import DbUnavailable, LockUnavailable, ValidationFailed
from booking_service.ops.dashboard import DashboardStats, dashboard_stats
from booking_service.ops.lock_table import LockTable, lock_table

blp = Blueprint(
    "ops_views",
    __name__,
    url_prefix="/api/v1/ops",
    description=(
        "Operator views. Send `Authorization: Bearer <token>` with an admin's token or the "
        "configured OPS_TOKEN; anything else is 401 (no or unknown token) or 403 (not admin)."
    ),
)

DASHBOARD_HTML = Path(__file__).resolve().parent.parent / "static" / "ops" / "index.html"

# The page loads nothing from elsewhere and sends its data requests only to this service.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


# --- schemas ----------------------------------------------------------------------------


class LockQuerySchema(ma.Schema):
    limit = ma.fields.Integer(
        load_default=50,
        validate=ma.validate.Range(min=1, max=500),
        metadata={"description": "At most this many events, hottest first."},
    )


class LockRowSchema(ma.Schema):
    event_id = ma.fields.Integer()
    title = ma.fields.String(
        allow_none=True,
        metadata={"description": "Null if the event is gone or PostgreSQL is down."},
    )
    seats_held = ma.fields.Integer(
        allow_none=True,
        metadata={"description": "Seats in live holds (waitlist offers included); null as title."},
    )
    waitlist_length = ma.fields.Integer(
        allow_none=True, metadata={"description": "Entries waiting for an offer; null as title."}
    )
    held = ma.fields.Boolean(metadata={"description": "The lock is held right now."})
    holder = ma.fields.String(
        allow_none=True, metadata={"description": "Holder id: '<instance>:<pid>:<random>'."}
    )
    holder_instance = ma.fields.String(allow_none=True)
    holder_pid = ma.fields.Integer(allow_none=True)
    held_for_ms = ma.fields.Integer(
        allow_none=True, metadata={"description": "Lease length minus lease left."}
    )
    lease_left_ms = ma.fields.Integer(
        allow_none=True, metadata={"description": "Milliseconds until the lease expires (PTTL)."}
    )
    waiters = ma.fields.Integer(metadata={"description": "Requests queueing for the lock now."})
    acquired = ma.fields.Integer(metadata={"description": "Acquisitions in the window."})
    requests = ma.fields.Integer(
        metadata={
            "description": "Requests served under those acquisitions: bookings of one process "
            "queued together share one hold (group commit), so this can exceed `acquired`."
        }
    )
    timeouts = ma.fields.Integer(metadata={"description": "Waits that timed out (503)."})
    lost = ma.fields.Integer(metadata={"description": "Leases lost before release."})
    avg_hold_ms = ma.fields.Float(allow_none=True)
    last_activity = timestamp(allow_none=True)
    since = timestamp(
        allow_none=True, metadata={"description": "Start of the counters (first activity)."}
    )


class LockTableSchema(ma.Schema):
    generated_at = timestamp()
    window_seconds = ma.fields.Integer(
        metadata={"description": "Counters reset after this long without activity."}
    )
    lock_expire_seconds = ma.fields.Integer()
    titles_available = ma.fields.Boolean(
        metadata={"description": "False when PostgreSQL did not answer (titles are null)."}
    )
    events = ma.fields.List(ma.fields.Nested(LockRowSchema))


class HistogramSummarySchema(ma.Schema):
    count = ma.fields.Integer()
    sum = ma.fields.Float(metadata={"description": "Seconds."})
    p50 = ma.fields.Float(allow_none=True, metadata={"description": "Seconds, from buckets."})
    p95 = ma.fields.Float(allow_none=True, metadata={"description": "Seconds, from buckets."})
    p99 = ma.fields.Float(allow_none=True, metadata={"description": "Seconds, from buckets."})
    buckets = ma.fields.List(
        ma.fields.Tuple((ma.fields.Float(), ma.fields.Integer())),
        metadata={"description": "Finite [upper bound, cumulative count] pairs."},
    )


class CapacityRowSchema(ma.Schema):
    event_id = ma.fields.Integer()
    title = ma.fields.String()
    start_time = timestamp()
    capacity = ma.fields.Integer()
    booked_count = ma.fields.Integer()
    seats_held = ma.fields.Integer(metadata={"description": "Seats in live holds."})
    waitlist_length = ma.fields.Integer()
    utilisation = ma.fields.Float(
        metadata={"description": "(booked_count + seats_held) / capacity."}
    )


class QueueRowSchema(ma.Schema):
    event_id = ma.fields.Integer()
    depth = ma.fields.Integer(metadata={"description": "Customers waiting."})
    admitted_per_minute = ma.fields.Integer(metadata={"description": "In the last minute."})
    active = ma.fields.Integer(metadata={"description": "Admissions not lapsed yet."})
    eta_seconds = ma.fields.Float(
        allow_none=True, metadata={"description": "Until the last entry is admitted."}
    )


class DashboardStatsSchema(ma.Schema):
    generated_at = timestamp()
    instance = ma.fields.String(
        metadata={"description": "INSTANCE_NAME of the instance whose workers these are."}
    )
    metrics_enabled = ma.fields.Boolean()
    lock_wait = ma.fields.Nested(HistogramSummarySchema)
    lock_hold = ma.fields.Nested(HistogramSummarySchema)
    booking_request = ma.fields.Nested(HistogramSummarySchema)
    lock_acquisitions = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Integer(),
        metadata={"description": "Totals by outcome: acquired, timeout, error."},
    )
    lock_lost = ma.fields.Integer()
    lock_waiters = ma.fields.Integer()
    bookings = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Integer(),
        metadata={"description": "bookings_total by result."},
    )
    upcoming = ma.fields.List(
        ma.fields.Nested(CapacityRowSchema),
        metadata={"description": "Upcoming events closest to selling out."},
    )
    queues = ma.fields.List(
        ma.fields.Nested(QueueRowSchema),
        metadata={"description": "The deepest open waiting rooms."},
    )


# --- views ------------------------------------------------------------------------------


@blp.route("/locks")
class Locks(MethodView):
    @ops_access_required(blp)
    @blp.arguments(LockQuerySchema, location="query")
    @blp.response(200, LockTableSchema)
    @problems(blp, ValidationFailed, LockUnavailable)
    def get(self, query: dict[str, Any]) -> LockTable:
        """Show events whose lock is held now or was busy recently, hottest first"""
        return lock_table(limit=query["limit"])


@blp.route("/stats")
class Stats(MethodView):
    @ops_access_required(blp)
    @blp.response(200, DashboardStatsSchema)
    @problems(blp, DbUnavailable)
    def get(self) -> DashboardStats:
        """Return the dashboard's numbers: lock and booking metrics of all workers, capacity"""
        return dashboard_stats()


# The page is a shell without data (its script fetches the views above with a token taken
# from the URL fragment, which browsers never send), so it is served without credentials.
dashboard = FlaskBlueprint("ops_dashboard", __name__)


@dashboard.route("/ops")
def dashboard_page() -> Response:
    """Serve the operator dashboard page."""
    response = send_file(DASHBOARD_HTML, mimetype="text/html", max_age=0)
    response.headers["Content-Security-Policy"] = DASHBOARD_CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response
