"""Test-only glue for the multi-process tiers: instance settings from the test settings, the
instances and lock Redis of a tier, and row snapshots read through the test app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from booking_service.database import db
from harness.instances import AppInstance
from harness.redis_cluster import RedisClusterGroup
from harness.redis_servers import RedisServer
from tests.conftest import TEST_SETTINGS

API = "/api/v1"

# Counter, rows and duplicates of one event, in one statement: one consistent snapshot.
SNAPSHOT_SQL = """
SELECT e.capacity,
       e.booked_count,
       e.held_count,
       e.waitlist_length,
       (SELECT count(*) FROM bookings b
         WHERE b.event_id = e.id AND b.status = 'active') AS active_rows,
       (SELECT coalesce(sum(b.seats), 0) FROM bookings b
         WHERE b.event_id = e.id AND b.status = 'active') AS booked_seats,
       (SELECT coalesce(sum(h.seats), 0) FROM holds h
         WHERE h.event_id = e.id AND h.status = 'held') AS held_seats,
       (SELECT count(*) FROM bookings b WHERE b.event_id = e.id) AS booking_rows,
       (SELECT count(*) FROM (SELECT 1 FROM bookings b
                               WHERE b.event_id = e.id AND b.status = 'active'
                               GROUP BY b.customer_id HAVING count(*) > 1) d) AS duplicate_active
  FROM events e
 WHERE e.id = :event_id
"""


@dataclass
class Cluster:
    """App instances sharing one database and one lock Redis."""

    instances: list[AppInstance]
    redis: RedisServer | RedisClusterGroup

    @property
    def urls(self) -> list[str]:
        return [instance.base_url for instance in self.instances]

    def url(self, n: int) -> str:
        """Base URL of instance ``n`` modulo the instance count: spreads work round-robin."""
        return self.urls[n % len(self.urls)]

    def logs(self) -> str:
        return "\n".join(f"--- {i.name}\n{i.log()[-4000:]}" for i in self.instances)


def instance_env(**overrides: Any) -> dict[str, str]:
    """Environment for a gunicorn instance on the test database (values as strings)."""
    env = {key: str(value) for key, value in TEST_SETTINGS.items()}
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def event_snapshot(event_id: int) -> dict[str, Any]:
    """The event's counter and booking rows, read in one statement (needs the app fixture)."""
    with db.transaction() as session:
        row = session.execute(text(SNAPSHOT_SQL), {"event_id": event_id}).mappings().one()
        return dict(row)


def booking_history_count(*, user_id: int | None = None, event_id: int | None = None) -> int:
    """History entries about bookings, for a user and/or an event."""
    sql = "SELECT count(*) FROM history_entries WHERE entity_type = 'booking'"
    params: dict[str, Any] = {}
    if user_id is not None:
        sql += " AND user_id = :user_id"
        params["user_id"] = user_id
    if event_id is not None:
        sql += " AND (details->>'event_id')::int = :event_id"
        params["event_id"] = event_id
    with db.transaction() as session:
        return int(session.scalar(text(sql), params) or 0)


def bookings_of(*, event_id: int) -> list[dict[str, Any]]:
    with db.transaction() as session:
        rows = session.execute(
            text(
                "SELECT id, customer_id, status FROM bookings WHERE event_id = :event_id "
                "ORDER BY id"
            ),
            {"event_id": event_id},
        ).mappings()
        return [dict(row) for row in rows]
