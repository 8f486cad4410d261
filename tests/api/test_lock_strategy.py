"""LOCK_STRATEGY=none: no Redis on the booking path, and the database still never overbooks.

The strategy exists so the benchmark can show what the Redis lock costs and buys; these tests
pin down that switching it off changes only where requests wait, never the invariants.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from booking_service import config as config_module
from booking_service.locking import locks
from booking_service.services.invariants import find_drift
from tests import factories as f


@pytest.fixture
def no_lock(app: Flask) -> Iterator[None]:
    """Switch the process's event locks to strategy none, pointed at a Redis nobody runs.

    A dead Redis proves the strategy never touches it: any call would fail closed with 503.
    """
    saved = (locks.client, locks.strategy)
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    locks.configure({**app.config, "LOCK_STRATEGY": "none"}, dead)
    try:
        yield
    finally:
        locks.client, locks.strategy = saved


def test_default_strategy_is_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCK_STRATEGY", raising=False)
    assert config_module.from_environment()["LOCK_STRATEGY"] == "redis"


@pytest.mark.parametrize("raw", ["none", "NONE", "redis"])
def test_strategy_read_from_environment(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("LOCK_STRATEGY", raw)
    assert config_module.from_environment()["LOCK_STRATEGY"] == raw.lower()


def test_unknown_strategy_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCK_STRATEGY", "zookeeper")
    with pytest.raises(config_module.ConfigError, match="LOCK_STRATEGY"):
        config_module.from_environment()
    monkeypatch.delenv("LOCK_STRATEGY")
    overridden = {**config_module.from_environment(), "LOCK_STRATEGY": "zookeeper"}
    with pytest.raises(config_module.ConfigError, match="LOCK_STRATEGY"):
        config_module.validate(overridden)


@pytest.mark.usefixtures("no_lock")
def test_booking_succeeds_without_redis(client: FlaskClient) -> None:
    organizer = f.organizer(client)
    event = f.create_event(client, organizer["token"], capacity=2)
    customer = f.customer(client)

    response = f.book(client, customer["token"], event["id"])

    assert response.status_code == 201, response.get_json()
    assert f.booked_count(event["id"]) == 1
    assert f.count_rows("history_entries", action="create", entity_type="booking") == 1


@pytest.mark.usefixtures("no_lock")
def test_concurrent_bookings_never_overbook(app: Flask, client: FlaskClient) -> None:
    capacity, attempts = 3, 12
    organizer = f.organizer(client)
    event = f.create_event(client, organizer["token"], capacity=capacity)
    tokens = [f.customer(client)["token"] for _ in range(attempts)]

    def attempt(token: str) -> int:
        # One test client per thread: requests really run concurrently against PostgreSQL.
        return f.book(app.test_client(), token, event["id"]).status_code

    with ThreadPoolExecutor(max_workers=attempts) as pool:
        statuses = sorted(pool.map(attempt, tokens))

    assert statuses == [201] * capacity + [409] * (attempts - capacity)
    assert f.booked_count(event["id"]) == capacity
    assert f.count_rows("bookings", event_id=event["id"], status="active") == capacity
    assert find_drift() == []


@pytest.mark.usefixtures("no_lock")
def test_concurrent_double_booking_by_one_customer_books_once(
    app: Flask, client: FlaskClient
) -> None:
    organizer = f.organizer(client)
    event = f.create_event(client, organizer["token"], capacity=10)
    token = f.customer(client)["token"]

    def attempt(_: int) -> int:
        return f.book(app.test_client(), token, event["id"]).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(attempt, range(6)))

    assert statuses == [201] + [409] * 5
    assert f.booked_count(event["id"]) == 1
    assert find_drift() == []
