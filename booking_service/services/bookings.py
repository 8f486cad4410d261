"""Bookings: the path that must never overbook (docs/architecture.md, "The booking path").

Order on the booking path: cheap rejections without lock or write → event lock (taken before a
database connection is checked out, so queued requests hold no connection) → one short
transaction → release; ``services.seats`` runs the last three, for this process's requests for
the same event together. The conditional seat update and the partial unique index are what make
overbooking and double booking impossible; the lock only keeps the queue in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from booking_service import metrics
from booking_service.errors import (
    AlreadyActive,
    AlreadyBooked,
    BookingNotFound,
    DbUnavailable,
    DomainError,
    EventEnded,
    EventFull,
    EventNotFound,
    EventStarted,
    LockTimeout,
    LockUnavailable,
    NotActive,
)
from booking_service.extensions import db
from booking_service.locking import locks
from booking_service.models import Booking, BookingStatus, Event, Role, User
from booking_service.services import MAX_ID, Page, history, paginate
from booking_service.services.seats import is_one_active_violation, seat_queue
from booking_service.services.snapshots import event_snapshots

ACTIVE = BookingStatus.ACTIVE.value
CANCELLED = BookingStatus.CANCELLED.value

_RESULT_BY_ERROR: dict[type[DomainError], str] = {
    EventFull: "event_full",
    AlreadyBooked: "already_booked",
    LockTimeout: "lock_timeout",
    LockUnavailable: "unavailable",
    DbUnavailable: "unavailable",
}


@contextmanager
def _booking_metrics() -> Iterator[None]:
    """Time a booking attempt and count it by result (bookings_total, booking_request_seconds)."""
    started = time.perf_counter()
    try:
        yield
    except DomainError as error:
        metrics.bookings_total.labels(result=_RESULT_BY_ERROR.get(type(error), "rejected")).inc()
        raise
    else:
        metrics.bookings_total.labels(result="created").inc()
    finally:
        metrics.booking_request_seconds.observe(time.perf_counter() - started)


def _refuse_unless_open(event: Event, now: datetime) -> None:
    """Raise why the event's bookings can no longer change (ended, started), if so."""
    if event.is_past_at(now):
        raise EventEnded(f"Event {event.id} has ended.")
    if event.has_started_at(now):
        raise EventStarted(f"Event {event.id} has started; bookings are closed.")


def _refuse_unless_bookable(event: Event, now: datetime) -> None:
    """Raise why the event cannot take a booking now (ended, started, full), if so."""
    _refuse_unless_open(event, now)
    if event.is_full:
        raise EventFull(f"Event {event.id} is sold out.")


def _existing(event: Event | None, event_id: int) -> Event:
    if event is None:
        raise EventNotFound(f"Event {event_id} does not exist.")
    return event


def create_booking(*, customer: User, event_id: int, event_version: int | None = None) -> Booking:
    """Book one seat on the event for the customer.

    ``event_version``: the event's change counter, if the request already read it
    (services/admission.py); a snapshot may then refuse without a database read.
    """
    with _booking_metrics():
        # Cheap rejections: no lock, no write, and mostly no read either (a snapshot).
        event = _existing(event_snapshots.recent(event_id, version=event_version), event_id)
        _refuse_unless_bookable(event, datetime.now(UTC))
        # Behind the event lock, batched with this process's other requests for the event.
        booking = seat_queue.take(event_id=event_id, customer_id=customer.id)
        if booking is None:
            # Explained after the lock is released, from a fresh read that the requests
            # behind this one then reuse: the reason needs a read, not the lock.
            event = _existing(event_snapshots.fresh(event_id), event_id)
            _refuse_unless_bookable(event, datetime.now(UTC))
            raise EventFull(f"Event {event_id} is sold out.")
        return booking


@contextmanager
def _own_booking_locked(
    customer: User, booking_id: int
) -> Iterator[tuple[Session, Booking, Event]]:
    """Open a transaction with the event row, then the booking row, locked.

    Every path that changes a booking locks event before booking, the order a new booking
    takes them in, so these paths cannot deadlock with each other.
    """
    with db.transaction() as session:
        event_id = _own_booking_event_id(session, customer, booking_id)
        event = session.get(Event, event_id, with_for_update=True)
        booking = session.get(Booking, booking_id, with_for_update=True)
        if event is None or booking is None:  # deleted between the two reads
            raise BookingNotFound(f"Booking {booking_id} does not exist.")
        yield session, booking, event


