"""Bookings: book (several seats), list, change seats, cancel, reactivate, delete."""

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
    BookingCreateSchema,
    BookingQuerySchema,
    BookingSchema,
    BookingSeatsSchema,
)
from booking_service.errors import (
    SEAT_CHANGE_UNAVAILABLE,
    AlreadyActive,
    AlreadyBooked,
    BookingNotFound,
    EventEnded,
    EventFull,
    EventNotFound,
    EventStarted,
    NotActive,
    QueueRequired,
    SaleNotStarted,
    TooManySeats,
    ValidationFailed,
)
from booking_service.models import Booking, Role
from booking_service.services import Page, PageRequest, bookings

blp = Blueprint("bookings", __name__, url_prefix="/api/v1/bookings", description="Bookings")


@blp.route("")
class Bookings(MethodView):
    @auth_required(blp)
    @blp.arguments(BookingQuerySchema, location="query")
    @blp.response(200, BookingSchema(many=True))
    @paginated(blp)
    @problems(blp, ValidationFailed)
    def get(self, query: dict[str, Any], page: PageRequest) -> Page[Booking]:
        """List bookings: a customer's own, or those of an organizer's events; newest first"""
        return bookings.list_bookings(
            viewer=current_user(),
            status=query.get("status"),
            event_id=query.get("event_id"),
            page=page,
        )

    @auth_required(blp, Role.CUSTOMER, event_version_of="event_id", queue=True)
    @limit_per_user(blp, setting="RATE_LIMIT_BOOKINGS", scope="bookings")
    @idempotent(blp)
    @blp.arguments(BookingCreateSchema)
    @blp.response(201, BookingSchema, headers={"Location": {"schema": {"type": "string"}}})
    @problems(
        blp,
        ValidationFailed,
        EventNotFound,
        EventFull,
        TooManySeats,
        AlreadyBooked,
        EventStarted,
        EventEnded,
        SaleNotStarted,
        QueueRequired,
        *SEAT_CHANGE_UNAVAILABLE,
    )
    def post(self, body: dict[str, Any]) -> tuple[Booking, dict[str, str]]:
        """Book seats on an event, all or none (customers); never overbooks"""
        admitted = current_admission()
        booking = bookings.create_booking(
            customer=current_user(),
            event_id=body["event_id"],
            seats=body["seats"],
            event_version=admitted.event_version if admitted else None,
            queue=admitted.queue if admitted else None,
        )
        location = url_for("bookings.BookingDetail", booking_id=booking.id)
        return booking, {"Location": location}


@blp.route(f"/<{ID}:booking_id>")
class BookingDetail(MethodView):
    @auth_required(blp)
    @blp.response(200, BookingSchema)
    @problems(blp, BookingNotFound)
    def get(self, booking_id: int) -> Booking:
        """Return a booking to its customer or its event's organizer"""
        return bookings.get_booking(viewer=current_user(), booking_id=booking_id)

    @auth_required(blp, Role.CUSTOMER)
    @limit_per_user(blp, setting="RATE_LIMIT_BOOKINGS", scope="bookings")
    @blp.arguments(BookingSeatsSchema)
    @blp.response(200, BookingSchema)
    @problems(
        blp,
        ValidationFailed,
        BookingNotFound,
        NotActive,
        EventFull,
        TooManySeats,
        EventStarted,
        EventEnded,
        SaleNotStarted,
        QueueRequired,
        *SEAT_CHANGE_UNAVAILABLE,
    )
    def patch(self, body: dict[str, Any], booking_id: int) -> Booking:
        """Change a booking's seats (its customer): fewer frees them, more takes them"""
        return bookings.change_seats(
            customer=current_user(), booking_id=booking_id, seats=body["seats"]
        )

    @auth_required(blp, Role.CUSTOMER)
    @blp.response(204)
    @blp.doc(
        description=(
            "An active booking is deleted on the terms of a cancel: before its event starts, "
            "freeing the seat; after the start it is 422 `event_started` (or `event_ended`) "
            "and nothing changes. A cancelled booking holds no seat and may be deleted at any "
            "time."
        )
    )
    @problems(blp, BookingNotFound, EventStarted, EventEnded, *SEAT_CHANGE_UNAVAILABLE)
    def delete(self, booking_id: int) -> None:
        """Delete a booking (its customer), freeing the seat if it was active"""
        bookings.delete_booking(customer=current_user(), booking_id=booking_id)


@blp.route(f"/<{ID}:booking_id>/cancel")
class CancelBooking(MethodView):
    @auth_required(blp, Role.CUSTOMER)
    @blp.response(200, BookingSchema)
    @problems(blp, BookingNotFound, NotActive, EventStarted, EventEnded, *SEAT_CHANGE_UNAVAILABLE)
    def post(self, booking_id: int) -> Booking:
        """Cancel a booking before its event starts (its customer), freeing the seat"""
        return bookings.cancel_booking(customer=current_user(), booking_id=booking_id)


@blp.route(f"/<{ID}:booking_id>/reactivate")
class ReactivateBooking(MethodView):
    @auth_required(blp, Role.CUSTOMER)
    @limit_per_user(blp, setting="RATE_LIMIT_BOOKINGS", scope="bookings")
    @idempotent(blp)
    @blp.response(200, BookingSchema)
    @problems(
        blp,
        BookingNotFound,
        AlreadyActive,
        EventFull,
        TooManySeats,
        AlreadyBooked,
        EventStarted,
        EventEnded,
        SaleNotStarted,
        QueueRequired,
        *SEAT_CHANGE_UNAVAILABLE,
    )
    def post(self, booking_id: int) -> Booking:
        """Re-activate a cancelled booking if a seat is free (its customer)"""
        return bookings.reactivate_booking(customer=current_user(), booking_id=booking_id)
