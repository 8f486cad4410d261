"""Events and an event's bookings."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from booking_service.api.access import BEARER, auth_required, bearer_token, current_user
from booking_service.api.blueprint import ID, Blueprint
from booking_service.api.pagination import paginated
from booking_service.api.problems import problems
from booking_service.api.schemas import (
    BookingSchema,
    EventBookingQuerySchema,
    EventCreateSchema,
    EventQuerySchema,
    EventSchema,
    EventUpdateSchema,
)
from booking_service.errors import (
    CapacityBelowBookings,
    DbUnavailable,
    EventNotFound,
    Forbidden,
    LockTimeout,
    LockUnavailable,
    OutcomeUnknown,
    Unauthorized,
    ValidationFailed,
)
from booking_service.models import Booking, Event, Role
from booking_service.services import Page, PageRequest, accounts, events

blp = Blueprint("events", __name__, url_prefix="/api/v1/events", description="Events")


@blp.route("")
class Events(MethodView):
    # Authentication is optional: only mine=true needs the token, so a client should send it.
    @blp.doc(security=[{}, *BEARER])
    @blp.arguments(EventQuerySchema, location="query")
    @blp.response(200, EventSchema(many=True))
    @paginated(blp)
    @problems(blp, ValidationFailed, Unauthorized, Forbidden, DbUnavailable)
    def get(self, query: dict[str, Any], page: PageRequest) -> Page[Event]:
        """List events; filter by when=upcoming|ongoing|past, or mine=true for organizers"""
        organizer_id = None
        if query["mine"]:
            # Optional authentication: only this filter needs to know who is asking.
            user = accounts.authenticate(token=bearer_token())
            if user.role != Role.ORGANIZER.value:
                raise Forbidden("mine=true is for organizers.")
            organizer_id = user.id
        return events.list_events(
            when=query.get("when"),
            organizer_id=organizer_id,
            page=page,
        )

    @auth_required(blp, Role.ORGANIZER)
    @blp.arguments(EventCreateSchema)
    @blp.response(201, EventSchema)
    @problems(blp, ValidationFailed, OutcomeUnknown)
    def post(self, body: dict[str, Any]) -> Event:
        """Publish an event (organizers)"""
        return events.create_event(organizer=current_user(), **body)


@blp.route(f"/<{ID}:event_id>")
class EventDetail(MethodView):
    @blp.response(200, EventSchema)
    @problems(blp, EventNotFound, DbUnavailable)
    def get(self, event_id: int) -> Event:
        """Return one event with its seat counts"""
        return events.get_event(event_id=event_id)

    @auth_required(blp, Role.ORGANIZER)
    @blp.arguments(EventUpdateSchema)
    @blp.response(200, EventSchema)
    @problems(
        blp,
        EventNotFound,
        CapacityBelowBookings,
        ValidationFailed,
        LockTimeout,
        LockUnavailable,
        OutcomeUnknown,
        OutcomeUnknown,
    )
    def patch(self, body: dict[str, Any], event_id: int) -> Event:
        """Change an event (its organizer); capacity never below the seats booked"""
        return events.update_event(actor=current_user(), event_id=event_id, changes=body)

    @auth_required(blp, Role.ORGANIZER)
    @blp.response(204)
    @problems(blp, EventNotFound, OutcomeUnknown)
    def delete(self, event_id: int) -> None:
        """Delete an event and its bookings (its organizer); history keeps a record"""
        events.delete_event(actor=current_user(), event_id=event_id)


@blp.route(f"/<{ID}:event_id>/bookings")
class EventBookings(MethodView):
    @auth_required(blp, Role.ORGANIZER, Role.ADMIN)
    @blp.arguments(EventBookingQuerySchema, location="query")
    @blp.response(200, BookingSchema(many=True))
    @paginated(blp)
    @problems(blp, ValidationFailed, EventNotFound)
    def get(self, query: dict[str, Any], event_id: int, page: PageRequest) -> Page[Booking]:
        """List the bookings of an event (its organizer), newest first"""
        return events.list_event_bookings(
            actor=current_user(),
            event_id=event_id,
            status=query.get("status"),
            page=page,
        )
