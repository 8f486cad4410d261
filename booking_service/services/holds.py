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

from sqlalchemy import func, select

from booking_service import metrics
from booking_service.database import db
from booking_service.errors import HoldNotFound
from booking_service.models import (
    Booking,
    Hold,
    HoldStatus,
    User,
)
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

HELD = HoldStatus.HELD.value


def create_hold(
    *,
    customer: User,
    event_id: int,
    seats: int,
    event_version: int | None = None,
    queue: waitroom.Seen | None = None,
) -> Hold:
    """Hold ``seats`` on the event for the customer, all or none, until it expires.

    ``event_version`` and ``queue``: the event's change counter and the customer's
    waiting-room entry, if the request read them (services/admission.py).
    """
    # Cheap refusal first, as for a booking: without it every hold tried on a sold-out event
    # queues for the event lock just to be told "full", and in a storm the confirms and
    # releases behind those refusals time out (503 lock_timeout).
    shown = prechecks.require_event(
        event_snapshots.recent(event_id, version=event_version, seats=seats), event_id
    )
    waitroom.refuse_newcomer(shown, customer_id=customer.id, seats=seats, seen=queue)
    outcome = ledger.submit(event_id, ledger.intent("hold", customer_id=customer.id, seats=seats))
    metrics.holds_total.labels(outcome="created").inc()
    return ledger.hold_of(outcome)


def confirm_hold(*, customer: User, hold_id: int) -> Booking:
    """Book the hold's seats: into the customer's active booking on the event, if any."""
    outcome = ledger.submit(
        _own_hold_event_id(customer, hold_id),
        ledger.intent("confirm", customer_id=customer.id, hold=hold_id),
    )
    metrics.holds_total.labels(outcome="confirmed").inc()
    return ledger.booking_of(outcome)


def release_hold(*, customer: User, hold_id: int) -> None:
    """Give the hold's seats back now (a waitlist offer declined passes them on)."""
    ledger.submit(
        _own_hold_event_id(customer, hold_id),
        ledger.intent("release", customer_id=customer.id, hold=hold_id),
    )
    metrics.holds_total.labels(outcome="released").inc()


def expire_lapsed(*, event_id: int) -> int:
    """Expire the event's holds past their expiry and offer their seats on (the sweeper)."""
    return int(ledger.submit(event_id, ledger.intent("expire"))["expired"])


def events_with_lapsed_holds(*, limit: int) -> list[int]:
    """Events that have holds past their expiry, the longest overdue first."""
    with db.read_transaction() as session:
        overdue_since = func.min(Hold.expires_at)
        return list(
            session.scalars(
                select(Hold.event_id)
                .where(Hold.status == HELD, Hold.expires_at <= prechecks.now())
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


def list_holds(*, customer: User, status: str | None, page: PageRequest) -> Page[Hold]:
    """The customer's holds, newest first."""
    query = select(Hold).where(Hold.customer_id == customer.id)
    if status:
        query = query.where(Hold.status == status)
    with db.read_transaction() as session:
        return paginate(session, query.order_by(Hold.created_at.desc(), Hold.id.desc()), page)


def _own_hold_event_id(customer: User, hold_id: int) -> int:
    event_id = prechecks.own_event_id(Hold, hold_id, customer.id)
    if event_id is None:
        raise HoldNotFound(f"Hold {hold_id} does not exist.")
    return event_id
