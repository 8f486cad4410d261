"""``flask purge-tokens``: expired and revoked bearer tokens, and stale login devices, go.

Without it both tables grow by a row per sign-in forever.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.services import sessions
from tests import factories as f
from tests.factories import API, PASSWORD, auth


def sign_in(client: FlaskClient, username: str) -> dict[str, Any]:
    response = client.post(f"{API}/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200
    return response.get_json()


def age_token(token: str, *, expired_hours_ago: float = 0, revoked_hours_ago: float = 0) -> None:
    """Move a token's expiry or revocation into the past."""
    with db.transaction() as session:
        if expired_hours_ago:
            session.execute(
                text(
                    "UPDATE api_tokens SET expires_at = now() - make_interval(secs => :s) "
                    "WHERE token_hash = :hash"
                ),
                {"s": expired_hours_ago * 3600, "hash": sessions.hash_token(token)},
            )
        if revoked_hours_ago:
            session.execute(
                text(
                    "UPDATE api_tokens SET revoked_at = now() - make_interval(secs => :s) "
                    "WHERE token_hash = :hash"
                ),
                {"s": revoked_hours_ago * 3600, "hash": sessions.hash_token(token)},
            )


def age_device(device_token: str, *, unused_days: float) -> None:
    with db.transaction() as session:
        session.execute(
            text(
                "UPDATE login_devices SET last_used_at = now() - make_interval(days => :d) "
                "WHERE token_hash = :hash"
            ),
            {"d": unused_days, "hash": sessions.hash_token(device_token)},
        )


def token_exists(token: str) -> bool:
    return f.count_rows("api_tokens", token_hash=sessions.hash_token(token)) == 1


def device_exists(device_token: str) -> bool:
    return f.count_rows("login_devices", token_hash=sessions.hash_token(device_token)) == 1


def purge(app: Flask, *args: str) -> str:
    with app.app_context():  # as the flask command runs it
        result = app.test_cli_runner().invoke(args=["purge-tokens", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_purge_tokens_deletes_what_expired_or_was_revoked_beyond_the_grace_period(
    app: Flask, client: FlaskClient
) -> None:
    signed_up = f.customer(client)
    username = signed_up["user"]["username"]
    live = signed_up["token"]
    expired_long_ago, expired_lately, revoked_long_ago, revoked_lately = (
        sign_in(client, username)["token"] for _ in range(4)
    )
    age_token(expired_long_ago, expired_hours_ago=25)
    age_token(expired_lately, expired_hours_ago=1)
    age_token(revoked_long_ago, revoked_hours_ago=25)
    age_token(revoked_lately, revoked_hours_ago=1)

    output = purge(app)

    assert "deleted 2 expired or revoked token(s)" in output
    assert not token_exists(expired_long_ago)
    assert not token_exists(revoked_long_ago)
    assert token_exists(expired_lately)  # within TOKEN_PURGE_GRACE_HOURS (24)
    assert token_exists(revoked_lately)
    assert client.get(f"{API}/auth/me", headers=auth(live)).status_code == 200
    assert purge(app).startswith("deleted 0 expired or revoked token(s)")


def test_purge_tokens_deletes_login_devices_unused_past_their_lifetime(
    app: Flask, client: FlaskClient
) -> None:
    signed_up = f.customer(client)
    stale = signed_up["device_token"]
    recent = sign_in(client, signed_up["user"]["username"])["device_token"]
    age_device(stale, unused_days=91)
    age_device(recent, unused_days=89)

    output = purge(app)

    assert "and 1 stale login device(s)" in output
    assert not device_exists(stale)
    assert device_exists(recent)


@pytest.mark.parametrize("batch_size", ["1", "2", "1000"])
def test_purge_tokens_works_through_a_backlog_in_batches(
    app: Flask, client: FlaskClient, batch_size: str
) -> None:
    signed_up = f.customer(client)
    tokens = [sign_in(client, signed_up["user"]["username"])["token"] for _ in range(5)]
    for token in tokens:
        age_token(token, expired_hours_ago=48)

    output = purge(app, "--batch-size", batch_size)

    assert "deleted 5 expired or revoked token(s)" in output
    assert f.count_rows("api_tokens") == 1  # the registration's, still live


def test_the_grace_period_is_a_setting(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = f.customer(client)["token"]
    age_token(token, expired_hours_ago=3)
    monkeypatch.setitem(app.config, "TOKEN_PURGE_GRACE_HOURS", 2)

    assert "deleted 1 expired or revoked token(s)" in purge(app)
