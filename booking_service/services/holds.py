"""Holds: seats kept for a customer for a few minutes while they pay, then confirmed into a
booking, released, or expired.

A hold counts against capacity the moment it is made (``events.held_count``, one CHECK with
the booked seats) and gives its seats back exactly once: its status moves from ``held`` to one
of ``confirmed``, ``released`` or ``expired`` under the event's row lock, in the transaction
that changes the counter. Expiry needs no request: the sweeper (services/sweeper.py) releases
holds past their expiry, and any flow that takes the event's lock reclaims them first as well;
meanwhile every read already leaves them out (Event.seats_held). Creating, confirming and
releasing take the event's Redis lock like a booking: without Redis they answer 503. Like a
booking too, a hold the event has no seats for is refused before the lock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from booking_service import metrics
from booking_service.errors import HoldExists, HoldExpired, HoldNotFound, HoldNotHeld
from booking_service.extensions import db
from booking_service.locking import locks
from booking_service.models import (
    ONE_LIVE_HOLD_INDEX,
    Booking,
    BookingStatus,
    Event,
    Hold,
    HoldStatus,
    User,
    WaitlistEntry,
    WaitlistStatus,
)
from booking_service.services import MAX_ID, Page, paginate, seating, waitlist
from booking_service.services.snapshots import event_snapshots

HELD = HoldStatus.HELD.value


def create_hold(*, customer: User, event_id: int, seats: int) -> Hold:
    """Hold ``seats`` on the event for the customer, all or none, until it expires."""
    # Cheap refusal first, as for a booking: without it every hold tried on a sold-out event
    # queues for the event lock and runs a transaction just to be told "full", and in a storm
    # the confirms and releases behind those refusals time out (503 lock_timeout). A refusing
    # snapshot is never reused here (no change counter is read), so this reads the event now.
    shown = event_snapshots.recent(event_id, seats=seats)
    seating.refuse_unless_bookable(seating.existing(shown, event_id), seating.now(), seats)
    with seating.event_locked(event_id) as (session, event, at):
        if event.waitlist_length == 0:
            seating.reclaim_lapsed_holds(session, event, at)
        seating.refuse_unless_bookable(event, at, seats)
        seating.refuse_too_many(event, seating.booked_seats(session, customer.id, event_id) + seats)
        hold = Hold(
            event_id=event_id,
            customer_id=customer.id,
            seats=seats,
            status=HELD,
            expires_at=seating.hold_expiry(event, at),
        )
        session.add(hold)
        event.held_count += seats
        try:
            session.flush()
        except IntegrityError as error:
            if seating.violates(error, ONE_LIVE_HOLD_INDEX):
                raise HoldExists(
                    f"You already hold seats on event {event_id}: confirm or release that hold."
                ) from error
            raise
        seating.record(session, customer.id, "hold", "hold", hold.id, event_id, seats)
        sold_out = event.capacity - event.booked_count - event.held_count <= 0
    metrics.holds_total.labels(outcome="created").inc()
    if sold_out:
        event_snapshots.forget(event_id)  # its last seats are held: say so before the lock
    return hold


def confirm_hold(*, customer: User, hold_id: int) -> Booking:
    """Book the hold's seats: into the customer's active booking on the event, if any."""
    event_id = _own_hold_event_id(customer, hold_id)
    expired = False
    with seating.event_locked(event_id) as (session, event, at):
        hold = _locked(session, hold_id)
        if hold.status == HELD and hold.expires_at <= at:
            # Past its expiry before the sweeper got to it: it expires now, its seats go on
            # (to the waitlist first), and the customer is told (after this commits).
            waitlist.offer_freed_seats(session, event, at, freed_at=hold.expires_at)
            expired = True
        else:
            booking = _confirm(session, customer, event, hold, at)
    if expired:
        event_snapshots.announce(event_id)
        raise HoldExpired(f"Hold {hold_id} expired at {hold.expires_at.isoformat()}.")
    metrics.holds_total.labels(outcome="confirmed").inc()
    return booking


def _confirm(session: Session, customer: User, event: Event, hold: Hold, at: datetime) -> Booking:
    if hold.status == HoldStatus.EXPIRED.value:
        raise HoldExpired(f"Hold {hold.id} expired at {hold.expires_at.isoformat()}.")
    if hold.status != HELD:
        raise HoldNotHeld(f"Hold {hold.id} is {hold.status}.")
    seating.refuse_unless_open(event, at)
    booking = session.scalar(
        select(Booking)
        .where(
            Booking.event_id == event.id,
            Booking.customer_id == customer.id,
            Booking.status == BookingStatus.ACTIVE.value,
        )
        .with_for_update()
    )
    if booking is None:
        booking = Booking(
            event_id=event.id,
            customer_id=customer.id,
            status=BookingStatus.ACTIVE.value,
            seats=hold.seats,
        )
        session.add(booking)
    else:
        seating.refuse_too_many(event, booking.seats + hold.seats)
        booking.seats += hold.seats
    hold.status = HoldStatus.CONFIRMED.value
    event.held_count -= hold.seats
    event.booked_count += hold.seats
    session.flush()
    hold.booking_id = booking.id
    if hold.waitlist_entry_id is not None:
        entry = session.get(WaitlistEntry, hold.waitlist_entry_id)
        if entry is not None:
            entry.status = WaitlistStatus.CONVERTED.value
            metrics.waitlist_conversions_total.inc()
    seating.record(
        session, customer.id, "confirm", "hold", hold.id, event.id, hold.seats,
        booking_id=booking.id,
    )  # fmt: skip
    return booking


def release_hold(*, customer: User, hold_id: int) -> None:
    """Give the hold's seats back now (a waitlist offer declined passes them on)."""
    event_id = _own_hold_event_id(customer, hold_id)
    with seating.event_locked(event_id) as (session, event, at):
        hold = _locked(session, hold_id)
        if hold.status != HELD:
            raise HoldNotHeld(f"Hold {hold_id} is {hold.status}.")
        # A declined waitlist offer takes its entry off the waitlist.
        seating.end_hold(
            session, event, hold, HoldStatus.RELEASED.value, offer_ends_as=WaitlistStatus.LEFT.value
        )
        waitlist.offer_freed_seats(session, event, at, freed_at=at)
    event_snapshots.announce(event_id)