def _own_booking_event_id(session: Session, customer: User, booking_id: int) -> int:
    event_id = None
    if booking_id <= MAX_ID:
        event_id = session.scalar(
            select(Booking.event_id).where(
                Booking.id == booking_id, Booking.customer_id == customer.id
            )
        )
    if event_id is None:
        raise BookingNotFound(f"Booking {booking_id} does not exist.")
    return event_id


def _record(session: Session, customer: User, action: str, booking: Booking) -> None:
    history.record(
        session,
        user_id=customer.id,
        action=action,
        entity_type="booking",
        entity_id=booking.id,
        details=history.booking_details(event_id=booking.event_id),
    )


def cancel_booking(*, customer: User, booking_id: int) -> Booking:
    """Cancel an active booking before its event starts, freeing the seat (no lock needed)."""
    with _own_booking_locked(customer, booking_id) as (session, booking, event):
        if booking.status != ACTIVE:
            raise NotActive(f"Booking {booking_id} is already cancelled.")
        _refuse_unless_open(event, datetime.now(UTC))
        booking.status = CANCELLED
        event.booked_count -= 1
        session.flush()
        _record(session, customer, "cancel", booking)
    event_snapshots.announce(event.id)  # the freed seat is bookable at once, everywhere
    return booking


def reactivate_booking(*, customer: User, booking_id: int) -> Booking:
    """Re-activate a cancelled booking if a seat is free; serialized by the event lock."""
    with db.read_transaction() as session:
        event_id = _own_booking_event_id(session, customer, booking_id)
    with (
        locks.hold(event_id),
        _own_booking_locked(customer, booking_id) as (
            session,
            booking,
            event,
        ),
    ):
        if booking.status == ACTIVE:
            raise AlreadyActive(f"Booking {booking_id} is already active.")
        _refuse_unless_bookable(event, datetime.now(UTC))
        booking.status = ACTIVE
        event.booked_count += 1
        try:
            session.flush()
        except IntegrityError as error:
            if is_one_active_violation(error):
                # The failed flush expired ``event``; reading event.id here would raise.
                raise AlreadyBooked(
                    f"You already have another active booking for event {event_id}."
                ) from error
            raise
        _record(session, customer, "reactivate", booking)
    return booking


def delete_booking(*, customer: User, booking_id: int) -> None:
    """Delete the booking, freeing its seat if it was active.

    An active booking follows the cancel rule: not once its event has started. A cancelled
    one holds no seat, so it may be deleted at any time.
    """
    with _own_booking_locked(customer, booking_id) as (session, booking, event):
        if booking.status == ACTIVE:
            _refuse_unless_open(event, datetime.now(UTC))
            event.booked_count -= 1
        _record(session, customer, "delete", booking)
        session.delete(booking)
    event_snapshots.announce(event.id)


def get_booking(*, viewer: User, booking_id: int) -> Booking:
    """Return a booking its customer, its event's organizer or an admin may see."""
    query = _visible_to(viewer, select(Booking)).where(Booking.id == booking_id)
    with db.read_transaction() as session:
        booking = session.scalar(query) if booking_id <= MAX_ID else None
    if booking is None:
        raise BookingNotFound(f"Booking {booking_id} does not exist.")
    return booking


def list_bookings(
    *,
    viewer: User,
    status: str | None = None,
    event_id: int | None = None,
    page: int,
    page_size: int,
) -> Page[Booking]:
    """List the bookings the viewer may see, newest first."""
    query = _visible_to(viewer, select(Booking))
    if status:
        query = query.where(Booking.status == status)
    if event_id is not None:
        query = query.where(Booking.event_id == event_id)
    with db.read_transaction() as session:
        return paginate(
            session,
            query.order_by(Booking.created_at.desc(), Booking.id.desc()),
            page=page,
            page_size=page_size,
        )


def _visible_to(viewer: User, query: Select[tuple[Booking]]) -> Select[tuple[Booking]]:
    if viewer.role == Role.ADMIN.value:
        return query
    if viewer.role == Role.ORGANIZER.value:
        return query.join(Event, Event.id == Booking.event_id).where(
            Event.organizer_id == viewer.id
        )
    return query.where(Booking.customer_id == viewer.id)
