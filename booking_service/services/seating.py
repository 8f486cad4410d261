"""What every flow that takes or frees seats shares: the rules a request must pass, and the
steps on a locked event row (docs/architecture.md §11).

Seats are taken by bookings (services/seats.py, bookings.py) and holds (holds.py); freed by
cancels, deletes, fewer seats, released or expired holds and raised capacity. Every change
locks the event row first (``lock_event_row``), in the same transaction as the counters and the
rows it changes, so they all run strictly one after another, whatever the Redis lock does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from booking_service import metrics
from booking_service.errors import (
    EventEnded,
    EventFull,
    EventNotFound,
    EventStarted,
    TooManySeats,
)
from booking_service.extensions import db
from booking_service.locking import locks
from booking_service.models import (
    Booking,
    BookingStatus,
    Event,
    Hold,
    HoldStatus,
    WaitlistEntry,
    WaitlistStatus,
)
from booking_service.services import MAX_ID, history


class SeatingSettings:
    """How long holds and waitlist offers last (HOLD_TTL_SECONDS, WAITLIST_OFFER_TTL_SECONDS)."""

    hold_ttl = timedelta(seconds=600)
    offer_ttl = timedelta(seconds=1800)


settings = SeatingSettings()


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


def existing(event: Event | None, event_id: int) -> Event:
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
    """Raise why a newcomer cannot take ``seats`` on the event now, if so.

    All or nothing: fewer free seats than asked is ``event_full``, with the seats that are
    free; so is any seat while someone waits on the waitlist (freed seats are theirs first).
    """
    refuse_unless_open(event, at)
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


def lock_event_row(session: Session, event_id: int) -> Event:
    """The event, its row locked until the transaction ends (EventNotFound if it is gone)."""
    return existing(session.get(Event, event_id, with_for_update=True), event_id)


@contextmanager
def event_locked(event_id: int) -> Iterator[tuple[Session, Event, datetime]]:
    """The event's lock, then a transaction with the event row locked: where a hold or a
    waitlist change runs. Yields the session, the event and the change's time."""
    with locks.hold(event_id), db.transaction() as session:
        at = now()
        yield session, lock_event_row(session, event_id), at


def reclaim_lapsed_holds(session: Session, event: Event, at: datetime) -> int:
    """Expire the event's holds past their expiry (row locked by the caller); return their
    seats. An expired waitlist offer ends its entry too; the caller offers the seats on."""
    lapsed = session.scalars(
        select(Hold)
        .where(
            Hold.event_id == event.id,
            Hold.status == HoldStatus.HELD.value,
            Hold.expires_at <= at,
        )
        .order_by(Hold.id)
        .with_for_update()
    ).all()
    for hold in lapsed:
        end_hold(
            session, event, hold, HoldStatus.EXPIRED.value,
            offer_ends_as=WaitlistStatus.EXPIRED.value,
        )  # fmt: skip
    event.lapsed_hold_seats = 0  # counted out of held_count just now
    return sum(hold.seats for hold in lapsed)


# The history action of a hold that ends without a booking, by the status it ends in.
_HOLD_END_ACTIONS = {HoldStatus.RELEASED.value: "release", HoldStatus.EXPIRED.value: "expire"}


def end_hold(
    session: Session, event: Event, hold: Hold, status: str, *, offer_ends_as: str | None = None
) -> None:
    """End a live hold without a booking (released or expired): its seats leave
    ``held_count``, with its history entry and metric; the caller offers the seats on.

    ``offer_ends_as``: for a waitlist offer, the status its entry ends in, if still offered.
    """
    hold.status = status
    event.held_count -= hold.seats
    if offer_ends_as is not None and hold.waitlist_entry_id is not None:
        entry = session.get(WaitlistEntry, hold.waitlist_entry_id)
        if entry is not None and entry.status == WaitlistStatus.OFFERED.value:
            entry.status = offer_ends_as
    action = _HOLD_END_ACTIONS[status]
    record(session, hold.customer_id, action, "hold", hold.id, event.id, hold.seats)
    metrics.holds_total.labels(outcome=status).inc()


def record(
    session: Session,
    user_id: int,
    action: str,
    entity_type: str,
    entity_id: int,
    event_id: int,
    seats: int,
    **more: Any,
) -> None:
    """The history entry of a seat change (booking, hold or waitlist entry)."""
    history.record(
        session,
        user_id=user_id,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        details=history.seat_details(event_id=event_id, seats=seats, **more),
    )


def booked_seats(session: Session, customer_id: int, event_id: int) -> int:
    """Seats of the customer's active booking on the event (0 without one)."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(Booking.seats), 0)).where(
                Booking.event_id == event_id,
                Booking.customer_id == customer_id,
                Booking.status == BookingStatus.ACTIVE.value,
            )
        )
        or 0
    )


def violates(error: IntegrityError, index: str) -> bool:
    """True when the error is this unique index's (a conflict the caller can name)."""
    diag = getattr(error.orig, "diag", None)
    return getattr(diag, "constraint_name", None) == index


def hold_expiry(event: Event, at: datetime) -> datetime:
    ttl = timedelta(seconds=event.hold_ttl_seconds) if event.hold_ttl_seconds else None
    return at + (ttl or settings.hold_ttl)
