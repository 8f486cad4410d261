"""Holds: seats kept for a few minutes while the customer pays, then confirmed or released."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView

from booking_service.api.access import auth_required, current_admission, current_user
from booking_service.api.blueprint import ID, Blueprint
from booking_service.api.idempotency import idempotent
from booking_service.api.limits import limit_per_user
from booking_service.api.pagination import paginated
from booking_service.api.problems import problems
from booking_service.api.schemas import (
    BookingSchema,
    HoldCreateSchema,
    HoldQuerySchema,
    HoldSchema,
)
from booking_service.errors import (
    SEAT_CHANGE_UNAVAILABLE,
    EventEnded,
    EventFull,
    EventNotFound,
    EventStarted,
    HoldExists,
    HoldExpired,
    HoldLimitReached,
    HoldNotFound,
    HoldNotHeld,
    QueueRequired,
    SaleNotStarted,
    TooManySeats,
    ValidationFailed,
)
from booking_service.models import Booking, Hold, Role
from booking_service.services import Page, PageRequest, holds

blp = Blueprint(
    "holds",
    __name__,
    url_prefix="/api/v1",
    description=(
        "Holds: seats kept for the customer until `expires_at` (HOLD_TTL_SECONDS, or the "
        "event's `hold_ttl_seconds`), counted against capacity at once. Confirm to book them; "
        "release to give them back; past `expires_at` they go back by themselves."
    ),
)


@blp.route(f"/events/<{ID}:event_id>/holds")
class EventHolds(MethodView):
    @auth_required(blp, Role.CUSTOMER, event_in_path="event_id", queue=True)
    @limit_per_user(blp, setting="RATE_LIMIT_BOOKINGS", scope="bookings")
    @idempotent(blp)
    @blp.arguments(HoldCreateSchema)
    @blp.response(201, HoldSchema, headers={"Location": {"schema": {"type": "string"}}})
    @problems(
        blp,
        ValidationFailed,
        EventNotFound,
        EventFull,
        TooManySeats,
        HoldExists,
        HoldLimitReached,
        EventStarted,
        EventEnded,
        SaleNotStarted,
        QueueRequired,
        *SEAT_CHANGE_UNAVAILABLE,
    )
    def post(self, body: dict[str, Any], event_id: int) -> tuple[Hold, dict[str, str]]:
        """Hold seats on an event, all or none, until the hold expires (customers)"""
        admitted = current_admission()
        hold = holds.create_hold(
            customer=current_user(),
            event_id=event_id,
            seats=body["seats"],
            event_version=admitted.event_version if admitted else None,
            queue=admitted.queue if admitted else None,
        )
        return hold, {"Location": url_for("holds.HoldDetail", hold_id=hold.id)}


@blp.route("/holds")
class Holds(MethodView):
    @auth_required(blp, Role.CUSTOMER)
    @blp.arguments(HoldQuerySchema, location="query")
    @blp.response(200, HoldSchema(many=True))
    @paginated(blp)
    @problems(blp, ValidationFailed)
    def get(self, query: dict[str, Any], page: PageRequest) -> Page[Hold]:
        """List my holds, newest first; filter by status"""
        return holds.list_holds(
            customer=current_user(),
            status=query.get("status"),
            page=page,
        )


@blp.route(f"/holds/<{ID}:hold_id>")
class HoldDetail(MethodView):
    @auth_required(blp, Role.CUSTOMER)
    @blp.response(200, HoldSchema)
    @problems(blp, HoldNotFound)
    def get(self, hold_id: int) -> Hold:
        """Return one of my holds"""
        return holds.get_hold(customer=current_user(), hold_id=hold_id)

    @auth_required(blp, Role.CUSTOMER)
    @blp.response(204)
    @problems(blp, HoldNotFound, HoldNotHeld, EventNotFound, *SEAT_CHANGE_UNAVAILABLE)
    def delete(self, hold_id: int) -> None:
        """Release a hold: its seats go back at once (a waitlist offer passes them on)"""
        holds.release_hold(customer=current_user(), hold_id=hold_id)


@blp.route(f"/holds/<{ID}:hold_id>/confirm")
class ConfirmHold(MethodView):
    @auth_required(blp, Role.CUSTOMER)
    @limit_per_user(blp, setting="RATE_LIMIT_BOOKINGS", scope="bookings")
    @idempotent(blp)
    @blp.response(201, BookingSchema, headers={"Location": {"schema": {"type": "string"}}})
    @problems(
        blp,
        HoldNotFound,
        HoldExpired,
        HoldNotHeld,
        TooManySeats,
        EventNotFound,
        EventStarted,
        EventEnded,
        *SEAT_CHANGE_UNAVAILABLE,
    )
    def post(self, hold_id: int) -> tuple[Booking, dict[str, str]]:
        """Book a hold's seats, into my active booking on the event if I have one"""
        booking = holds.confirm_hold(customer=current_user(), hold_id=hold_id)
        return booking, {"Location": url_for("bookings.BookingDetail", booking_id=booking.id)}
