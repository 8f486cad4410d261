"""The seat ledger: the one way seats change (docs/architecture.md, "The seat ledger").

Every seat change is an *intent* (book, reactivate, change, cancel, delete, hold, confirm,
release, expire, join, leave, capacity) applied by one stored function (services/ledger_sql.py)
to its event's locked row, where the rules are written once. This module owns the rest:

- the group commit: intents of one event that find its lock taken queue for whoever holds
  it, on any instance, which applies them in batches, one round trip and one commit each,
  and hands every request its own outcome (``run``, through ``combining.Combiner``);
- the outcome of each intent, as the services' objects or their domain errors;
- what follows a commit: the change counter announced whenever seats came free, the snapshot
  of a sold-out event dropped, the metrics of holds and offers.

No other module computes free seats, offers seats to the waitlist or announces a change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from booking_service import metrics
from booking_service.combining import Combiner
from booking_service.database import db
from booking_service.errors import (
    AlreadyActive,
    AlreadyBooked,
    AlreadyWaiting,
    BookingNotFound,
    CapacityBelowBookings,
    DbUnavailable,
    DomainError,
    EventEnded,
    EventFull,
    EventNotFound,
    EventStarted,
    HoldExists,
    HoldExpired,
    HoldLimitReached,
    HoldNotFound,
    HoldNotHeld,
    LockTimeout,
    LockUnavailable,
    NotActive,
    OutcomeUnknown,
    SeatsAvailable,
    TooManySeats,
)
from booking_service.locking import locks
from booking_service.models import Booking, Hold, SeatIntent
from booking_service.services import prechecks
from booking_service.services.ledger_sql import APPLY_INTENTS
from booking_service.services.snapshots import event_snapshots

# Intents that only ever free seats: when the lock service is unreachable they are applied on
# the event's row lock alone, which orders them with every other change; the rest fail closed.
FREEING = frozenset({"cancel", "delete", "release", "leave"})


class LedgerSettings:
    """HOLD_TTL_SECONDS, WAITLIST_OFFER_TTL_SECONDS, MAX_HELD_SEATS_PER_CUSTOMER."""

    hold_ttl = timedelta(seconds=600)
    offer_ttl = timedelta(seconds=1800)
    max_held_seats = 20


settings = LedgerSettings()


def intent(kind: str, *, customer_id: int | None = None, **fields: int) -> dict[str, Any]:
    """A new intent with its unique id (journaled with its outcome: docs/architecture.md,
    "The seat ledger")."""
    return {"id": uuid.uuid4().hex, "kind": kind, "customer": customer_id, **fields}


# --- applying a batch --------------------------------------------------------------------


@dataclass
class Summary:
    """What one applied batch left behind, for what follows its commit."""

    free: int
    freed: bool
    expired: int = 0
    offers: int = 0
    conversions: int = 0
    lapsed_since: str | None = None


def apply(
    connection: Connection, event_id: int, intents: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], Summary]:
    """Apply the intents in order on ``connection`` (the caller's transaction): one outcome
    per intent, and the batch's summary."""
    rows = APPLY_INTENTS.execute(
        connection,
        {
            "event_id": event_id,
            "intents": json.dumps(intents),
            "hold_ttl": settings.hold_ttl,
            "offer_ttl": settings.offer_ttl,
            "max_held": settings.max_held_seats,
        },
    ).all()
    by_id = {row.intent_id: row.outcome for row in rows if row.intent_id is not None}
    summaries = [row.outcome for row in rows if row.intent_id is None]
    summary = Summary(**summaries[0]) if summaries else Summary(free=0, freed=False)
    return [by_id[item["id"]] for item in intents], summary


def published(event_id: int, summary: Summary) -> None:
    """After a batch committed: announce freed seats, drop a sold-out snapshot, count."""
    if summary.freed:
        event_snapshots.announce(event_id)  # the freed seats count at once, everywhere
    elif summary.free <= 0:
        event_snapshots.forget(event_id)  # the last seats went: say so before the lock
    if summary.expired:
        metrics.holds_total.labels(outcome="expired").inc(summary.expired)
    if summary.offers:
        metrics.waitlist_offers_total.inc(summary.offers)
        metrics.holds_total.labels(outcome="created").inc(summary.offers)
        since = datetime.fromisoformat(summary.lapsed_since) if summary.lapsed_since else None
        waited = (prechecks.now() - since).total_seconds() if since else 0.0
        metrics.seat_freed_to_offer_seconds.observe(max(0.0, waited))
    if summary.conversions:
        metrics.waitlist_conversions_total.inc(summary.conversions)


# --- outcomes ------------------------------------------------------------------------------


def booking_of(outcome: dict[str, Any]) -> Booking:
    return Booking(**_row(outcome["booking"]))


def hold_of(outcome: dict[str, Any]) -> Hold:
    return Hold(**_row(outcome["hold"]))


_TIMES = ("created_at", "updated_at", "expires_at")


def _row(data: dict[str, Any]) -> dict[str, Any]:
    return {
        key: datetime.fromisoformat(value) if key in _TIMES and value else value
        for key, value in data.items()
    }


# What each kind of intent can be refused with (the statement decides; the views document it).
_EVENT = (EventNotFound, EventEnded, EventStarted)
REFUSALS_BY_KIND: dict[str, tuple[type[DomainError], ...]] = {
    "book": (*_EVENT, TooManySeats, AlreadyBooked, EventFull),
    "reactivate": (
        EventEnded,
        EventStarted,
        BookingNotFound,
        AlreadyActive,
        TooManySeats,
        AlreadyBooked,
        EventFull,
    ),
    "change": (EventEnded, EventStarted, BookingNotFound, NotActive, TooManySeats, EventFull),
    "cancel": (EventEnded, EventStarted, BookingNotFound, NotActive),
    "delete": (EventEnded, EventStarted, BookingNotFound),
    "hold": (*_EVENT, TooManySeats, EventFull, HoldExists, HoldLimitReached),
    "confirm": (*_EVENT, HoldNotFound, HoldExpired, HoldNotHeld, TooManySeats),
    "release": (EventNotFound, HoldNotFound, HoldNotHeld),
    "join": (*_EVENT, TooManySeats, AlreadyWaiting, HoldExists, SeatsAvailable),
    "leave": (EventNotFound,),
    "capacity": (EventNotFound, CapacityBelowBookings),
    "expire": (EventNotFound,),
}


def refusal(outcome: dict[str, Any], intent_: dict[str, Any], event_id: int) -> DomainError | None:
    """The domain error an outcome stands for (None when the intent was carried out)."""
    code = outcome.get("error")
    if code is None:
        return None
    return _REFUSALS[code](outcome, intent_, event_id)


def _full(outcome: dict[str, Any], intent_: dict[str, Any], event_id: int) -> DomainError:
    if outcome.get("waitlist_length"):
        return EventFull(
            f"Event {event_id} has a waitlist: seats that come free are offered there first. "
            "Join it with POST /api/v1/events/{id}/waitlist.",
            available_slots=0,
            waitlist_length=outcome["waitlist_length"],
        )
    asked = f"; {intent_['seats']} asked for" if intent_.get("seats") else ""
    return EventFull(
        f"Event {event_id} has {outcome['available']} free seat(s){asked}.",
        available_slots=outcome["available"],
    )


_REFUSALS: dict[str, Any] = {
    # Only ever the stored answer to a replay of an intent its own request gave up on.
    "withdrawn": lambda o, i, e: LockTimeout(f"Event {e} stayed locked; nothing was written."),
    # A booking's event gone since its booking was read: the booking went with it.
    "event_not_found": lambda o, i, e: (
        BookingNotFound(f"Booking {i['booking']} does not exist.")
        if "booking" in i
        else EventNotFound(f"Event {e} does not exist.")
    ),
    "event_ended": lambda o, i, e: EventEnded(f"Event {e} has ended."),
    "event_started": lambda o, i, e: EventStarted(f"Event {e} has started; bookings are closed."),
    "too_many_seats": lambda o, i, e: TooManySeats(
        f"Event {e} allows at most {o['max']} seats per customer, booked and held together.",
        max_seats_per_booking=o["max"],
    ),
    "already_booked": lambda o, i, e: AlreadyBooked(
        f"You already have an active booking for event {e}; change its seats "
        "with PATCH /api/v1/bookings/{id}."
    ),
    "event_full": _full,
    "booking_not_found": lambda o, i, e: BookingNotFound(
        f"Booking {i.get('booking')} does not exist."
    ),
    "already_active": lambda o, i, e: AlreadyActive(f"Booking {i['booking']} is already active."),
    "not_active": lambda o, i, e: NotActive(f"Booking {i['booking']} is cancelled."),
    "hold_not_found": lambda o, i, e: HoldNotFound(f"Hold {i['hold']} does not exist."),
    "hold_expired": lambda o, i, e: HoldExpired(f"Hold {i['hold']} expired at {o['expires_at']}."),
    "hold_not_held": lambda o, i, e: HoldNotHeld(f"Hold {i['hold']} is {o['status']}."),
    "hold_exists": lambda o, i, e: HoldExists(
        f"You already hold seats on event {e}: confirm or release that hold."
    ),
    "hold_limit_reached": lambda o, i, e: HoldLimitReached(
        f"You hold {o['held']} seat(s) across events; at most {o['limit']} may be held at once. "
        "Confirm or release a hold first.",
        max_held_seats=o["limit"],
        held_seats=o["held"],
    ),
    "already_waiting": lambda o, i, e: AlreadyWaiting(
        f"You are already on event {e}'s waitlist (entry {o['entry']})."
    ),
    "seats_available": lambda o, i, e: SeatsAvailable(
        f"Event {e} has {o['available']} free seat(s): book or hold them instead.",
        available_slots=o["available"],
    ),
    "capacity_below_bookings": lambda o, i, e: CapacityBelowBookings(
        f"{o['booked']} seats are booked and {o['held']} held; capacity cannot go below that."
    ),
}


def outcome_of(outcome: dict[str, Any], intent_: dict[str, Any], event_id: int) -> dict[str, Any]:
    """The outcome of a carried-out intent, or raise its refusal."""
    error = refusal(outcome, intent_, event_id)
    if error is not None:
        raise error
    return outcome


def purge_journal(*, older_than: timedelta, batch_size: int = 1000) -> int:
    """Delete journal rows older than ``older_than``, a batch per transaction; how many."""
    deleted = 0
    while True:
        with db.transaction() as session:
            oldest = (
                select(SeatIntent.id)
                .where(SeatIntent.created_at < func.now() - older_than)
                .limit(batch_size)
            )
            count = session.execute(delete(SeatIntent).where(SeatIntent.id.in_(oldest))).rowcount
        deleted += count
        if count < batch_size:
            return deleted


def applied_outcome(intent_id: str) -> dict[str, Any] | None:
    """The journaled outcome of an intent, None if it was never applied."""
    with db.read_transaction() as session:
        return session.scalar(select(SeatIntent.outcome).where(SeatIntent.id == intent_id))


# --- the group commit, across instances ------------------------------------------------------

# Intents of every instance that find an event's lock taken queue in Redis; the holder applies
# them in batches (docs/architecture.md, "Combining across instances").
combiner = Combiner("seat")


def configure(config: dict[str, Any]) -> None:
    settings.hold_ttl = timedelta(seconds=config["HOLD_TTL_SECONDS"])
    settings.offer_ttl = timedelta(seconds=config["WAITLIST_OFFER_TTL_SECONDS"])
    settings.max_held_seats = int(config["MAX_HELD_SEATS_PER_CUSTOMER"])
    combiner.batch_max = int(config["SEAT_BATCH_MAX"])


def run(event_id: int, intent_: dict[str, Any]) -> dict[str, Any]:
    """Apply one intent under the event lock, alone or in a batch with everyone else's that
    queued for the event: its outcome, refusals included (``outcome_of`` raises them)."""
    try:
        return combiner.submit(
            event_id,
            intent_,
            apply_batch=partial(_apply_batch, event_id),
            lookup=_lookup,
            withdraw=partial(_withdraw, event_id),
        )
    except LockUnavailable:
        if intent_["kind"] not in FREEING:
            raise  # this intent needs the lock: 503
        # Redis is unreachable: an intent that only frees seats runs on the row lock alone,
        # which orders it with every other change. Had a holder applied it already, the
        # journal answers with that outcome and nothing changes twice.
        return _apply_batch(event_id, [intent_])[0]


def submit(event_id: int, intent_: dict[str, Any]) -> dict[str, Any]:
    """Apply one intent (``run``); its outcome, or raise its refusal."""
    return outcome_of(run(event_id, intent_), intent_, event_id)


def _apply_batch(event_id: int, intents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One batch in one statement, so its own transaction: one round trip (no BEGIN, no
    COMMIT) while every other change of the event waits; then what follows the commit."""
    with db.single_write() as connection:
        outcomes, summary = apply(connection, event_id, intents)
    metrics.seat_batch_size.observe(len(intents))
    published(event_id, summary)
    return outcomes


# What a withdrawn intent's journal entry says: it was given up and will never be applied.
WITHDRAWN = {"error": "withdrawn"}


@contextmanager
def _asking_the_journal() -> Iterator[None]:
    """A request asking the journal what became of its intent: without a database, nobody
    can say (503 outcome_unknown, the only answer that is not definite)."""
    try:
        yield
    except DbUnavailable as error:
        raise OutcomeUnknown(
            "The database could not be reached to learn whether this change was made."
        ) from error


def _withdraw(event_id: int, intent_: dict[str, Any]) -> dict[str, Any] | None:
    """Fence the intent off in the journal (None: it will never be applied), unless it was
    applied first (its outcome). The journal's primary key decides between the two."""
    fence = (
        pg_insert(SeatIntent)
        .values(id=intent_["id"], event_id=event_id, kind=intent_["kind"], outcome=WITHDRAWN)
        .on_conflict_do_nothing(index_elements=[SeatIntent.id])
        .returning(SeatIntent.id)
    )
    with _asking_the_journal(), db.transaction() as session:
        if session.execute(fence).first() is not None:
            return None
        stored = session.scalar(select(SeatIntent.outcome).where(SeatIntent.id == intent_["id"]))
    return None if stored == WITHDRAWN else stored


def _lookup(intent_id: str) -> dict[str, Any] | None:
    """The journaled outcome of an intent whose holder left without answering."""
    with _asking_the_journal():
        return applied_outcome(intent_id)


# --- changes beside other writes -----------------------------------------------------------


@dataclass
class EventChange:
    """An event's transaction where the ledger's intents run beside other writes of the
    caller (an event's edit): ``apply`` raises refusals; the commit publishes."""

    session: Session
    event_id: int
    summaries: list[Summary] = field(default_factory=list)

    def apply(self, intent_: dict[str, Any]) -> dict[str, Any]:
        outcomes, summary = apply(self.session.connection(), self.event_id, [intent_])
        self.summaries.append(summary)
        return outcome_of(outcomes[0], intent_, self.event_id)


@contextmanager
def event_change(event_id: int) -> Iterator[EventChange]:
    """A transaction on the event for intents beside the caller's other writes (an event's
    edit or deletion); after the commit, the change is announced and what the intents left
    behind is published."""
    with db.transaction() as session:
        change = EventChange(session, event_id)
        yield change
    for summary in change.summaries:
        published(event_id, summary)
    event_snapshots.announce(event_id)  # new times, limits or seats count at once, everywhere


@contextmanager
def locked_event_change(event_id: int) -> Iterator[EventChange]:
    """``event_change`` under the event's lock, for a change of its seats (capacity)."""
    with locks.locked(event_id), event_change(event_id) as change:
        yield change
