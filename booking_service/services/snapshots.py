"""Recent event snapshots, per process, for the cheap rejections before the event lock.

During a sale every booking request first asks "does the event exist, has it started, is it
known to be full?" (docs/architecture.md §5). Reading the event row for each of them costs a
database round trip per request, thousands per second on one row that the seat statement
re-checks anyway.
So a worker reuses snapshots, for as long as each may be trusted in the direction it points.

A stale snapshot is harmless in every direction but one. "Bookable" only sends the request on
to the lock, where the seat statement decides on the locked row (and a refusal there reads the
event afresh), so such a snapshot is kept for up to ``BOOKABLE_MAX_AGE_SECONDS``. "Full" (or
"started") could refuse a seat that was freed meanwhile, so a snapshot rejects only while it is
younger than ``max_age`` (EVENT_SNAPSHOT_MAX_AGE_SECONDS), and this process forgets an event as
soon as it frees a seat on it or edits it. A missing event is never cached. Nothing here can
overbook: a snapshot only ever rejects.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select

from booking_service.extensions import db
from booking_service.models import Event
from booking_service.services import MAX_ID

# Past this many events the whole cache is dropped: one read each brings the hot ones back.
MAX_EVENTS = 10_000
# How long a snapshot that lets bookings through may be reused. Many events with a few
# bookings each (most of a catalogue) would otherwise be read for nearly every request.
BOOKABLE_MAX_AGE_SECONDS = 60.0

_EVENT_BY_ID = select(*Event.__table__.columns).where(Event.id == bindparam("event_id"))


def read_event(event_id: int) -> Event | None:
    """Read the event as it is now (Core, a transient Event: a hot-path read)."""
    if event_id > MAX_ID:
        return None
    with db.single_statement() as connection:
        row = connection.execute(_EVENT_BY_ID, {"event_id": event_id}).one_or_none()
    return None if row is None else Event(**row._asdict())


class EventSnapshots:
    """Snapshots of events by id: refusing while younger than ``max_age``, letting through
    while younger than ``BOOKABLE_MAX_AGE_SECONDS``."""

    def __init__(self) -> None:
        self.max_age = 0.5
        self._snapshots: dict[int, tuple[float, Event]] = {}
        # Bumped by every forget(): a read that was under way meanwhile may predate the change
        # that caused it, so it is returned but not kept.
        self._changes = 0
        self._guard = threading.Lock()

    def configure(self, config: dict[str, Any]) -> None:
        self.max_age = float(config["EVENT_SNAPSHOT_MAX_AGE_SECONDS"])
        self.clear()

    def recent(self, event_id: int) -> Event | None:
        """The event from a recent enough snapshot, else read now; None if it does not exist.

        A snapshot younger than ``max_age`` is used whatever it says; an older one only while
        it still lets a booking through.
        """
        cached = self._snapshots.get(event_id)
        if cached is not None:
            read_at, event = cached
            age = time.monotonic() - read_at
            if age < self.max_age or (
                age < BOOKABLE_MAX_AGE_SECONDS and event.takes_bookings_at(datetime.now(UTC))
            ):
                return event
        return self.fresh(event_id)

    def fresh(self, event_id: int) -> Event | None:
        """The event as it is now, kept for the requests that follow."""
        read_at, changes = time.monotonic(), self._changes
        event = read_event(event_id)
        with self._guard:
            if event is None:
                self._snapshots.pop(event_id, None)
            elif self.max_age > 0 and changes == self._changes:
                if len(self._snapshots) >= MAX_EVENTS:
                    self._snapshots.clear()
                self._snapshots[event_id] = (read_at, event)
        return event

    def forget(self, event_id: int) -> None:
        """Drop the event after this process changed it (call once the change is committed)."""
        with self._guard:
            self._changes += 1
            self._snapshots.pop(event_id, None)

    def clear(self) -> None:
        with self._guard:
            self._changes += 1
            self._snapshots.clear()


event_snapshots = EventSnapshots()
