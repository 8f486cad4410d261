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
from typing import Any

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
    EventFull,
    LockTimeout,
    LockUnavailable,
    NotActive,
)
from booking_service.extensions import db
from booking_service.locking import locks
from booking_service.models import Booking, BookingStatus, Event, Role, User
from booking_service.services import MAX_ID, Page, paginate, seating, waitlist
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


def create_booking(
    *, customer: User, event_id: int, seats: int = 1, event_version: int | None = None
) -> Booking:
    """Book ``seats`` on the event for the customer, all or none.

    ``event_version``: the event's change counter, if the request already read it
    (services/admission.py); a snapshot may then refuse without a database read.
    """
    with _booking_metrics():
        # Cheap rejections: no lock, no write, and mostly no read either (a snapshot).
        event = event_snapshots.recent(event_id, version=event_version, seats=seats)
        seating.refuse_unless_bookable(seating.existing(event, event_id), seating.now(), seats)
        # Behind the event lock, batched with this process's other requests for the event.
        request = seat_queue.take(event_id=event_id, customer_id=customer.id, seats=seats)
        if request.booking is None:
            # Explained after the lock is released, from a fresh read that the requests
            # behind this one then reuse: the reason needs a read, not the lock.
            event = seating.existing(event_snapshots.fresh(event_id), event_id)
            seating.refuse_unless_bookable(event, seating.now(), seats)
            raise EventFull(
                f"Event {event_id} has {request.available} free seat(s); {seats} asked for.",
                available_slots=request.available,
            )
        return request.booking


@contextmanager
def _own_booking_locked(
    customer: User, booking_id: int
) -> Iterator[tuple[Session, Booking, Event]]:
    """Open a transaction with the event row, then the booking row, locked.

    Every path that changes a booking locks event before booking, the order a new booking
    takes them in, so these paths cannot deadlock with each other.
    """
    with db.transaction() as session:
        event_id = _own_booking_event_id(customer, booking_id, session=session)
        event = session.get(Event, event_id, with_for_update=True)
        booking = session.get(Booking, booking_id, with_for_update=True)
        if event is None or booking is None:  # deleted between the two reads
            raise BookingNotFound(f"Booking {booking_id} does not exist.")
        yield session, booking, event


def _own_booking_event_id(
    customer: User, booking_id: int, *, session: Session | None = None
) -> int:
    event_id = seating.own_event_id(Booking, booking_id, customer.id, session=session)
    if event_id is None:
        raise BookingNotFound(f"Booking {booking_id} does not exist.")
    return event_id


def _record(session: Session, customer: User, action: str, booking: Booking, **more: int) -> None:
    seating.record(
        session, customer.id, action, "booking", booking.id, booking.event_id, booking.seats,
        **more,
    )  # fmt: skip


@contextmanager
def _freeing(event_id: int) -> Iterator[None]:
    """Around a change that frees seats: the event's lock when someone waits for them (the
    freed seats are offered under it; without Redis that answers 503), else none: freeing a
    seat needs no lock, and the row lock orders it with everything else either way."""
    if _has_waitlist(event_id):
        with locks.hold(event_id):
            yield
    else:
        yield
    event_snapshots.announce(event_id)  # the freed seats count at once, everywhere


def _has_waitlist(event_id: int) -> bool:
    with db.read_transaction() as session:
        return bool(session.scalar(select(Event.waitlist_length).where(Event.id == event_id)))


def _free_seats(session: Session, event: Event, seats: int) -> None:
    """Give ``seats`` of an active booking back and offer them to the waitlist, if any."""
    event.booked_count -= seats
    at = seating.now()
    waitlist.offer_freed_seats(session, event, at, freed_at=at)


def cancel_booking(*, customer: User, booking_id: int) -> Booking:
    """Cancel an active booking before its event starts, freeing its seats."""
    with (
        _freeing(_own_booking_event_id(customer, booking_id)),
        _own_booking_locked(customer, booking_id) as (session, booking, event),
    ):
        if booking.status != ACTIVE:
            raise NotActive(f"Booking {booking_id} is already cancelled.")
        seating.refuse_unless_open(event, seating.now())
        booking.status = CANCELLED
        session.flush()
        _record(session, customer, "cancel", booking)
        _free_seats(session, event, booking.seats)
    return booking


def change_seats(*, customer: User, booking_id: int, seats: int) -> Booking:
    """Set the seats of an active booking: fewer frees them at once, more takes the event's
    lock like a booking (all or nothing, waitlist first)."""
    event_id = _own_booking_event_id(customer, booking_id)
    with db.read_transaction() as session:
        current = session.scalar(select(Booking.seats).where(Booking.id == booking_id))
    if current is not None and seats <= current:
        context: Any = _freeing(event_id)
    else:
        context = locks.hold(event_id)
    with context, _own_booking_locked(customer, booking_id) as (session, booking, event):
        if booking.status != ACTIVE:
            raise NotActive(f"Booking {booking_id} is cancelled.")
        at = seating.now()
        seating.refuse_unless_open(event, at)
        seating.refuse_too_many(event, seats)
        before = booking.seats
        if seats > before:
            if event.waitlist_length == 0:
                seating.reclaim_lapsed_holds(session, event, at)
            seating.refuse_unless_bookable(event, at, seats - before)
            event.booked_count += seats - before
        booking.seats = seats
        session.flush()
        if seats != before:
            _record(session, customer, "seats", booking, seats_before=before)
        if seats < before:
            _free_seats(session, event, before - seats)
    return booking


def reactivate_booking(*, customer: User, booking_id: int) -> Booking:
    """Re-activate a cancelled booking if its seats are free; serialized by the event lock."""
    event_id = _own_booking_event_id(customer, booking_id)
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
        at = seating.now()
        if event.waitlist_length == 0:
            seating.reclaim_lapsed_holds(session, event, at)
        seating.refuse_unless_bookable(event, at, booking.seats)
        booking.status = ACTIVE
        event.booked_count += booking.seats
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
    """Delete the booking, freeing its seats if it was active.

    An active booking follows the cancel rule: not once its event has started. A cancelled
    one holds no seat, so it may be deleted at any time.
    """
    with (
        _freeing(_own_booking_event_id(customer, booking_id)),
        _own_booking_locked(customer, booking_id) as (session, booking, event),
    ):
        _record(session, customer, "delete", booking)
        if booking.status == ACTIVE:
            seating.refuse_unless_open(event, seating.now())
            _free_seats(session, event, booking.seats)
        session.delete(booking)


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
