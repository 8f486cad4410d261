"""Redis goes away: bookings fail closed (503, nothing written) and recover when it returns."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from booking_service.locking import UPDATE_SCRIPT, lock_key
from harness.instances import AppInstance, running
from harness.redis_servers import RedisServer
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

RECOVERY_LIMIT_SECONDS = 5.0


def _book(instance: AppInstance, token: str, event_id: int) -> requests.Response:
    return requests.post(
        f"{instance.base_url}{API}/bookings",
        json={"event_id": event_id},
        headers=auth(token),
        timeout=15,
    )


def test_bookings_fail_closed_while_redis_is_down_and_recover(client: FlaskClient):
    private_redis = RedisServer().start()
    try:
        instance = AppInstance(instance_env(REDIS_URL=private_redis.url), workers=2, name="outage")
        with running([instance]):
            _outage_and_recovery(client, private_redis, instance)
    finally:
        private_redis.stop()


def _outage_and_recovery(client: FlaskClient, private_redis: RedisServer, instance: AppInstance):
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=10)
    first, refused, *later = [factories.customer(client) for _ in range(6)]
    assert _book(instance, first["token"], event["id"]).status_code == 201  # Redis up: works

    private_redis.stop()
    started = time.monotonic()
    response = _book(instance, refused["token"], event["id"])
    refused_in = time.monotonic() - started
    # More attempts, so that every worker meets the outage, and the same answer each time.
    retries = [_book(instance, refused["token"], event["id"]) for _ in range(4)]

    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == "lock_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert [(r.status_code, r.json()["code"], "Retry-After" in r.headers) for r in retries] == [
        (503, "lock_unavailable", True)
    ] * len(retries)
    snapshot = event_snapshot(event["id"])
    assert snapshot["booked_count"] == snapshot["active_rows"] == snapshot["booking_rows"] == 1
    assert booking_history_count(user_id=refused["user"]["id"]) == 0

    ready = requests.get(f"{instance.base_url}/readyz", timeout=15)
    assert ready.status_code == 503
    assert "redis" in ready.json()["detail"]
    assert set(ready.json()["errors"]) == {"redis"}, ready.json()  # PostgreSQL is fine

    private_redis.start()  # same port; answers PING when this returns
    restarted = time.monotonic()
    answers: list[tuple[int, str | None]] = []
    while True:
        response = _book(instance, refused["token"], event["id"])
        answers.append((response.status_code, response.json().get("code")))
        if response.status_code == 201 or time.monotonic() - restarted > RECOVERY_LIMIT_SECONDS:
            break
        time.sleep(0.05)
    recovered_in = time.monotonic() - restarted
    # Every worker is healthy again, not just the one that answered first.
    after = [_book(instance, c["token"], event["id"]).status_code for c in later]
    print(
        f"\n[outage] refused in {refused_in:.3f}s; recovered in {recovered_in:.3f}s "
        f"after {len(answers)} attempt(s) {answers}; next bookings {after}"
    )

    assert answers[-1] == (201, None), answers
    assert recovered_in < RECOVERY_LIMIT_SECONDS
    assert set(answers[:-1]) <= {(503, "lock_unavailable")}, answers
    assert after == [201] * len(later)
    assert requests.get(f"{instance.base_url}/readyz", timeout=15).status_code == 200
    snapshot = event_snapshot(event["id"])
    assert snapshot["booked_count"] == snapshot["active_rows"] == 2 + len(later)
    assert [row["customer_id"] for row in bookings_of(event_id=event["id"])].count(
        refused["user"]["id"]
    ) == 1


def test_a_release_after_redis_forgot_its_scripts_still_frees_the_lock(
    client: FlaskClient, start_instance: Any, private_redis: RedisServer
) -> None:
    # A restarted or failed-over Redis has an empty script cache: the script that releases the
    # lock and adds its statistics comes back NOSCRIPT and must be loaded and run again.
    instance = start_instance("noscript", REDIS_URL=private_redis.url)
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=5)
    first, second = factories.customer(client), factories.customer(client)
    assert _book(instance, first["token"], event["id"]).status_code == 201

    redis_server = private_redis.client()
    redis_server.script_flush()
    assert _book(instance, second["token"], event["id"]).status_code == 201

    assert not redis_server.exists(lock_key(event["id"]))  # released, not left to expire
    assert redis_server.script_exists(hashlib.sha1(UPDATE_SCRIPT.encode()).hexdigest()) == [True]
    assert "lock release failed" not in instance.log()
    assert event_snapshot(event["id"])["booked_count"] == 2
