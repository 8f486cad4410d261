"""The waitlist: join a sold-out event's queue, be offered seats in order of joining."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView

from booking_service.api.access import auth_required, current_user
from booking_service.api.blueprint import ID, Blueprint
from booking_service.api.idempotency import idempotent
from booking_service.api.limits import limit_per_user
from booking_service.api.pagination import paginated
from booking_service.api.problems import problems
from booking_service.api.schemas import (
    EventWaitlistQuerySchema,
    WaitlistEntrySchema,
    WaitlistJoinSchema,
)
from booking_service.errors import (
    SEAT_CHANGE_UNAVAILABLE,
    AlreadyWaiting,
    EventEnded,
    EventNotFound,
    EventStarted,
    HoldExists,
    SeatsAvailable,
    TooManySeats,
    ValidationFailed,
    WaitlistEntryNotFound,
)
from booking_service.models import Role, WaitlistEntry
from booking_service.services import Page, PageRequest, waitlist

blp = Blueprint(
    "waitlist",
    __name__,
    url_prefix="/api/v1",
    description=(
        "The waitlist of a sold-out event. Seats that come free are offered to entries in "
        "order of joining, first fit: the offer is a hold for WAITLIST_OFFER_TTL_SECONDS "
        "(`offer`), to confirm with POST /api/v1/holds/{hold_id}/confirm. An entry too large "
        "for the free seats keeps its place; once later entries have been served before it "
        "three times, the seats wait for it. While anyone waits, newcomers get no seat."
    ),
)


@blp.route(f"/events/<{ID}:event_id>/waitlist")
class EventWaitlist(MethodView):
    @auth_required(blp, Role.CUSTOMER)
    @limit_per_user(blp, setting="RATE_LIMIT_BOOKINGS", scope="bookings")
    @idempotent(blp)
    @blp.arguments(WaitlistJoinSchema)
    @blp.response(201, WaitlistEntrySchema, headers={"Location": {"schema": {"type": "string"}}})
    @problems(
        blp,
        ValidationFailed,
        EventNotFound,
        SeatsAvailable,
        AlreadyWaiting,
        HoldExists,
        TooManySeats,
        EventStarted,
        EventEnded,
        *SEAT_CHANGE_UNAVAILABLE,
    )
    def post(self, body: dict[str, Any], event_id: int) -> tuple[WaitlistEntry, dict[str, str]]:
        """Join a sold-out event's waitlist for seats (customers)"""
        entry = waitlist.join(customer=current_user(), event_id=event_id, seats=body["seats"])
        return entry, {"Location": url_for("waitlist.WaitlistEntryDetail", entry_id=entry.id)}

    @auth_required(blp, Role.ORGANIZER)
    @blp.arguments(EventWaitlistQuerySchema, location="query")
    @blp.response(200, WaitlistEntrySchema(many=True))
    @paginated(blp)
    @problems(blp, ValidationFailed, EventNotFound)
    def get(self, query: dict[str, Any], event_id: int, page: PageRequest) -> Page[WaitlistEntry]:
        """List an event's waitlist in order of joining (its organizer)"""
        return waitlist.list_for_event(
            actor=current_user(),
            event_id=event_id,
            live_only=query["live"],
            page=page,
        )


@blp.route("/waitlist")
class MyWaitlist(MethodView):
    @auth_required(blp, Role.CUSTOMER)
    @blp.response(200, WaitlistEntrySchema(many=True))
    @paginated(blp)
    def get(self, page: PageRequest) -> Page[WaitlistEntry]:
        """List my waitlist entries, newest first, with their positions and offers"""
        return waitlist.list_own(
            customer=current_user(),
            page=page,
        )


@blp.route(f"/waitlist/<{ID}:entry_id>")
class WaitlistEntryDetail(MethodView):
    @auth_required(blp, Role.CUSTOMER)
    @blp.response(200, WaitlistEntrySchema)
    @problems(blp, WaitlistEntryNotFound)
    def get(self, entry_id: int) -> WaitlistEntry:
        """Return one of my waitlist entries, with its position and offer"""
        return waitlist.get_entry(customer=current_user(), entry_id=entry_id)

    @auth_required(blp, Role.CUSTOMER)
    @blp.response(204)
    @problems(blp, WaitlistEntryNotFound, EventNotFound, *SEAT_CHANGE_UNAVAILABLE)
    def delete(self, entry_id: int) -> None:
        """Leave a waitlist; an offer not yet confirmed is passed on"""
        waitlist.leave(customer=current_user(), entry_id=entry_id)
