"""Taking seats on an event, with group commit for the requests that queue for it together.

With the event lock, a hot event's transactions run strictly one after another, and each pays
its own WAL flush: PostgreSQL cannot group commits that never overlap. So bookings of the same
event that queue in the same process form a batch behind the first of them, the leader. The
leader takes the event lock, runs ``TAKE_SEATS`` once for the whole batch, commits once,
releases the lock and hands every request its own outcome.

Every guarantee stays per request: seats go in arrival order; each booking still passes the
conditional seat update, the ``CHECK`` on ``booked_count`` and the partial unique index; and a
batch that fails is retried one request at a time, so one request cannot fail its neighbours.
A batch is never larger than the threads of one process that wait for the event at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError

from booking_service import metrics
from booking_service.errors import AlreadyBooked, DomainError
from booking_service.extensions import StoredFunction, db
from booking_service.locking import locks
from booking_service.models import ONE_ACTIVE_BOOKING_INDEX, Booking
from booking_service.services import history, seating
from booking_service.services.snapshots import event_snapshots

# Seats, bookings and history for a batch of requests in one call: one round trip and one
# commit while the lock is held, a stored function whose plans PostgreSQL keeps. It locks the
# event row first, so whatever else changes the event's seats (cancel, a hold, a booking that
# bypassed the Redis lock after losing its lease) runs strictly before or after it. Then, per
# request in arrival order, all or nothing: the booking of the seats asked for; or
# already_booked (an active booking exists, or the customer asked earlier in the batch); or no
# booking, with ``available`` the seats a newcomer could have had (the caller explains). Free
# seats are capacity - booked - held; none while anyone waits on the waitlist (its turn comes
# first, services/waitlist.py); holds past their expiry give theirs back first, here and now,
# unless someone waits (then the sweeper offers them to the waitlist).
_BOOKING_HISTORY = history.entries_sql(
    rows="(SELECT b.id AS id, b.customer_id AS customer_id, b.event_id AS event_id, "
    "b.seats AS seats) AS booking",
    user_id="customer_id",
    action="create",
    entity_type="booking",
    entity_id="id",
    details=history.seat_details(event_id="event_id", seats="seats"),
)
_LAPSED_HOLD_HISTORY = history.entries_sql(
    rows="lapsed",
    user_id="customer_id",
    action="expire",
    entity_type="hold",
    entity_id="id",
    details=history.seat_details(event_id="event_id", seats="seats"),
)
TAKE_SEATS = StoredFunction(
    "take_seats",
    body=f"""
DECLARE
    ev events%ROWTYPE;
    b bookings%ROWTYPE;
    free integer := 0;
    reclaimed integer := 0;
    taken integer := 0;
    seen bigint[] := '{{}}';
BEGIN
    SELECT * INTO ev FROM events WHERE id = p_event_id FOR UPDATE;
    IF FOUND AND ev.start_time > now() THEN
        IF ev.waitlist_length = 0 THEN
            WITH lapsed AS (
                UPDATE holds SET status = 'expired', updated_at = now()
                 WHERE event_id = p_event_id AND status = 'held' AND expires_at <= now()
             RETURNING id, customer_id, event_id, seats, waitlist_entry_id
            ), offer AS (
                UPDATE waitlist_entries SET status = 'expired', updated_at = now()
                 WHERE id IN (SELECT waitlist_entry_id FROM lapsed)
            ), entry AS ({_LAPSED_HOLD_HISTORY})
            SELECT coalesce(sum(seats), 0) INTO reclaimed FROM lapsed;
            free := ev.capacity - ev.booked_count - ev.held_count + reclaimed;
        END IF;
    END IF;
    FOR i IN 1 .. cardinality(p_customer_ids) LOOP
        IF p_customer_ids[i] = ANY(seen) OR EXISTS (
            SELECT 1 FROM bookings
             WHERE event_id = p_event_id AND customer_id = p_customer_ids[i]
               AND status = 'active'
        ) THEN
            RETURN QUERY SELECT true, free, NULL::bigint, NULL::bigint, NULL::bigint,
                NULL::varchar, NULL::integer, NULL::timestamptz, NULL::timestamptz;
        ELSIF p_seats[i] <= free THEN
            INSERT INTO bookings (event_id, customer_id, status, seats, created_at, updated_at)
            VALUES (p_event_id, p_customer_ids[i], 'active', p_seats[i], now(), now())
            RETURNING * INTO b;
            {_BOOKING_HISTORY};
            free := free - p_seats[i];
            taken := taken + p_seats[i];
            RETURN QUERY SELECT false, free, b.id, b.event_id, b.customer_id, b.status,
                b.seats, b.created_at, b.updated_at;
        ELSE
            RETURN QUERY SELECT false, free, NULL::bigint, NULL::bigint, NULL::bigint,
                NULL::varchar, NULL::integer, NULL::timestamptz, NULL::timestamptz;
        END IF;
        seen := seen || p_customer_ids[i];
    END LOOP;
    IF taken > 0 OR reclaimed > 0 THEN
        UPDATE events
           SET booked_count = booked_count + taken, held_count = held_count - reclaimed,
               updated_at = now()
         WHERE id = p_event_id;
    END IF;
