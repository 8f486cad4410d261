"""Reconciliation: does ``events.booked_count`` match the booking rows?"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from booking_service.extensions import db

# Full scans on purpose: this is the out-of-band audit, never the booking path.
COUNT_DRIFT_SQL = text(
    """
    SELECT e.id, e.capacity, e.booked_count,
           count(b.id) FILTER (WHERE b.status = 'active') AS active_rows
      FROM events e
      LEFT JOIN bookings b ON b.event_id = e.id
     GROUP BY e.id
    HAVING e.booked_count <> count(b.id) FILTER (WHERE b.status = 'active')
        OR count(b.id) FILTER (WHERE b.status = 'active') > e.capacity
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


@dataclass(frozen=True)
class Drift:
    event_id: int
    problem: str


def find_drift() -> list[Drift]:
    """Return every event whose counters or rows break an invariant (empty list: all good)."""
    drift: list[Drift] = []
    with db.read_transaction() as session:
        for event_id, capacity, booked, active in session.execute(COUNT_DRIFT_SQL):
            drift.append(
                Drift(
                    event_id,
                    f"booked_count={booked} but {active} active rows (capacity {capacity})",
                )
            )
        for event_id, customer_id, rows in session.execute(DUPLICATE_ACTIVE_SQL):
            drift.append(Drift(event_id, f"customer {customer_id} has {rows} active bookings"))
    return drift
