"""Refusals before the lock: what a request can be told from an event snapshot, with no lock
and no write (docs/architecture.md, "The seat ledger").

These only ever refuse early; the seat ledger (services/ledger.py) decides every seat change
on the locked event row, whatever a snapshot said.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking_service.database import db
from booking_service.errors import (
    EventEnded,
    EventFull,
    EventNotFound,
    EventStarted,
    TooManySeats,
)
from booking_service.models import Booking, Event, Hold, WaitlistEntry
from booking_service.services import MAX_ID


def now() -> datetime:
    return datetime.now(UTC)


def own_event_id(
    model: type[Booking | Hold | WaitlistEntry],
    row_id: int,
    customer_id: int,
    *,
    session: Session | None = None,
) -> int | None:
    """The event of the customer's booking, hold or waitlist entry, read before its event
    is locked (in ``session``, or a read of its own); None when missing or someone else's."""
    if row_id > MAX_ID:
        return None
    query = select(model.event_id).where(model.id == row_id, model.customer_id == customer_id)
    if session is not None:
        return session.scalar(query)
    with db.read_transaction() as reading:
        return reading.scalar(query)


def require_event(event: Event | None, event_id: int) -> Event:
    """The event, or EventNotFound when there is none."""
    if event is None:
        raise EventNotFound(f"Event {event_id} does not exist.")
    return event


def refuse_unless_open(event: Event, at: datetime) -> None:
    """Raise why the event's seats can no longer change (ended, started), if so."""
    if event.is_past_at(at):
        raise EventEnded(f"Event {event.id} has ended.")
    if event.has_started_at(at):
        raise EventStarted(f"Event {event.id} has started; bookings are closed.")


def refuse_too_many(event: Event, seats: int) -> None:
    if seats > event.max_seats_per_booking:
        raise TooManySeats(
            f"Event {event.id} allows at most {event.max_seats_per_booking} seats per booking.",
            max_seats_per_booking=event.max_seats_per_booking,
        )


def refuse_unless_bookable(event: Event, at: datetime, seats: int) -> None:
    """Raise why a newcomer cannot take ``seats`` on the event now, if so."""
    refuse_unless_open(event, at)
    refuse_unless_seats_free(event, seats)


def refuse_unless_seats_free(event: Event, seats: int) -> None:
    """Raise why ``seats`` are not there for a newcomer on an open event, if so.

    All or nothing: fewer free seats than asked is ``event_full``, with the seats that are
    free; so is any seat while someone waits on the waitlist (freed seats are theirs first).
    """
    refuse_too_many(event, seats)
    if event.waitlist_length > 0:
        raise EventFull(
            f"Event {event.id} has a waitlist: seats that come free are offered there first. "
            "Join it with POST /api/v1/events/{id}/waitlist.",
            available_slots=0,
            waitlist_length=event.waitlist_length,
        )
    if event.available_slots < seats:
        raise EventFull(
            f"Event {event.id} has {max(event.available_slots, 0)} free seat(s); "
            f"{seats} asked for.",
            available_slots=max(event.available_slots, 0),
        )
