"""Holds: seats kept for a few minutes while the customer pays, then confirmed or released."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters

from booking_service.api.bookings import LOCK_ERRORS, WRITE_ERRORS
from booking_service.api.common import (
    ID,
    Blueprint,
    auth_required,
    current_user,
    page_items,
    problems,
)
from booking_service.api.idempotency import idempotent
from booking_service.api.limits import limit_per_user
from booking_service.api.schemas import (
    BookingSchema,
    HoldCreateSchema,
    HoldQuerySchema,
    HoldSchema,
)
from booking_service.errors import (
    EventEnded,
    EventFull,
    EventNotFound,
    EventStarted,
    HoldExists,
    HoldExpired,
    HoldLimitReached,
    HoldNotFound,
    HoldNotHeld,
    TooManySeats,
    ValidationFailed,
)
from booking_service.models import Booking, Hold, Role
from booking_service.services import holds

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
    @auth_required(blp, Role.CUSTOMER)
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
        *LOCK_ERRORS,
        *WRITE_ERRORS,
    )
    def post(self, body: dict[str, Any], event_id: int) -> tuple[Hold, dict[str, str]]:
        """Hold seats on an event, all or none, until the hold expires (customers)"""
        hold = holds.create_hold(customer=current_user(), event_id=event_id, seats=body["seats"])
        return hold, {"Location": url_for("holds.HoldDetail", hold_id=hold.id)}


@blp.route("/holds")
class Holds(MethodView):
    @auth_required(blp, Role.CUSTOMER)
    @blp.arguments(HoldQuerySchema, location="query")
    @blp.response(200, HoldSchema(many=True))
    @blp.paginate()
    @problems(blp, ValidationFailed)
    def get(self, query: dict[str, Any], pagination_parameters: PaginationParameters) -> list[Hold]:
        """List my holds, newest first; filter by status"""
        page = holds.list_holds(
            customer=current_user(),
            status=query.get("status"),
            page=pagination_parameters.page,
            page_size=pagination_parameters.page_size,
        )
        return page_items(page, pagination_parameters)


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
    @problems(blp, HoldNotFound, HoldNotHeld, EventNotFound, *LOCK_ERRORS, *WRITE_ERRORS)
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
        *LOCK_ERRORS,
        *WRITE_ERRORS,
    )
    def post(self, hold_id: int) -> tuple[Booking, dict[str, str]]:
        """Book a hold's seats, into my active booking on the event if I have one"""
        booking = holds.confirm_hold(customer=current_user(), hold_id=hold_id)
        return booking, {"Location": url_for("bookings.BookingDetail", booking_id=booking.id)}
