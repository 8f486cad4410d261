"""A lease vanishes inside the critical section: two holders at once, still no overbooking.

This process enters the event's critical section (the service's own ``locks.locked``); the lock
key is then deleted, as an expiry or a Redis failover would, so a gunicorn instance gets the
lock too and books the last seat. This process then tries to take that same seat with the
service's seat-taking function. Only the database can refuse it now: without the conditional
seat update (and the CHECK behind it) this test overbooks and fails. On leaving the block the
loss must be noticed: counted in booking_lock_lost_total and logged.
"""

from __future__ import annotations

import logging

import pytest
import redis
import requests
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from booking_service.database import db
from booking_service.locking import lock_key, locks
from booking_service.services import ledger
from harness.instances import AppInstance, running
from tests import factories
from tests.factories import auth
from tests.support.instances import (
    API,
    booking_history_count,
    bookings_of,
    event_snapshot,
    instance_env,
)

pytestmark = pytest.mark.slow


def _lost_total() -> float:
    return REGISTRY.get_sample_value("booking_lock_lost_total") or 0.0


def test_lost_lease_is_detected_and_cannot_overbook(
    client: FlaskClient, redis_conn: redis.Redis, caplog: pytest.LogCaptureFixture
):
    # Same database and Redis as this process (TEST_SETTINGS).
    with running([AppInstance(instance_env(), workers=1, name="rival")]) as [instance]:
        _lose_the_lease(client, redis_conn, caplog, instance)


def _lose_the_lease(
    client: FlaskClient,
    redis_conn: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    instance: AppInstance,
) -> None:
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=2)
    event_id = event["id"]
    early, rival, holder = (factories.customer(client) for _ in range(3))
    assert factories.book(client, early["token"], event_id).status_code == 201  # one seat left
    lost_before = _lost_total()

    with caplog.at_level(logging.WARNING, logger="booking_service.locking"):
        with locks.locked(event_id):
            assert redis_conn.exists(lock_key(event_id)), "the lock is not in the test Redis"
            redis_conn.delete(lock_key(event_id))  # the lease is gone; we do not know yet

            rival_response = requests.post(
                f"{instance.base_url}{API}/bookings",
                json={"event_id": event_id},
                headers=auth(rival["token"]),
                timeout=15,
            )
            assert rival_response.status_code == 201, rival_response.text  # it got the lock

            # The late holder really runs the seat statement; the database finds no seat.
            late = ledger.intent("book", customer_id=holder["user"]["id"], seats=1)
            with db.single_write() as connection:
                [outcome], _ = ledger.apply(connection, event_id, [late])
            assert outcome == {"error": "event_full", "available": 0}
        lost_after = _lost_total()

    lost_lines = [
        r for r in caplog.records if r.levelno == logging.WARNING and "lock lost" in r.getMessage()
    ]
    snapshot = event_snapshot(event_id)
    print(
        f"\n[lock loss] lost_total {lost_before:g} -> {lost_after:g}; "
        f"log: {[r.getMessage() for r in lost_lines]}; final {snapshot}"
    )

    assert lost_after == lost_before + 1
    assert len(lost_lines) == 1 and f"event={event_id}" in lost_lines[0].getMessage()
    assert snapshot["capacity"] == snapshot["booked_count"] == snapshot["active_rows"] == 2
    assert snapshot["duplicate_active"] == 0
    holders = [row["customer_id"] for row in bookings_of(event_id=event_id)]
    assert sorted(holders) == sorted([early["user"]["id"], rival["user"]["id"]])
    assert booking_history_count(user_id=holder["user"]["id"]) == 0
    # The rival's lock was released normally: nothing is left locked.
    assert not redis_conn.exists(lock_key(event_id))
