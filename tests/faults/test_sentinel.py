"""Redis through Sentinel: the service finds the primary via sentinels and follows a failover.

Real processes: a Redis primary, its replica, a sentinel, and a gunicorn instance whose
REDIS_URL points nowhere, so everything it does with Redis must go through the sentinels.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from booking_service import config as config_module
from booking_service.redis_clients import RedisClient
from harness.instances import AppInstance
from harness.redis_servers import RedisSentinelGroup
from tests import factories as f
from tests.factories import API, PASSWORD, auth

pytestmark = pytest.mark.slow

NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens on port 1
RECOVERY_SECONDS = 30.0  # generous: failover takes ~3 s here, but the machine may be loaded


def book(instance: AppInstance, token: str, event_id: int) -> requests.Response:
    return requests.post(
        f"{instance.base_url}{API}/bookings",
        json={"event_id": event_id},
        headers=auth(token),
        timeout=30,
    )


def keys(group: RedisSentinelGroup, port: int, pattern: str) -> list[bytes]:
    return group.client(port).keys(pattern)


def test_books_through_sentinel_before_and_after_a_failover(
    client: FlaskClient, start_instance: Any
) -> None:
    organizer = f.organizer(client)
    customers = [f.customer(client) for _ in range(2)]
    events = [f.create_event(client, organizer["token"])["id"] for _ in range(2)]

    with RedisSentinelGroup(sentinels=1, down_after_ms=1000, failover_timeout_ms=5000) as group:
        instance = start_instance(
            "sentinel-app",
            REDIS_URL=NOWHERE,
            REDIS_SENTINELS=group.sentinel_addresses,
            REDIS_SENTINEL_SERVICE=group.service,
        )
        assert requests.get(f"{instance.base_url}/readyz", timeout=10).status_code == 200

        first = book(instance, customers[0]["token"], events[0])
        assert first.status_code == 201, first.text
        # The booking's Redis traffic (lock statistics, rate-limit counters) went to the
        # primary the sentinel named, and replicated to the replica.
        assert keys(group, group.primary_port, "lock-stats:*")
        assert keys(group, group.primary_port, "LIMITS:*")

        group.kill_primary()
        group.wait_for_failover(timeout=RECOVERY_SECONDS)

        statuses: list[int] = []
        deadline = time.monotonic() + RECOVERY_SECONDS
        while time.monotonic() < deadline:
            response = book(instance, customers[1]["token"], events[1])
            statuses.append(response.status_code)
            if response.status_code == 201:
                break
            time.sleep(0.5)

        assert statuses[-1] == 201, (statuses, instance.log()[-3000:], group.logs())
        # Until the client reconnects it may be refused, but only ever with a 503 to retry.
        assert set(statuses[:-1]) <= {503}, statuses
        assert f.booked_count(events[0]) == 1
        assert f.booked_count(events[1]) == 1

        # The new primary (the old replica) now serves the service: signing in works too.
        login = requests.post(
            f"{instance.base_url}{API}/auth/login",
            json={"username": customers[1]["user"]["username"], "password": PASSWORD},
            timeout=30,
        )
        assert login.status_code == 200
        assert requests.get(f"{instance.base_url}/readyz", timeout=10).status_code == 200
        assert group.primary_address() == ("127.0.0.1", group.replica_port)


def test_a_plain_url_is_used_when_no_sentinels_are_configured() -> None:
    client = RedisClient()
    client.configure(
        {
            **config_module.from_environment(),
            "REDIS_URL": "redis://127.0.0.1:6399/3",
            "REDIS_SENTINELS": None,
        }
    )
    kwargs = client.get().connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6399, 3)


def test_sentinels_configured_means_a_sentinel_managed_pool() -> None:
    from redis.sentinel import SentinelConnectionPool

    client = RedisClient()
    client.configure(
        {
            **config_module.from_environment(),
            "REDIS_SENTINELS": "127.0.0.1:26379, 127.0.0.1:26380",
            "REDIS_SENTINEL_SERVICE": "bookings",
            "REDIS_DB": 2,
        }
    )
    pool = client.get().connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "bookings"
    assert pool.connection_kwargs["db"] == 2
    assert [
        (c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
        for c in pool.sentinel_manager.sentinels
    ] == [("127.0.0.1", 26379), ("127.0.0.1", 26380)]


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:26379", [("127.0.0.1", 26379)]),
        ("a:1, b:2,c:3", [("a", 1), ("b", 2), ("c", 3)]),
        ("[::1]:26379", [("::1", 26379)]),
    ],
)
def test_sentinel_addresses_are_parsed(value: str, parsed: list[tuple[str, int]]) -> None:
    assert config_module.parse_host_ports("REDIS_SENTINELS", value) == parsed


@pytest.mark.parametrize("value", ["localhost", "host:", ":26379", "host:port", "a:1,,b:2", "h:0"])
def test_malformed_sentinel_addresses_are_a_config_error(value: str) -> None:
    settings = {**config_module.from_environment(), "REDIS_SENTINELS": value}
    with pytest.raises(config_module.ConfigError, match="REDIS_SENTINELS"):
        config_module.validate(settings)


def test_rate_limits_count_in_the_redis_the_locks_use(app: Any) -> None:
    # One client for locks, statistics, sessions and rate limits: under Sentinel they all
    # follow the primary the sentinels name (the client's configuration is checked above).
    from booking_service.ratelimit import limiter
    from booking_service.redis_clients import redis_client

    assert limiter._client is redis_client.get()
