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
from booking_service.services import history
from booking_service.services.snapshots import event_snapshots

# Seats, bookings and history for a batch of customers in one statement: one round trip and one
# commit while the lock is held, kept as a stored function so that the holder does not plan it
# each time. Per requested customer, in request order, it answers the booking; or
# already_booked (an active booking exists, or the customer asked earlier in the batch); or
# neither: no seat (full, started or gone; the caller then asks why). The free seats are read
# from the statement's snapshot and the seat update re-checks them on the row it locks: if a
# booking that bypassed the lock (a lost lease) took seats in between, the update matches
# nothing and ``raced`` says so; the CHECK on booked_count stands behind both.
TAKE_SEATS = StoredFunction(
    "take_seats",
    f"""
    WITH request AS (
        SELECT customer_id, position
          FROM unnest(CAST(:customer_ids AS bigint[])) WITH ORDINALITY AS r(customer_id, position)
    ), eligible AS (
        SELECT DISTINCT ON (customer_id) customer_id, position
          FROM request
         -- A scalar subquery, not NOT EXISTS: the planner would turn that into an anti-join
         -- reading every active booking of the event; this is one index probe per request.
         WHERE (SELECT 1 FROM bookings
                 WHERE event_id = :event_id AND customer_id = request.customer_id
                   AND status = 'active') IS NULL
         ORDER BY customer_id, position
    ), granted AS (
        SELECT customer_id, position FROM eligible
         ORDER BY position
         LIMIT coalesce((SELECT greatest(capacity - booked_count, 0)
                           FROM events WHERE id = :event_id), 0)
    ), seat AS (
        UPDATE events
           SET booked_count = booked_count + (SELECT count(*) FROM granted), updated_at = now()
         WHERE id = :event_id AND start_time > now()
           AND booked_count + (SELECT count(*) FROM granted) <= capacity
           AND EXISTS (SELECT 1 FROM granted)
     RETURNING id, capacity - booked_count AS seats_left
    ), booking AS (
        INSERT INTO bookings (event_id, customer_id, status, created_at, updated_at)
        SELECT seat.id, granted.customer_id, 'active', now(), now()
          FROM granted CROSS JOIN seat
         ORDER BY granted.position
     RETURNING id, event_id, customer_id, status, created_at, updated_at
    ), entry AS ({
        history.entries_sql(
            rows="booking",
            user_id="customer_id",
            action="create",
            entity_type="booking",
            entity_id="id",
            details=history.booking_details(event_id="event_id"),
        )
    })
    SELECT eligible.position IS NULL AS already_booked,
           EXISTS (SELECT 1 FROM granted) AND NOT EXISTS (SELECT 1 FROM seat) AS raced,
           (SELECT seats_left FROM seat) AS seats_left,
           booking.id, booking.event_id, booking.customer_id, booking.status,
           booking.created_at, booking.updated_at
      FROM request
      LEFT JOIN eligible USING (position)
      LEFT JOIN booking ON booking.customer_id = eligible.customer_id
     ORDER BY request.position
    """,
    returns=(
        "TABLE (already_booked boolean, raced boolean, seats_left integer, id bigint, "
        "event_id bigint, customer_id bigint, status varchar, created_at timestamptz, "
        "updated_at timestamptz)"
    ),
    event_id="bigint",
    customer_ids="bigint[]",
)

_BOOKING_COLUMNS = ("id", "event_id", "customer_id", "status", "created_at", "updated_at")


@dataclass
class SeatRequest:
    """One customer's request for a seat, and its outcome once its batch has run."""

    customer_id: int
    booking: Booking | None = None
    already_booked: bool = False
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def outcome(self, event_id: int) -> Booking | None:
        """The booking; None when there was no seat. Raises the batch's failure, if any."""
        if isinstance(self.error, DomainError):
            # A fresh exception per request: one object raised in several threads would share
            # (and garble) its traceback.
            raise type(self.error)(self.error.detail, errors=self.error.errors)
        if self.error is not None:
            raise self.error
        if self.already_booked:
            raise AlreadyBooked(f"You already have an active booking for event {event_id}.")
        return self.booking


def take_seats(event_id: int, requests: list[SeatRequest]) -> None:
    """Run the seat statement for requests in arrival order, filling in each one's outcome."""
    try:
        # One statement, so its own transaction: one round trip (no BEGIN, no COMMIT) while
        # every other booking of the event waits.
        with db.single_write() as connection:
            rows = TAKE_SEATS.execute(
                connection,
                {"event_id": event_id, "customer_ids": [r.customer_id for r in requests]},
            ).all()
    except IntegrityError as error:
        # Only without the lock's serialization (a lost lease, LOCK_STRATEGY=none): another
        # transaction booked one of these customers after this statement's snapshot.
        if len(requests) > 1:
            _one_at_a_time(event_id, requests)
            return
        if is_one_active_violation(error):
            requests[0].already_booked = True
            return
        raise
    if len(requests) > 1 and rows[0].raced:
        # Nothing was written (the seat update matched no row); alone, each gets an exact answer.
        _one_at_a_time(event_id, requests)
        return
    if rows[0].seats_left == 0:
        # This statement took the last seat: drop the snapshot that still shows free seats,
        # so that the requests behind it learn "sold out" before the lock.
        event_snapshots.forget(event_id)
    for request, row in zip(requests, rows, strict=True):
        request.already_booked = row.already_booked
        if row.id is not None:
            request.booking = Booking(**{name: getattr(row, name) for name in _BOOKING_COLUMNS})


def _one_at_a_time(event_id: int, requests: list[SeatRequest]) -> None:
    for request in requests:
        take_seats(event_id, [request])


def is_one_active_violation(error: IntegrityError) -> bool:
    """True when the error is the partial unique index: an active booking already exists."""
    diag = getattr(error.orig, "diag", None)
    return getattr(diag, "constraint_name", None) == ONE_ACTIVE_BOOKING_INDEX


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

    def take(self, *, event_id: int, customer_id: int) -> Booking | None:
        """Take a seat for the customer: the booking, or None when no seat was free."""
        request = SeatRequest(customer_id)
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
