"""Sessions cached in Redis in front of PostgreSQL, and the rules that keep the cache honest.

Real Redis and PostgreSQL. PostgreSQL lookups are counted with a spy around the stored
function's real call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.redis_clients import RedisClient, redis_client
from booking_service.services import sessions
from booking_service.services.sessions import USER_BY_LIVE_TOKEN
from harness.processes import free_port
from tests import factories as f

ME = f"{f.API}/auth/me"


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Token hashes looked up in PostgreSQL, in order."""
    seen: list[str] = []
    real = USER_BY_LIVE_TOKEN.execute

    def spy(connection: Any, parameters: dict[str, Any]) -> Any:
        seen.append(parameters["token_hash"])
        return real(connection, parameters)

    monkeypatch.setattr(USER_BY_LIVE_TOKEN, "execute", spy)
    return seen


def me(client: FlaskClient, token: str) -> int:
    return client.get(ME, headers=f.auth(token)).status_code


def test_a_session_is_looked_up_once_then_served_from_redis(
    client: FlaskClient, lookups: list[str], redis_conn: redis.Redis
) -> None:
    token = f.customer(client)["token"]
    assert [me(client, token) for _ in range(5)] == [200] * 5
    assert lookups == [sessions.hash_token(token)]
    ttl = redis_conn.ttl(sessions.session_key(sessions.hash_token(token)))
    assert 0 < ttl <= sessions.settings.cache_seconds


def test_tokens_name_their_user(client: FlaskClient) -> None:
    signed_in = f.customer(client)
    assert sessions.user_id_of(signed_in["token"]) == signed_in["user"]["id"]


def test_logout_takes_effect_at_once_although_the_session_was_cached(
    client: FlaskClient, lookups: list[str]
) -> None:
    token = f.customer(client)["token"]
    assert me(client, token) == 200  # cached now
    assert client.post(f"{f.API}/auth/logout", headers=f.auth(token)).status_code == 204
    assert me(client, token) == 401
    assert len(lookups) == 1  # refused from the tombstone, without asking PostgreSQL


def test_a_lookup_that_read_the_token_before_the_logout_cannot_cache_it_again(
    client: FlaskClient,
) -> None:
    token = f.customer(client)["token"]
    token_hash = sessions.hash_token(token)
    # A request read the token in PostgreSQL (still live) just before the logout...
    with db.single_statement() as connection:
        row = USER_BY_LIVE_TOKEN.execute(connection, {"token_hash": token_hash}).one()
    assert client.post(f"{f.API}/auth/logout", headers=f.auth(token)).status_code == 204
    # ...and tries to cache it only after the logout answered.
    values = row._asdict()
    sessions._fill(token_hash, values, values.pop("token_expires_at"))
    assert me(client, token) == 401


def test_a_cached_session_never_outlives_its_token(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    token = f.customer(client)["token"]
    key = sessions.session_key(sessions.hash_token(token))
    with db.transaction() as session:
        session.execute(
            text(
                "UPDATE api_tokens SET expires_at = now() + interval '2 seconds' "
                "WHERE token_hash = :h"
            ),
            {"h": sessions.hash_token(token)},
        )
    assert me(client, token) == 200
    assert 0 < redis_conn.ttl(key) <= 2  # the token's remaining life, not the cache's 300 s
    # Even an entry that outlived its token (kept longer by hand here) is checked on read.
    entry = json.loads(redis_conn.get(key))
    entry["expires_at"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    redis_conn.set(key, json.dumps(entry), ex=60)
    assert me(client, token) == 401


def test_a_token_issued_before_tokens_named_their_user_still_works(
    client: FlaskClient, lookups: list[str]
) -> None:
    user = f.customer(client)["user"]
    legacy = "oLdStYlEtOkEnWiThOuTaUsErIdPrEfIx0123456789a"
    with db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO api_tokens (user_id, token_hash, expires_at) "
                "VALUES (:u, :h, now() + interval '1 hour')"
            ),
            {"u": user["id"], "h": sessions.hash_token(legacy)},
        )
    assert sessions.user_id_of(legacy) is None
    assert me(client, legacy) == 200
    assert me(client, legacy) == 200
    assert lookups.count(sessions.hash_token(legacy)) == 1


@pytest.fixture
def unreachable_redis(app: Flask) -> Iterator[None]:
    """The service's Redis client pointed at a port nothing listens on."""
    dead = RedisClient()
    dead.configure({**app.config, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    working = redis_client.client
    redis_client.client = dead.client
    try:
        yield
    finally:
        redis_client.client = working


def test_sessions_fall_back_to_postgresql_when_redis_is_unreachable(
    client: FlaskClient, lookups: list[str], unreachable_redis: None
) -> None:
    token = f.customer(client)["token"]
    assert [me(client, token) for _ in range(2)] == [200, 200]
    assert len(lookups) == 2  # nothing could be cached
    answer = client.post(f"{f.API}/auth/logout", headers=f.auth(token))
    f.assert_problem(answer, 503, "session_store_unavailable")
    assert answer.headers["Retry-After"]
    assert me(client, token) == 200  # not signed out: the client is told to retry


def test_a_forged_token_does_not_use_up_its_user_s_rate_limit(
    client: FlaskClient, redis_conn: redis.Redis, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "RATE_LIMIT_BOOKINGS", "3/minute")
    organizer = f.organizer(client)
    event = f.create_event(client, organizer["token"], capacity=50)
    victim = f.customer(client)
    forged = f"{victim['user']['id']}.not-the-real-secret"
    for _ in range(10):
        f.assert_problem(f.book(client, forged, event["id"]), 401, "unauthorized")
    # The victim's own budget is untouched: three bookings' worth of requests get through.
    answers = [f.book(client, victim["token"], event["id"]).status_code for _ in range(4)]
    assert answers == [201, 409, 409, 429]
