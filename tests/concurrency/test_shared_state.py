"""What the instances share through Redis and PostgreSQL works in every set-up of the tier.

Directly, through PgBouncer and on a Redis Cluster (where the keys live on several shards):
the live lock view and the lock statistics see every instance's holds, rate limits count
across instances, an Idempotency-Key replays on another instance, and a lock held by a plain
python-redis-lock client is respected.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis_lock
import requests
from flask.testing import FlaskClient

from booking_service.locking import lock_name
from tests import factories
from tests.concurrency.conftest import LOGIN_LIMIT, OPS_TOKEN
from tests.factories import auth
from tests.support.instances import API, Cluster, event_snapshot

pytestmark = pytest.mark.slow


def _book(base_url: str, token: str, event_id: int, **headers: str) -> requests.Response:
    return requests.post(
        f"{base_url}{API}/bookings",
        json={"event_id": event_id},
        headers={**auth(token), **headers},
        timeout=15,
    )


def test_the_lock_view_sees_every_instance_and_every_shard(
    cluster: Cluster, lock_redis: Any, client: FlaskClient
) -> None:
    organizer = factories.organizer(client)
    # Event ids spread over the shards of the activity index and, on a cluster, over nodes.
    events = [factories.create_event(client, organizer["token"], capacity=5) for _ in range(6)]
    for n, event in enumerate(events):
        for instance in (0, 1):
            customer = factories.customer(client)
            answer = _book(cluster.url(n + instance), customer["token"], event["id"])
            assert answer.status_code == 201, answer.text

    for base_url in cluster.urls:
        view = requests.get(
            f"{base_url}{API}/ops/locks", headers=auth(OPS_TOKEN), timeout=15
        ).json()
        rows = {row["event_id"]: row for row in view["events"]}
        assert set(rows) >= {event["id"] for event in events}, view
        for event in events:
            assert rows[event["id"]]["acquired"] == 2, rows[event["id"]]
            assert rows[event["id"]]["held"] is False


def test_rate_limits_count_across_instances(cluster: Cluster, client: FlaskClient) -> None:
    user = factories.customer(client)
    statuses = [
        requests.post(
            f"{cluster.url(n)}{API}/auth/login",
            json={"username": user["user"]["username"], "password": "wrong-password"},
            timeout=15,
        ).status_code
        for n in range(LOGIN_LIMIT + 1)
    ]
    assert statuses == [401] * LOGIN_LIMIT + [429], statuses


def test_an_idempotency_key_replays_on_another_instance(
    cluster: Cluster, lock_redis: Any, client: FlaskClient
) -> None:
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=5)
    customer = factories.customer(client)
    key = {"Idempotency-Key": "shared-state-replay"}
    first = _book(cluster.url(0), customer["token"], event["id"], **key)
    again = _book(cluster.url(1), customer["token"], event["id"], **key)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert event_snapshot(event["id"])["booked_count"] == 1


def test_a_python_redis_lock_holder_is_respected(
    cluster: Cluster, lock_redis: Any, client: FlaskClient
) -> None:
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=5)
    customer = factories.customer(client)
    # strict=False: python-redis-lock only type-checks for a plain client; a cluster client
    # speaks the same commands, and the lock's keys share the event's hash tag.
    held = redis_lock.Lock(lock_redis, lock_name(event["id"]), expire=30, strict=False)
    assert held.acquire(blocking=False)
    releaser = threading.Timer(1.0, held.release)
    started = time.monotonic()
    releaser.start()
    try:
        answer = _book(cluster.url(0), customer["token"], event["id"])
    finally:
        releaser.join()
    waited = time.monotonic() - started
    assert answer.status_code == 201, answer.text
    assert waited >= 0.9, f"booked after {waited:.2f}s while the lock was held"
    assert event_snapshot(event["id"])["booked_count"] == 1
