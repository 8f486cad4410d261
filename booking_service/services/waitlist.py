"""The waitlist: customers waiting for seats of an event, offered them in order of joining.

When seats come free (a cancel, a delete, fewer seats, a released or expired hold, capacity
raised), ``offer_freed_seats`` runs in the same transaction, on the same locked event row, so
no booking can take seats freed for the waitlist: while anyone waits, newcomers are refused
(``seating.refuse_unless_bookable``). An offer is a hold for the waiting customer for
WAITLIST_OFFER_TTL_SECONDS; confirming it books, releasing (declining) or letting it expire
passes the seats on to the next entries.

First fit, with a bound on starvation: an entry that needs more seats than are free keeps its
place while later, smaller entries are offered the seats; but each time that happens counts
as passing it over, and once an entry has been passed over ``MAX_PASSES`` times no later entry
is offered anything until it has been served. So no entry waits behind later arrivals more
than ``MAX_PASSES`` times; after that it waits only for enough seats to come free.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from booking_service import metrics
from booking_service.errors import (
    AlreadyWaiting,
    Forbidden,
    HoldExists,
    SeatsAvailable,
    WaitlistEntryNotFound,
)
from booking_service.extensions import db
from booking_service.models import (
    ONE_LIVE_ENTRY_INDEX,
    Event,
    Hold,
    HoldStatus,
    User,
    WaitlistEntry,
    WaitlistStatus,
)
from booking_service.services import MAX_ID, Page, paginate, seating
from booking_service.services.snapshots import event_snapshots

MAX_PASSES = 3
LIVE = (WaitlistStatus.WAITING.value, WaitlistStatus.OFFERED.value)


def offer_freed_seats(session: Session, event: Event, at: datetime, *, freed_at: datetime) -> int:
    """Offer the event's free seats to the waitlist, first fit in order of joining.

    The event row is locked by the caller, whose transaction freed the seats (at
    ``freed_at``). Returns the number of offers made.
    """
    seating.reclaim_lapsed_holds(session, event, at)
    free = event.capacity - event.booked_count - event.held_count
    if event.waitlist_length == 0 or free <= 0:
        return 0
    waiting = session.scalars(
        select(WaitlistEntry)
        .where(
            WaitlistEntry.event_id == event.id,
            WaitlistEntry.status == WaitlistStatus.WAITING.value,
        )
        .order_by(WaitlistEntry.id)
        .with_for_update()
    ).all()
    passed: list[WaitlistEntry] = []
    offers = 0
    for entry in waiting:
        if free == 0:
            break
        if entry.seats > event.capacity:
            continue  # more than the event has: served only if capacity grows; blocks nobody
        if entry.seats > free:
            passed.append(entry)
            continue
        if any(earlier.passed_over >= MAX_PASSES for earlier in passed):
            break  # an earlier entry was passed over often enough: the seats wait for it
        for earlier in passed:
            earlier.passed_over += 1
        _offer(session, event, entry, at)
        free -= entry.seats
        offers += 1
    if offers:
        metrics.seat_freed_to_offer_seconds.observe(max(0.0, (at - freed_at).total_seconds()))
    return offers


def _offer(session: Session, event: Event, entry: WaitlistEntry, at: datetime) -> None:
    hold = Hold(
        event_id=event.id,
        customer_id=entry.customer_id,
        seats=entry.seats,
        status=HoldStatus.HELD.value,
        expires_at=at + seating.settings.offer_ttl,
        waitlist_entry_id=entry.id,
    )
    session.add(hold)
    entry.status = WaitlistStatus.OFFERED.value
    event.held_count += entry.seats
    event.waitlist_length -= 1
    session.flush()
    seating.record(
        session, entry.customer_id, "offer", "waitlist_entry", entry.id, event.id, entry.seats,
        hold_id=hold.id,
    )  # fmt: skip
    metrics.waitlist_offers_total.inc()
    metrics.holds_total.labels(outcome="created").inc()


def _end(session: Session, event: Event, entry: WaitlistEntry, status: str, action: str) -> None:
    if entry.status == WaitlistStatus.WAITING.value:
        event.waitlist_length -= 1
    entry.status = status
    seating.record(
        session, entry.customer_id, action, "waitlist_entry", entry.id, event.id, entry.seats
    )


def join(*, customer: User, event_id: int, seats: int) -> WaitlistEntry:
    """Put the customer on the event's waitlist for ``seats``; refused while they are free."""
    with seating.event_locked(event_id) as (session, event, at):
        seating.refuse_unless_open(event, at)
        seating.refuse_too_many(event, seats)
        _refuse_if_waiting(session, customer, event_id)
        _refuse_if_holding(session, customer, event_id)
        booked = seating.booked_seats(session, customer.id, event_id)
        seating.refuse_too_many(event, booked + seats)
        seating.reclaim_lapsed_holds(session, event, at)
        free = event.capacity - event.booked_count - event.held_count
        if event.waitlist_length == 0 and free >= seats:
            raise SeatsAvailable(
                f"Event {event_id} has {free} free seat(s): book or hold them instead.",
                available_slots=free,
            )
        entry = WaitlistEntry(
            event_id=event_id,
            customer_id=customer.id,
            seats=seats,
            status=WaitlistStatus.WAITING.value,
        )
        session.add(entry)
        event.waitlist_length += 1
        try:
            session.flush()
        except IntegrityError as error:
            if seating.violates(error, ONE_LIVE_ENTRY_INDEX):
                raise AlreadyWaiting(f"You are already on event {event_id}'s waitlist.") from error
            raise
        seating.record(session, customer.id, "join", "waitlist_entry", entry.id, event_id, seats)
        # Seats left over for nobody so far (too few for the entries ahead) may fit this one.
        offer_freed_seats(session, event, at, freed_at=at)
        session.flush()
        session.refresh(entry)  # its position, and the offer it may have had at once
    event_snapshots.announce(event_id)  # newcomers are refused from now on
    return entry