def expire_lapsed(*, event_id: int) -> int:
    """Expire the event's holds past their expiry and offer their seats on (the sweeper)."""
    with locks.hold(event_id), db.transaction() as session:
        at = seating.now()
        event = session.get(Event, event_id, with_for_update=True)
        if event is None:
            return 0
        lapsed = session.scalars(
            select(Hold.expires_at)
            .where(Hold.event_id == event_id, Hold.status == HELD, Hold.expires_at <= at)
            .order_by(Hold.expires_at)
        ).all()
        if not lapsed:
            return 0
        # offer_freed_seats reclaims them first, then offers the seats on.
        waitlist.offer_freed_seats(session, event, at, freed_at=lapsed[0])
    event_snapshots.announce(event_id)
    return len(lapsed)


def events_with_lapsed_holds(*, limit: int) -> list[int]:
    """Events that have holds past their expiry, the longest overdue first."""
    with db.read_transaction() as session:
        overdue_since = func.min(Hold.expires_at)
        return list(
            session.scalars(
                select(Hold.event_id)
                .where(Hold.status == HELD, Hold.expires_at <= seating.now())
                .group_by(Hold.event_id)
                .order_by(overdue_since)
                .limit(limit)
            )
        )


def get_hold(*, customer: User, hold_id: int) -> Hold:
    with db.read_transaction() as session:
        hold = (
            session.scalar(select(Hold).where(Hold.id == hold_id, Hold.customer_id == customer.id))
            if hold_id <= MAX_ID
            else None
        )
    if hold is None:
        raise HoldNotFound(f"Hold {hold_id} does not exist.")
    return hold


def list_holds(*, customer: User, status: str | None, page: int, page_size: int) -> Page[Hold]:
    """The customer's holds, newest first."""
    query = select(Hold).where(Hold.customer_id == customer.id)
    if status:
        query = query.where(Hold.status == status)
    with db.read_transaction() as session:
        return paginate(
            session,
            query.order_by(Hold.created_at.desc(), Hold.id.desc()),
            page=page,
            page_size=page_size,
        )


def _locked(session: Session, hold_id: int) -> Hold:
    hold = session.get(Hold, hold_id, with_for_update=True)
    if hold is None:
        raise HoldNotFound(f"Hold {hold_id} does not exist.")
    return hold


def _own_hold_event_id(customer: User, hold_id: int) -> int:
    event_id = seating.own_event_id(Hold, hold_id, customer.id)
    if event_id is None:
        raise HoldNotFound(f"Hold {hold_id} does not exist.")
    return event_id
