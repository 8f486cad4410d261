"""Seats of upcoming events, summarised for the scrape-time capacity gauges."""

from __future__ import annotations

from sqlalchemy import text

from booking_service.extensions import db
from booking_service.metrics import NEAR_CAPACITY_RATIO, UpcomingCapacity

# One pass over the upcoming events only (ix_events_start_time); booked_count is kept in step
# with the bookings, so no booking row is read.
UPCOMING_CAPACITY_SQL = text(
    """
    SELECT count(*) AS events,
           count(*) FILTER (WHERE booked_count >= :ratio * capacity) AS near_capacity,
           coalesce(max(booked_count::float / capacity), 0) AS max_utilisation,
           coalesce(sum(booked_count), 0) AS booked_seats,
           coalesce(sum(capacity), 0) AS capacity_seats
      FROM events
     WHERE start_time > now()
    """
)


def upcoming_capacity(*, near_ratio: float = NEAR_CAPACITY_RATIO) -> UpcomingCapacity:
    """Summarise how full the events that have not started yet are."""
    with db.transaction() as session:
        row = session.execute(UPCOMING_CAPACITY_SQL, {"ratio": near_ratio}).one()
    return UpcomingCapacity(
        events=int(row.events),
        near_capacity=int(row.near_capacity),
        max_utilisation=float(row.max_utilisation),
        booked_seats=int(row.booked_seats),
        capacity_seats=int(row.capacity_seats),
    )