def leave(*, customer: User, entry_id: int) -> None:
    """Leave the waitlist; an offer not yet confirmed is given up and passed on."""
    event_id = _own_entry_event_id(customer, entry_id)
    with seating.event_locked(event_id) as (session, event, at):
        entry = session.get(WaitlistEntry, entry_id, with_for_update=True)
        if entry is None or entry.status not in LIVE:
            return  # already left, served or expired: nothing to give up
        if entry.status == WaitlistStatus.OFFERED.value:
            _give_up_offer(session, event, entry)
        _end(session, event, entry, WaitlistStatus.LEFT.value, "leave")
        offer_freed_seats(session, event, at, freed_at=at)
    event_snapshots.announce(event_id)


def _give_up_offer(session: Session, event: Event, entry: WaitlistEntry) -> None:
    hold = session.scalar(
        select(Hold)
        .where(Hold.waitlist_entry_id == entry.id, Hold.status == HoldStatus.HELD.value)
        .with_for_update()
    )
    if hold is not None:
        seating.end_hold(session, event, hold, HoldStatus.RELEASED.value)


def get_entry(*, customer: User, entry_id: int) -> WaitlistEntry:
    with db.read_transaction() as session:
        entry = session.scalar(_own(customer).where(WaitlistEntry.id == entry_id))
    if entry is None:
        raise WaitlistEntryNotFound(f"Waitlist entry {entry_id} does not exist.")
    return entry


def list_own(*, customer: User, page: int, page_size: int) -> Page[WaitlistEntry]:
    """The customer's entries, newest first, live ones with their position."""
    query = _own(customer).order_by(WaitlistEntry.id.desc())
    with db.read_transaction() as session:
        return paginate(session, query, page=page, page_size=page_size)


def list_for_event(
    *, actor: User, event_id: int, live_only: bool, page: int, page_size: int
) -> Page[WaitlistEntry]:
    """The event's entries in order of joining (its organizer)."""
    query = select(WaitlistEntry).where(WaitlistEntry.event_id == event_id)
    if live_only:
        query = query.where(WaitlistEntry.status.in_(LIVE))
    with db.read_transaction() as session:
        found = session.get(Event, event_id) if event_id <= MAX_ID else None
        event = seating.existing(found, event_id)
        if event.organizer_id != actor.id:
            raise Forbidden("Only the event's organizer may do this.")
        return paginate(session, query.order_by(WaitlistEntry.id), page=page, page_size=page_size)


def _own(customer: User) -> Select[tuple[WaitlistEntry]]:
    return select(WaitlistEntry).where(WaitlistEntry.customer_id == customer.id)


def _own_entry_event_id(customer: User, entry_id: int) -> int:
    event_id = seating.own_event_id(WaitlistEntry, entry_id, customer.id)
    if event_id is None:
        raise WaitlistEntryNotFound(f"Waitlist entry {entry_id} does not exist.")
    return event_id


def _refuse_if_waiting(session: Session, customer: User, event_id: int) -> None:
    live = session.scalar(
        select(WaitlistEntry.id).where(
            WaitlistEntry.event_id == event_id,
            WaitlistEntry.customer_id == customer.id,
            WaitlistEntry.status.in_(LIVE),
        )
    )
    if live is not None:
        raise AlreadyWaiting(f"You are already on event {event_id}'s waitlist (entry {live}).")


def _refuse_if_holding(session: Session, customer: User, event_id: int) -> None:
    held = session.scalar(
        select(Hold.id).where(
            Hold.event_id == event_id,
            Hold.customer_id == customer.id,
            Hold.status == HoldStatus.HELD.value,
        )
    )
    if held is not None:
        raise HoldExists(
            f"You hold seats on event {event_id} (hold {held}): confirm or release it first."
        )
