"""The waitlist: customers waiting for seats of an event, offered them in order of joining.

When seats come free (a cancel, a delete, fewer seats, a released or expired hold, capacity
raised), the seat ledger offers them in the same transaction, on the same locked event row, so
no booking can take seats freed for the waitlist: while anyone waits, newcomers are refused.
Joining and leaving are the ledger's intents too (services/ledger.py). An offer is a hold for
the waiting customer for WAITLIST_OFFER_TTL_SECONDS; confirming it books, releasing
(declining) or letting it expire passes the seats on to the next entries.

First fit, with a bound on starvation: an entry that needs more seats than are free keeps its
place while later, smaller entries are offered the seats; but each time that happens counts
as passing it over, and once an entry has been passed over ``MAX_PASSES`` times
(services/ledger_sql.py) no later entry
is offered anything until it has been served. So no entry waits behind later arrivals more
than ``MAX_PASSES`` times; after that it waits only for enough seats to come free.
"""

from __future__ import annotations

from sqlalchemy import Select, select

from booking_service.database import db
from booking_service.errors import (
    EventNotFound,
    Forbidden,
    WaitlistEntryNotFound,
)
from booking_service.models import (
    Event,
    User,
    WaitlistEntry,
    WaitlistStatus,
)
from booking_service.services import MAX_ID, Page, PageRequest, ledger, paginate, prechecks
from booking_service.services.snapshots import read_event

LIVE = (WaitlistStatus.WAITING.value, WaitlistStatus.OFFERED.value)


def join(*, customer: User, event_id: int, seats: int) -> WaitlistEntry:
    """Put the customer on the event's waitlist for ``seats``; refused while they are free."""
    # An event that does not exist answers 404 before any lock or Redis write.
    if read_event(event_id) is None:
        raise EventNotFound(f"Event {event_id} does not exist.")
    outcome = ledger.submit(event_id, ledger.intent("join", customer_id=customer.id, seats=seats))
    with db.read_transaction() as session:  # its position, and the offer it may have had
        return session.get_one(WaitlistEntry, outcome["entry"])


def leave(*, customer: User, entry_id: int) -> None:
    """Leave the waitlist; an offer not yet confirmed is given up and passed on."""
    ledger.submit(
        _own_entry_event_id(customer, entry_id),
        ledger.intent("leave", customer_id=customer.id, entry=entry_id),
    )


def get_entry(*, customer: User, entry_id: int) -> WaitlistEntry:
    with db.read_transaction() as session:
        entry = session.scalar(_own(customer).where(WaitlistEntry.id == entry_id))
    if entry is None:
        raise WaitlistEntryNotFound(f"Waitlist entry {entry_id} does not exist.")
    return entry


def list_own(*, customer: User, page: PageRequest) -> Page[WaitlistEntry]:
    """The customer's entries, newest first, live ones with their position."""
    query = _own(customer).order_by(WaitlistEntry.id.desc())
    with db.read_transaction() as session:
        return paginate(session, query, page)


def list_for_event(
    *, actor: User, event_id: int, live_only: bool, page: PageRequest
) -> Page[WaitlistEntry]:
    """The event's entries in order of joining (its organizer)."""
    query = select(WaitlistEntry).where(WaitlistEntry.event_id == event_id)
    if live_only:
        query = query.where(WaitlistEntry.status.in_(LIVE))
    with db.read_transaction() as session:
        found = session.get(Event, event_id) if event_id <= MAX_ID else None
        event = prechecks.require_event(found, event_id)
        if event.organizer_id != actor.id:
            raise Forbidden("Only the event's organizer may do this.")
        return paginate(session, query.order_by(WaitlistEntry.id), page)


def _own(customer: User) -> Select[tuple[WaitlistEntry]]:
    return select(WaitlistEntry).where(WaitlistEntry.customer_id == customer.id)


def _own_entry_event_id(customer: User, entry_id: int) -> int:
    event_id = prechecks.own_event_id(WaitlistEntry, entry_id, customer.id)
    if event_id is None:
        raise WaitlistEntryNotFound(f"Waitlist entry {entry_id} does not exist.")
    return event_id
