"""An event's waiting room as customers and organizers see it: join, poll, leave, stats.

The state is in Redis (services/waitroom.py); the event's settings come from the worker's
snapshot, valid under the change counter the request read with its token (services/admission.py),
so joining and polling cost no database round trip. A poll is that one round trip: the
entry was read in it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from booking_service.errors import Forbidden, NoWaitingRoom, QueueEntryNotFound
from booking_service.models import Event, Role, User
from booking_service.services import prechecks, waitroom
from booking_service.services.snapshots import event_snapshots

# Retry-After bounds for a poll: never sooner than a second, never later than this (polls
# are the hottest request of a rush: far back in the queue, every two minutes is plenty).
MAX_POLL_SECONDS = 120
# A waiting entry polls again after this share of its ETA (the ETA shrinks as it polls).
POLL_SHARE_OF_ETA = 1 / 3
# Polls are spread over +-20% of the suggested wait, so that a crowd that joined together
# does not poll in step.
POLL_JITTER = 0.2


@dataclass(frozen=True)
class QueueEntry:
    """A customer's place in an event's waiting room."""

    event_id: int
    state: str  # waiting, admitted, lapsed, sold_out
    position: int | None  # 1: next in line
    eta_seconds: int | None  # until admission, at the pacer's current rate
    admitted_until: datetime | None
    waitlist: str | None  # where to wait for returned seats once sold out
    retry_after: int  # when to poll again, seconds


def _event(event_id: int, event_version: int | None) -> Event:
    event = prechecks.require_event(
        event_snapshots.settings_of(event_id, version=event_version), event_id
    )
    if not event.waiting_room:
        raise NoWaitingRoom(f"Event {event_id} has no waiting room: hold or book directly.")
    return event


def _entry(event: Event, seen: waitroom.Seen, state: str) -> QueueEntry:
    position = seen.rank + 1 if seen.rank is not None else None
    rate = seen.rate or (event.admit_per_minute / 60 if event.admit_per_minute else None)
    until_sale = 0.0
    if event.sale_starts_at is not None:
        until_sale = max(0.0, (event.sale_starts_at - seen.now).total_seconds())
    eta: float | None = None
    if state == "admitted":
        eta = 0.0
    elif state == "waiting" and position is not None and rate:
        eta = until_sale + position / rate
    if state == "waiting":
        suggested = eta * POLL_SHARE_OF_ETA if eta is not None else (until_sale / 2 or 5)
    elif state == "admitted" and seen.admitted_until is not None:
        suggested = (seen.admitted_until - seen.now).total_seconds()
    else:
        suggested = MAX_POLL_SECONDS
    suggested *= 1 + random.uniform(-POLL_JITTER, POLL_JITTER)
    return QueueEntry(
        event_id=event.id,
        state=state,
        position=position,
        eta_seconds=round(eta) if eta is not None else None,
        admitted_until=seen.admitted_until,
        waitlist=f"/api/v1/events/{event.id}/waitlist" if state == "sold_out" else None,
        retry_after=int(min(MAX_POLL_SECONDS, max(1, round(suggested)))),
    )


def join(
    *,
    customer: User,
    event_id: int,
    event_version: int | None = None,
    queue: waitroom.Seen | None = None,
) -> tuple[QueueEntry, bool]:
    """Join the event's queue: (the entry, whether it is new). A live entry stays as it is.

    ``event_version`` and ``queue``: the change counter and the customer's entry, if the
    request read them; a customer already in the queue then costs no further round trip.
    """
    event = _event(event_id, event_version)
    prechecks.refuse_unless_open(event, prechecks.now())
    if queue is not None and queue.state in ("waiting", "admitted", "sold_out"):
        return _entry(event, queue, queue.state), False
    created, seen = waitroom.join(event, customer.id)
    return _entry(event, seen, seen.state or "waiting"), created


def poll(
    *,
    customer: User,
    event_id: int,
    event_version: int | None = None,
    queue: waitroom.Seen | None = None,
) -> QueueEntry:
    """The customer's entry now (read in the request's own round trip when ``queue``)."""
    event = _event(event_id, event_version)
    seen = queue or waitroom.read(event.id, customer.id)
    if seen.state is None:
        raise QueueEntryNotFound(f"You are not in event {event_id}'s queue.")
    return _entry(event, seen, seen.state)


def leave(*, customer: User, event_id: int, event_version: int | None = None) -> None:
    """Leave the queue (an admission too); joining again goes to the end."""
    event = _event(event_id, event_version)
    if not waitroom.leave(event, customer.id):
        raise QueueEntryNotFound(f"You are not in event {event_id}'s queue.")


def queue_stats(*, actor: User, event_id: int) -> waitroom.QueueStats:
    """Depth, admissions, active shoppers and rate of the event's queue (its organizer, or
    an admin)."""
    event = _event(event_id, event_snapshots.read_version(event_id))
    if actor.role != Role.ADMIN.value and event.organizer_id != actor.id:
        raise Forbidden("Only the event's organizer may see its queue.")
    return waitroom.stats(event)