END""",
    returns=(
        "TABLE (already_booked boolean, available integer, id bigint, event_id bigint, "
        "customer_id bigint, status varchar, seats integer, created_at timestamptz, "
        "updated_at timestamptz)"
    ),
    event_id="bigint",
    customer_ids="bigint[]",
    seats="integer[]",
)

_BOOKING_COLUMNS = (
    "id", "event_id", "customer_id", "status", "seats", "created_at", "updated_at"
)  # fmt: skip


@dataclass
class SeatRequest:
    """One customer's request for seats, and its outcome once its batch has run."""

    customer_id: int
    seats: int = 1
    booking: Booking | None = None
    available: int = 0  # without a booking: the seats a newcomer could have had
    already_booked: bool = False
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def outcome(self, event_id: int) -> SeatRequest:
        """This request, answered: ``booking``, or None and ``available`` when there was no
        seat. Raises the batch's failure, if any, or AlreadyBooked."""
        if isinstance(self.error, DomainError):
            # A fresh exception per request: one object raised in several threads would share
            # (and garble) its traceback.
            raise type(self.error)(
                self.error.detail, errors=self.error.errors, **self.error.extensions
            )
        if self.error is not None:
            raise self.error
        if self.already_booked:
            raise AlreadyBooked(
                f"You already have an active booking for event {event_id}; change its seats "
                "with PATCH /api/v1/bookings/{id}."
            )
        return self


def take_seats(event_id: int, requests: list[SeatRequest]) -> None:
    """Run the seat statement for requests in arrival order, filling in each one's outcome."""
    try:
        # One statement, so its own transaction: one round trip (no BEGIN, no COMMIT) while
        # every other booking of the event waits.
        with db.single_write() as connection:
            rows = TAKE_SEATS.execute(
                connection,
                {
                    "event_id": event_id,
                    "customer_ids": [r.customer_id for r in requests],
                    "seats": [r.seats for r in requests],
                },
            ).all()
    except IntegrityError as error:
        # Only if a writer that skips the event row lock booked one of these customers
        # meanwhile (none of the service's does): alone, each request gets an exact answer.
        if len(requests) > 1:
            for request in requests:
                take_seats(event_id, [request])
            return
        if is_one_active_violation(error):
            requests[0].already_booked = True
            return
        raise
    if rows and rows[-1].available == 0:
        # The last seat is gone: drop the snapshot that still shows free seats, so that the
        # requests behind this batch learn "sold out" before the lock.
        event_snapshots.forget(event_id)
    for request, row in zip(requests, rows, strict=True):
        request.already_booked = row.already_booked
        request.available = row.available
        if row.id is not None:
            request.booking = Booking(**{name: getattr(row, name) for name in _BOOKING_COLUMNS})


def is_one_active_violation(error: IntegrityError) -> bool:
    """True when the error is the partial unique index: an active booking already exists."""
    return seating.violates(error, ONE_ACTIVE_BOOKING_INDEX)


class SeatQueue:
    """Per process: joins requests for the same event into batches that share one lock hold."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        # Per event, the batch still open for joining: its leader is waiting for the lock.
        self._open: dict[int, list[SeatRequest]] = {}
        self.max_batch = 16

    def configure(self, config: dict[str, Any]) -> None:
        # Without the lock there is no leader to wait behind: every request runs on its own.
        self.max_batch = 1 if config["LOCK_STRATEGY"] == "none" else int(config["SEAT_BATCH_MAX"])

    def take(self, *, event_id: int, customer_id: int, seats: int = 1) -> SeatRequest:
        """Take ``seats`` for the customer, all or none: the answered request."""
        request = SeatRequest(customer_id, seats)
        with self._guard:
            batch = self._open.get(event_id)
            leads = batch is None or len(batch) >= self.max_batch
            if leads:
                batch = [request]
                if self.max_batch > 1:
                    self._open[event_id] = batch
            else:
                batch.append(request)
        if leads:
            self._lead(event_id, batch)  # raises the batch's failure itself
        else:
            # No timeout: the leader always finishes (bounded lock wait, statement timeout) and
            # gives up on nobody; a follower leaving early could get a 503 for a committed seat.
            request.done.wait()
        return request.outcome(event_id)

    def _lead(self, event_id: int, batch: list[SeatRequest]) -> None:
        try:
            with locks.hold(event_id) as holding:
                self._close(event_id, batch)
                holding.requests = len(batch)
                metrics.seat_batch_size.observe(len(batch))
                take_seats(event_id, batch)
        except BaseException as error:
            self._close(event_id, batch)
            for request in batch[1:]:
                request.error = error
            raise
        finally:
            for request in batch[1:]:
                request.done.set()

    def _close(self, event_id: int, batch: list[SeatRequest]) -> None:
        """Stop the batch taking joiners: later requests form the next batch behind the lock."""
        with self._guard:
            if self._open.get(event_id) is batch:
                del self._open[event_id]


seat_queue = SeatQueue()
