"""Reconciliation: do the events' counters match their booking, hold and waitlist rows?"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from booking_service.database import db

# Full scans on purpose: this is the out-of-band audit, never the booking path.
COUNT_DRIFT_SQL = text(
    """
    WITH booked AS (
        SELECT event_id, sum(seats) AS seats FROM bookings WHERE status = 'active'
         GROUP BY event_id
    ), held AS (
        SELECT event_id, sum(seats) AS seats FROM holds WHERE status = 'held'
         GROUP BY event_id
    ), waiting AS (
        SELECT event_id, count(*) AS entries FROM waitlist_entries WHERE status = 'waiting'
         GROUP BY event_id
    )
    SELECT e.id, e.capacity, e.booked_count, e.held_count, e.waitlist_length,
           coalesce(booked.seats, 0) AS booked_rows,
           coalesce(held.seats, 0) AS held_rows,
           coalesce(waiting.entries, 0) AS waiting_rows
      FROM events e
      LEFT JOIN booked ON booked.event_id = e.id
      LEFT JOIN held ON held.event_id = e.id
      LEFT JOIN waiting ON waiting.event_id = e.id
     WHERE e.booked_count <> coalesce(booked.seats, 0)
        OR e.held_count <> coalesce(held.seats, 0)
        OR e.waitlist_length <> coalesce(waiting.entries, 0)
        OR coalesce(booked.seats, 0) + coalesce(held.seats, 0) > e.capacity
     ORDER BY e.id
    """
)
DUPLICATE_ACTIVE_SQL = text(
    """
    SELECT event_id, customer_id, count(*) AS active_rows
      FROM bookings
     WHERE status = 'active'
     GROUP BY event_id, customer_id
    HAVING count(*) > 1
    """
)
# An offered entry has exactly one live hold, and a live hold made for an entry belongs to an
# offered one; a converted entry's hold was confirmed.
OFFER_MISMATCH_SQL = text(
    """
    SELECT w.event_id, w.id, w.status, count(h.id) FILTER (WHERE h.status = 'held') AS live,
           count(h.id) FILTER (WHERE h.status = 'confirmed') AS confirmed
      FROM waitlist_entries w
      LEFT JOIN holds h ON h.waitlist_entry_id = w.id
     GROUP BY w.event_id, w.id, w.status
    HAVING (w.status = 'offered') <> (count(h.id) FILTER (WHERE h.status = 'held') = 1)
        OR count(h.id) FILTER (WHERE h.status = 'held') > 1
        OR (w.status = 'converted' AND count(h.id) FILTER (WHERE h.status = 'confirmed') <> 1)
     ORDER BY w.event_id, w.id
    """
)


@dataclass(frozen=True)
class Drift:
    event_id: int
    problem: str


def find_drift() -> list[Drift]:
    """Return every event whose counters or rows break an invariant (empty list: all good)."""
    drift: list[Drift] = []
    with db.read_transaction() as session:
        for row in session.execute(COUNT_DRIFT_SQL):
            drift.append(
                Drift(
                    row.id,
                    f"booked_count={row.booked_count} held_count={row.held_count} "
                    f"waitlist_length={row.waitlist_length} but the rows have "
                    f"{row.booked_rows} booked, {row.held_rows} held, {row.waiting_rows} "
                    f"waiting (capacity {row.capacity})",
                )
            )
        for event_id, customer_id, rows in session.execute(DUPLICATE_ACTIVE_SQL):
            drift.append(Drift(event_id, f"customer {customer_id} has {rows} active bookings"))
        for event_id, entry_id, status, live, confirmed in session.execute(OFFER_MISMATCH_SQL):
            drift.append(
                Drift(
                    event_id,
                    f"waitlist entry {entry_id} is {status} with {live} live and "
                    f"{confirmed} confirmed hold(s)",
                )
            )
    return drift
