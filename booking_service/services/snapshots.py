"""Event snapshots, per process, for the cheap rejections before the event lock; exact.

During a sale every booking request first asks "does the event exist, has it started, is it
known to be full?" (docs/architecture.md, "Event snapshots"). Reading the event row for each
of them costs a database round trip per request, thousands per second on one row that the seat
statement re-checks anyway. So a worker reuses snapshots, trusting each only in the direction where
staleness is harmless, or where it can prove it is not stale:

- "Bookable" only sends the request on to the lock, where the seat statement decides on the
  locked row (and a refusal there reads the event afresh): such a snapshot is reused for up to
  ``BOOKABLE_MAX_AGE_SECONDS``.
- "Full" or "started" refuses, so it must not be stale: every change that could let a booking
  through (a seat freed, capacity or start time changed, the event deleted) bumps the event's
  change counter in Redis (``event-version:{<id>}``) after it commits and before it answers.
  A snapshot remembers the counter as read *before* its database read, and refuses only while
  the counter a request reads now is the same (and the snapshot younger than ``max_age``,
  EVENT_SNAPSHOT_MAX_AGE_SECONDS, which bounds what changes made outside the service can do).
  So a request that starts after another request freed a seat, through any worker of any
  instance, never gets ``event_full`` from a snapshot. The counter costs no round trip of its
  own: a booking reads it with its session lookup (services/admission.py).
- When the counter cannot be read (Redis unreachable), no snapshot refuses; the event is read.

A missing event is never cached. Nothing here can overbook: a snapshot only ever rejects.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select

from booking_service.database import db
from booking_service.models import LAPSED_HOLD_SEATS, Event
from booking_service.redis_clients import REDIS_ERRORS, redis_client
from booking_service.services import MAX_ID

log = logging.getLogger(__name__)

# Past this many events the whole cache is dropped: one read each brings the hot ones back.
MAX_EVENTS = 10_000
# How long a snapshot that lets bookings through may be reused. Many events with a few
# bookings each (most of a catalogue) would otherwise be read for nearly every request.
BOOKABLE_MAX_AGE_SECONDS = 60.0
# A counter untouched this long is dropped (read as 0 afterwards, which no snapshot older
# than max_age can match anyway).
VERSION_KEY_SECONDS = 7 * 24 * 3600

# With the seats of holds past their expiry, which every read leaves out (Event.seats_held).
_EVENT_BY_ID = select(*Event.__table__.columns, LAPSED_HOLD_SEATS.label("lapsed_hold_seats")).where(
    Event.id == bindparam("event_id")
)


def version_key(event_id: int) -> str:
    # The event id as hash tag: the same slot as the event's lock keys (locking.py).
    return f"event-version:{{{event_id}}}"


def read_event(event_id: int) -> Event | None:
    """Read the event as it is now (Core, a transient Event: a hot-path read)."""
    if event_id > MAX_ID:
        return None
    with db.single_statement() as connection:
        row = connection.execute(_EVENT_BY_ID, {"event_id": event_id}).one_or_none()
    return None if row is None else Event(**row._asdict())


class EventSnapshots:
    """Snapshots of events by id, each with the change counter read before it."""

    def __init__(self) -> None:
        self.max_age = 0.5
        # event id -> (monotonic time read, event, change counter read before the event)
        self._snapshots: dict[int, tuple[float, Event, int | None]] = {}
        # Bumped by every local change: a read that was under way meanwhile is not kept.
        self._changes = 0
        self._guard = threading.Lock()

    def configure(self, config: dict[str, Any]) -> None:
        self.max_age = float(config["EVENT_SNAPSHOT_MAX_AGE_SECONDS"])
        self.clear()

    # --- the change counter --------------------------------------------------------------

    @staticmethod
    def version_command(event_id: int) -> tuple[str, str]:
        """The read of the event's change counter, for a caller's round trip."""
        return ("GET", version_key(event_id))

    @staticmethod
    def version_from(reply: bytes | None) -> int:
        return int(reply or 0)

    def read_version(self, event_id: int) -> int | None:
        """The event's change counter now; None when Redis did not answer."""
        try:
            return self.version_from(redis_client.get().get(version_key(event_id)))
        except REDIS_ERRORS:
            return None

    def announce(self, event_id: int) -> None:
        """Tell every worker the event changed so that a booking may now succeed.

        Call after the change is committed and before it is answered. If Redis does not
        answer, snapshots elsewhere may refuse for up to ``max_age`` (logged); the change
        itself stands.
        """
        self.forget(event_id)
        try:
            pipe = redis_client.get().pipeline(transaction=False)
            pipe.incr(version_key(event_id))
            pipe.expire(version_key(event_id), VERSION_KEY_SECONDS)
            pipe.execute()
        except REDIS_ERRORS:
            log.warning("event change not announced: event=%s", event_id)

    # --- snapshots -------------------------------------------------------------------------

    def recent(self, event_id: int, *, version: int | None = None, seats: int = 1) -> Event | None:
        """The event from a snapshot that may answer for it, else read now; None if missing.

        ``version``: the change counter the request read (None: unknown). A snapshot that
        would refuse ``seats`` answers only with the same counter; one that lets the request
        through, for up to a minute.
        """
        cached = self._snapshots.get(event_id)
        if cached is not None:
            read_at, event, read_version = cached
            age = time.monotonic() - read_at
            if event.takes_bookings_at(datetime.now(UTC), seats):
                # A known counter that moved means the event changed (a waiting room or sale
                # start set, say, which refuses): read again.
                if age < BOOKABLE_MAX_AGE_SECONDS and version in (None, read_version):
                    return event
            elif age < self.max_age and version is not None and version == read_version:
                return event
        return self.fresh(event_id, version=version)

    def settings_of(self, event_id: int, *, version: int | None) -> Event | None:
        """The event for its settings only (the waiting room's; services/queue.py): any
        snapshot read under the same change counter, which every edit of an event bumps, is
        as good as a read, for up to a minute whichever way its seats stand."""
        cached = self._snapshots.get(event_id)
        if cached is not None and version is not None:
            read_at, event, read_version = cached
            if version == read_version and time.monotonic() - read_at < BOOKABLE_MAX_AGE_SECONDS:
                return event
        return self.fresh(event_id, version=version)

    def fresh(self, event_id: int, *, version: int | None = None) -> Event | None:
        """The event as it is now, kept for the requests that follow.

        ``version``: the change counter, if the caller read it before calling; else read here,
        before the event.
        """
        read_at, changes = time.monotonic(), self._changes
        if version is None:
            version = self.read_version(event_id)
        event = read_event(event_id)
        with self._guard:
            if event is None:
                self._snapshots.pop(event_id, None)
            elif self.max_age > 0 and changes == self._changes:
                if len(self._snapshots) >= MAX_EVENTS:
                    self._snapshots.clear()
                self._snapshots[event_id] = (read_at, event, version)
        return event

    def forget(self, event_id: int) -> None:
        """Drop the event here (this process changed it, e.g. took its last seat)."""
        with self._guard:
            self._changes += 1
            self._snapshots.pop(event_id, None)

    def clear(self) -> None:
        with self._guard:
            self._changes += 1
            self._snapshots.clear()


event_snapshots = EventSnapshots()
