"""Bookings: the path that must never overbook (docs/architecture.md, "The booking path").

Order on the booking path: cheap rejections without lock or write → the seat ledger
(services/ledger.py): the event lock, taken before a database connection is checked out, then
one statement on the locked event row, batched with the other changes queued for the event on
any instance → release. The locked row, the CHECK on the counters and the partial unique index
are what make overbooking and double booking impossible; the lock only keeps the queue in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Select, select

from booking_service import metrics
from booking_service.database import db
from booking_service.errors import (
    AlreadyBooked,
    BookingNotFound,
    DbUnavailable,
    DomainError,
    EventFull,
    LockTimeout,
    LockUnavailable,
)
from booking_service.models import Booking, BookingStatus, Event, Role, User
from booking_service.services import (
    MAX_ID,
    Page,
    PageRequest,
    ledger,
    paginate,
    prechecks,
    waitroom,
)
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


# Refusals that a snapshot saying "bookable" should have made: it is read again.
_SNAPSHOT_WAS_WRONG = frozenset({"event_full", "event_not_found", "event_started", "event_ended"})


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
    *,
    customer: User,
    event_id: int,
    seats: int = 1,
    event_version: int | None = None,
    queue: waitroom.Seen | None = None,
) -> Booking:
    """Book ``seats`` on the event for the customer, all or none.

    ``event_version``: the event's change counter, if the request already read it
    (services/admission.py); a snapshot may then refuse without a database read. ``queue``:
    the customer's waiting-room entry, if the request read it there too.
    """
    with _booking_metrics():
        # Cheap rejections: no lock, no write, and mostly no read either (a snapshot).
        event = event_snapshots.recent(event_id, version=event_version, seats=seats)
        event = prechecks.require_event(event, event_id)
        waitroom.refuse_newcomer(event, customer_id=customer.id, seats=seats, seen=queue)
        outcome = ledger.run(
            event_id, book := ledger.intent("book", customer_id=customer.id, seats=seats)
        )
        if outcome.get("error") in _SNAPSHOT_WAS_WRONG:
            # Explained after the lock is released, from a fresh read that the requests
            # behind this one then reuse (the snapshot that let this one through is stale).
            event = prechecks.require_event(event_snapshots.fresh(event_id), event_id)
            prechecks.refuse_unless_bookable(event, prechecks.now(), seats)
        return ledger.booking_of(ledger.outcome_of(outcome, book, event_id))


def _change(customer: User, intent: dict[str, Any]) -> Booking:
    """Apply a change to the customer's booking through the ledger (404 before any lock)."""
    return ledger.booking_of(ledger.submit(_own_event_id(customer, intent["booking"]), intent))


def _change_taking_seats(customer: User, intent: dict[str, Any]) -> Booking:
    """``_change`` for a change that may take seats (a reactivation, more seats): the
    event's gate applies first (services/waitroom.py), as to a booking."""
    event_id = _own_event_id(customer, intent["booking"])
    _require_admission(customer, event_id, intent["booking"], intent.get("seats"))
    return ledger.booking_of(ledger.submit(event_id, intent))


def _own_event_id(customer: User, booking_id: int) -> int:
    event_id = prechecks.own_event_id(Booking, booking_id, customer.id)
    if event_id is None:
        raise BookingNotFound(f"Booking {booking_id} does not exist.")
    return event_id


def _require_admission(customer: User, event_id: int, booking_id: int, seats: int | None) -> None:
    """The waiting room's gate for a change of an existing booking that may take seats."""
    seen = waitroom.read(event_id, customer.id)
    event = event_snapshots.recent(event_id, version=seen.event_version)
    if event is None or not waitroom.gated(event):
        return  # a missing event is the ledger's 404
    if seats is not None:
        with db.read_transaction() as session:
            booked = session.scalar(
                select(Booking.seats).where(Booking.id == booking_id, Booking.status == ACTIVE)
            )
        if booked is not None and seats <= booked:
            return  # fewer seats only give back: like a cancel, never gated
    waitroom.refuse_unless_admitted(event, customer_id=customer.id, seen=seen)


def cancel_booking(*, customer: User, booking_id: int) -> Booking:
    """Cancel an active booking before its event starts, freeing its seats."""
    cancel = ledger.intent("cancel", customer_id=customer.id, booking=booking_id)
    return _change(customer, cancel)


def change_seats(*, customer: User, booking_id: int, seats: int) -> Booking:
    """Set the seats of an active booking: fewer frees them, more takes them like a booking
    (all or nothing, waitlist first)."""
    change = ledger.intent("change", customer_id=customer.id, booking=booking_id, seats=seats)
    return _change_taking_seats(customer, change)


def reactivate_booking(*, customer: User, booking_id: int) -> Booking:
    """Re-activate a cancelled booking if its seats are free."""
    reactivate = ledger.intent("reactivate", customer_id=customer.id, booking=booking_id)
    return _change_taking_seats(customer, reactivate)


def delete_booking(*, customer: User, booking_id: int) -> None:
    """Delete the booking, freeing its seats if it was active.

    An active booking follows the cancel rule: not once its event has started. A cancelled
    one holds no seat, so it may be deleted at any time.
    """
    _change(customer, ledger.intent("delete", customer_id=customer.id, booking=booking_id))


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
    page: PageRequest,
) -> Page[Booking]:
    """List the bookings the viewer may see, newest first."""
    query = _visible_to(viewer, select(Booking))
    if status:
        query = query.where(Booking.status == status)
    if event_id is not None:
        query = query.where(Booking.event_id == event_id)
    with db.read_transaction() as session:
        return paginate(session, query.order_by(Booking.created_at.desc(), Booking.id.desc()), page)


def _visible_to(viewer: User, query: Select[tuple[Booking]]) -> Select[tuple[Booking]]:
    if viewer.role == Role.ADMIN.value:
        return query
    if viewer.role == Role.ORGANIZER.value:
        return query.join(Event, Event.id == Booking.event_id).where(
            Event.organizer_id == viewer.id
        )
    return query.where(Booking.customer_id == viewer.id)
