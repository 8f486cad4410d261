"""Rate limits when their Redis goes away: sign-in fails open, bookings still fail closed.

A gunicorn instance (one worker, so its per-process fallback counters are the only ones) behind
one trusted proxy hop, on a private Redis that the test stops.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from booking_service import config as config_module
from booking_service import ratelimit
from booking_service.redis_clients import RedisClient
from harness.redis_servers import RedisServer
from tests import factories as f
from tests.factories import API, PASSWORD, auth

pytestmark = pytest.mark.slow


def login(base_url: str, username: str, *, client_address: str, password: str = "wrong") -> int:
    response = requests.post(
        f"{base_url}{API}/auth/login",
        json={"username": username, "password": password},
        # What the trusted proxy in front would append.
        headers={"X-Forwarded-For": client_address},
        timeout=30,
    )
    return response.status_code


def test_sign_in_fails_open_and_booking_fails_closed_without_redis(
    client: FlaskClient, start_instance: Any, private_redis: RedisServer
) -> None:
    organizer, customer = f.organizer(client), f.customer(client)
    event = f.create_event(client, organizer["token"])
    username = customer["user"]["username"]
    instance = start_instance(
        "limits",
        REDIS_URL=private_redis.url,
        RATE_LIMIT_LOGIN="3/minute",
        TRUSTED_PROXIES=1,
    )
    base = instance.base_url

    # Redis up: the limit holds per client address, taken from X-Forwarded-For.
    assert [login(base, f"u{n}", client_address="198.51.100.1") for n in range(3)] == [401] * 3
    assert login(base, "u9", client_address="198.51.100.1") == 429
    assert login(base, "u9", client_address="198.51.100.2") == 401
    assert private_redis.client().keys("LIMITS:*")

    private_redis.stop()

    # Fail open: signing in and registering keep working without the limiter's storage...
    assert login(base, username, client_address="198.51.100.3", password=PASSWORD) == 200
    registered = requests.post(
        f"{base}{API}/auth/register/customer",
        json={"username": "late", "password": PASSWORD, "email": "late@example.com"},
        headers={"X-Forwarded-For": "198.51.100.3"},
        timeout=30,
    )
    assert registered.status_code == 201
    # ...and the worker's own in-memory counters still stop a guessing spree.
    statuses = [login(base, f"g{n}", client_address="198.51.100.4") for n in range(4)]
    assert statuses == [401, 401, 401, 429]

    # Fail closed: no booking without the event lock.
    booking = requests.post(
        f"{base}{API}/bookings",
        json={"event_id": event["id"]},
        headers=auth(customer["token"]),
        timeout=30,
    )
    assert booking.status_code == 503
    assert booking.json()["code"] == "lock_unavailable"
    assert f.booked_count(event["id"]) == 0
    # Operators are told, once, not with a traceback per request.
    log = instance.log()
    assert log.count("falling back to in-memory storage") == 1, log
    assert "Traceback" not in log, log


def test_counting_returns_to_redis_once_it_is_back(
    private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ratelimit, "RETRY_SHARED_SECONDS", 0.2)
    client = RedisClient()
    client.configure({**config_module.from_environment(), "REDIS_URL": private_redis.url})
    limiter = ratelimit.RateLimiter()
    limiter.configure(client.get())
    assert limiter.hit("2/minute", "test", "who") is None
    assert len(private_redis.client().keys("LIMITS:*")) == 1

    private_redis.stop()
    # Per-process counting: a fresh budget, still enforced.
    assert [limiter.hit("2/minute", "test", "who") for _ in range(2)] == [None, None]
    assert limiter.hit("2/minute", "test", "who") is not None

    private_redis.start()  # empty: nothing is persisted
    time.sleep(0.3)
    assert limiter.hit("2/minute", "test", "who") is None
    assert len(private_redis.client().keys("LIMITS:*")) == 1
    messages = [record.getMessage() for record in caplog.records]
    assert sum("falling back to in-memory storage" in m for m in messages) == 1, messages
    assert sum("reachable again" in m for m in messages) == 1, messages
