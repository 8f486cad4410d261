"""Someone else holds the event's lock: a booking waits LOCK_WAIT_SECONDS, then answers 503.

The test holds the lock itself, with python-redis-lock on the Redis the app uses, so the wait
is exactly as long as the test wants. Sub-second waits are deliberate (locking.py): passed to
python-redis-lock's own ``acquire(timeout=0.5)`` they would become "wait forever".
"""

from __future__ import annotations

import threading
import time

import pytest
import redis
import redis_lock
import requests
from flask.testing import FlaskClient

from booking_service.locking import lock_key, lock_name
from harness.instances import AppInstance, running
from tests import factories
from tests.factories import auth
from tests.support.instances import API, booking_history_count, event_snapshot, instance_env

pytestmark = pytest.mark.slow

# Client-side elapsed includes HTTP and a loaded 2-core machine; the point is "about the wait,
# certainly not forever".
MARGIN_SECONDS = 2.0


def _book(instance: AppInstance, token: str, event_id: int) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.post(
        f"{instance.base_url}{API}/bookings",
        json={"event_id": event_id},
        headers=auth(token),
        timeout=30,
    )
    return response, time.monotonic() - started


@pytest.mark.parametrize("wait", [1.0, 0.5])
def test_held_lock_times_out_then_frees(wait: float, client: FlaskClient, redis_conn: redis.Redis):
    # The test Redis: the one this process's redis_conn (and so the held lock) talks to.
    instance = AppInstance(instance_env(LOCK_WAIT_SECONDS=wait), workers=1, name=f"wait-{wait:g}")
    with running([instance]):
        _timeout_then_free(wait, client, redis_conn, instance)


def _timeout_then_free(
    wait: float, client: FlaskClient, redis_conn: redis.Redis, instance: AppInstance
) -> None:
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=5)
    blocked, woken, later = (factories.customer(client) for _ in range(3))

    held = redis_lock.Lock(redis_conn, lock_name(event["id"]), expire=30)
    assert held.acquire(blocking=False)
    try:
        response, elapsed = _book(instance, blocked["token"], event["id"])
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "lock_timeout"
        assert int(response.headers["Retry-After"]) >= 1
        assert wait <= elapsed < wait + MARGIN_SECONDS, elapsed
        assert redis_conn.get(lock_key(event["id"])) == held.id.encode()  # still ours
        snapshot = event_snapshot(event["id"])
        assert snapshot["booked_count"] == snapshot["booking_rows"] == 0
        assert booking_history_count(event_id=event["id"]) == 0
    finally:
        held.release()

    # A waiter is woken by the release (BLPOP on the signal list), well before its deadline.
    assert held.acquire(blocking=False)
    holding_for = wait / 3
    releaser = threading.Timer(holding_for, held.release)
    releaser.start()
    try:
        woken_response, woken_elapsed = _book(instance, woken["token"], event["id"])
    finally:
        releaser.join()
    after_response, after_elapsed = _book(instance, later["token"], event["id"])
    print(
        f"\n[lock wait {wait:g}s] timed out after {elapsed:.3f}s; woken after {woken_elapsed:.3f}s "
        f"(lock released at {holding_for:.3f}s); free lock booked in {after_elapsed:.3f}s"
    )

    # 201 means it got the lock before its own deadline; the elapsed time shows it waited.
    assert woken_response.status_code == 201, woken_response.text
    assert woken_elapsed >= holding_for, woken_elapsed
    assert after_response.status_code == 201, after_response.text
    snapshot = event_snapshot(event["id"])
    assert snapshot["booked_count"] == snapshot["active_rows"] == snapshot["booking_rows"] == 2
    assert booking_history_count(user_id=blocked["user"]["id"]) == 0
