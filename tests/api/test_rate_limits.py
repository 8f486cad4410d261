"""Rate limits: sign-in and registration per client address and per username, bookings per user.

The session app runs with limits too high to matter (tests/conftest.py); each test lowers the
one it is about in the app's config, which the limiter reads per request. Counters live in the
test Redis, emptied before every test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.middleware.proxy_fix import ProxyFix

from booking_service import config as config_module
from booking_service.services import sessions
from tests import factories as f
from tests.factories import API, PASSWORD, auth

LOGIN = f"{API}/auth/login"
BOOKINGS = f"{API}/bookings"


@pytest.fixture
def limits(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def set_limit(name: str, value: str | bool) -> None:
        monkeypatch.setitem(app.config, name, value)

    yield set_limit


def login(client: FlaskClient, username: str, *, address: str, password: str = "wrong") -> Any:
    return client.post(
        LOGIN,
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def register(client: FlaskClient, role: str, username: str, *, address: str) -> Any:
    body = {"username": username, "password": PASSWORD, "email": f"{username}@example.com"}
    if role == "organizer":
        body["organization_name"] = "Org"
    return client.post(
        f"{API}/auth/register/{role}", json=body, environ_base={"REMOTE_ADDR": address}
    )


def assert_rate_limited(response: Any, *, window_seconds: int = 60) -> dict[str, Any]:
    assert response.status_code == 429, response.get_json()
    assert response.content_type == "application/problem+json"
    problem = response.get_json()
    assert problem["code"] == "rate_limited"
    assert problem["status"] == 429
    assert problem["type"] == "urn:booking-service:problem:rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= window_seconds
    return problem


# --- sign-in ----------------------------------------------------------------------------


def test_login_is_limited_per_client_address(client: FlaskClient, limits: Any) -> None:
    limits("RATE_LIMIT_LOGIN", "3/minute")
    for n in range(3):
        assert login(client, f"user{n}", address="10.0.0.1").status_code == 401

    assert_rate_limited(login(client, "user-new", address="10.0.0.1"))
    # Another address is a different client.
    assert login(client, "user-new", address="10.0.0.2").status_code == 401


def test_login_is_limited_per_username_whatever_the_address(
    client: FlaskClient, limits: Any
) -> None:
    limits("RATE_LIMIT_LOGIN", "3/minute")
    for n, name in enumerate(["alice", "Alice", " ALICE "]):
        assert login(client, name, address=f"10.0.1.{n}").status_code == 401

    assert_rate_limited(login(client, "aLiCe", address="10.0.1.99"))
    assert login(client, "bob", address="10.0.1.99").status_code == 401


def test_the_per_username_count_uses_the_username_normalization(
    client: FlaskClient, limits: Any
) -> None:
    # The same normalization as the accounts: one account, one count, however it is spelt.
    limits("RATE_LIMIT_LOGIN", "2/minute")
    assert login(client, "Alice", address="10.0.9.1").status_code == 401
    assert login(client, "\uff41\uff4c\uff49\uff43\uff45", address="10.0.9.2").status_code == 401

    assert_rate_limited(login(client, "ALİCE".replace("İ", "I"), address="10.0.9.3"))


def test_a_limited_login_issues_no_token_even_with_the_right_password(
    client: FlaskClient, limits: Any
) -> None:
    user = f.customer(client)
    username = user["user"]["username"]
    limits("RATE_LIMIT_LOGIN", "2/minute")
    login(client, username, address="10.0.2.1")
    login(client, username, address="10.0.2.2")
    tokens = f.count_rows("api_tokens")

    assert_rate_limited(login(client, username, address="10.0.2.3", password=PASSWORD))
    assert f.count_rows("api_tokens") == tokens


# --- device tokens: the owner's known devices are not locked out --------------------------


@pytest.fixture
def behind_proxy(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app as behind one proxy (TRUSTED_PROXIES=1): X-Forwarded-For names the client."""
    monkeypatch.setitem(app.config, "TRUSTED_PROXIES", 1)
    monkeypatch.setattr(app, "wsgi_app", ProxyFix(app.wsgi_app, x_for=1, x_proto=1))


def login_via_proxy(
    client: FlaskClient,
    username: str,
    *,
    client_address: str,
    password: str = "wrong",
    device_token: str | None = None,
) -> Any:
    body = {"username": username, "password": password}
    if device_token is not None:
        body["device_token"] = device_token
    return client.post(
        LOGIN,
        json=body,
        headers={"X-Forwarded-For": client_address},
        environ_base={"REMOTE_ADDR": "10.9.9.9"},  # the proxy
    )


def test_an_attack_on_a_username_does_not_lock_the_owners_known_device_out(
    client: FlaskClient, limits: Any, behind_proxy: None, redis_conn: redis.Redis
) -> None:
    username = f.customer(client)["user"]["username"]
    limits("RATE_LIMIT_LOGIN", "10/minute")
    earlier = login_via_proxy(client, username, client_address="198.51.100.7", password=PASSWORD)
    device_token = earlier.get_json()["device_token"]
    redis_conn.flushdb()  # that login was in an earlier window
    for n in range(10):  # the attack: wrong passwords from many addresses, no device token
        assert login_via_proxy(client, username, client_address=f"203.0.113.{n}").status_code == 401

    with_device = login_via_proxy(
        client, username, client_address="192.0.2.10", password=PASSWORD, device_token=device_token
    )
    without_device = login_via_proxy(
        client, username, client_address="192.0.2.11", password=PASSWORD
    )

    assert with_device.status_code == 200, with_device.get_json()
    assert with_device.get_json()["device_token"] == device_token  # the device keeps its token
    assert_rate_limited(without_device)  # a new device still waits while the attack goes on


def test_wrong_passwords_with_a_device_token_are_limited_per_device(
    client: FlaskClient, limits: Any, behind_proxy: None
) -> None:
    signed_up = f.customer(client)
    username, device_token = signed_up["user"]["username"], signed_up["device_token"]
    limits("RATE_LIMIT_LOGIN", "3/minute")
    for n in range(3):
        response = login_via_proxy(
            client, username, client_address=f"203.0.113.{n}", device_token=device_token
        )
        assert response.status_code == 401

    assert_rate_limited(
        login_via_proxy(
            client,
            username,
            client_address="203.0.113.50",
            password=PASSWORD,
            device_token=device_token,
        )
    )
    # Those attempts were counted per device, not per username.
    assert login_via_proxy(client, username, client_address="203.0.113.51").status_code == 401


@pytest.mark.parametrize("whose", ["made-up", "another-account", "malformed"])
def test_a_device_token_that_is_not_the_accounts_counts_as_none(
    client: FlaskClient, limits: Any, behind_proxy: None, whose: str
) -> None:
    username = f.customer(client)["user"]["username"]
    device_token: Any = {
        "made-up": "not-a-device-token",
        "another-account": f.customer(client)["device_token"],  # the attacker's own account
        "malformed": ["x"],
    }[whose]
    limits("RATE_LIMIT_LOGIN", "3/minute")
    for n in range(3):
        response = login_via_proxy(
            client, username, client_address=f"203.0.113.{n}", device_token=device_token
        )
        assert response.status_code in (401, 422)

    assert_rate_limited(
        login_via_proxy(
            client, username, client_address="203.0.113.9", password=PASSWORD, device_token="x"
        )
    )


def test_device_tokens_are_issued_at_sign_up_and_sign_in_and_stored_hashed(
    client: FlaskClient,
) -> None:
    signed_up = f.customer(client)
    username = signed_up["user"]["username"]
    new_device = client.post(LOGIN, json={"username": username, "password": PASSWORD})
    known_device = client.post(
        LOGIN,
        json={
            "username": username,
            "password": PASSWORD,
            "device_token": signed_up["device_token"],
        },
    )

    tokens = {
        signed_up["device_token"],
        new_device.get_json()["device_token"],
        known_device.get_json()["device_token"],
    }
    assert len(tokens) == 2  # a known device keeps its token; a new one gets its own
    assert known_device.get_json()["device_token"] == signed_up["device_token"]
    assert f.count_rows("login_devices", user_id=signed_up["user"]["id"]) == 2
    for token in tokens:
        assert f.count_rows("login_devices", token_hash=token) == 0
        assert f.count_rows("login_devices", token_hash=sessions.hash_token(token)) == 1


def test_forwarded_for_is_ignored_without_trusted_proxies(client: FlaskClient, limits: Any) -> None:
    # Otherwise any client could pick a fresh address per request and never be limited.
    limits("RATE_LIMIT_LOGIN", "2/minute")
    for n in range(2):
        response = client.post(
            LOGIN,
            json={"username": f"x{n}", "password": "wrong"},
            headers={"X-Forwarded-For": f"192.0.2.{n}"},
            environ_base={"REMOTE_ADDR": "10.0.3.1"},
        )
        assert response.status_code == 401
    response = client.post(
        LOGIN,
        json={"username": "x9", "password": "wrong"},
        headers={"X-Forwarded-For": "192.0.2.9"},
        environ_base={"REMOTE_ADDR": "10.0.3.1"},
    )
    assert_rate_limited(response)


def test_registration_is_limited_per_address_across_both_roles(
    client: FlaskClient, limits: Any
) -> None:
    limits("RATE_LIMIT_REGISTER", "2/minute")
    assert register(client, "customer", "reg-a", address="10.0.4.1").status_code == 201
    assert register(client, "organizer", "reg-b", address="10.0.4.1").status_code == 201

    assert_rate_limited(register(client, "customer", "reg-c", address="10.0.4.1"))
    assert f.count_rows("users") == 2
    assert register(client, "customer", "reg-c", address="10.0.4.2").status_code == 201


def test_registration_is_limited_per_username(client: FlaskClient, limits: Any) -> None:
    limits("RATE_LIMIT_REGISTER", "2/minute")
    assert register(client, "customer", "taken", address="10.0.5.1").status_code == 201
    assert register(client, "organizer", "TAKEN", address="10.0.5.2").status_code == 409

    # Probing one name from many addresses stops at the limit.
    assert_rate_limited(register(client, "customer", "Taken", address="10.0.5.3"))


def test_login_and_registration_have_separate_budgets(client: FlaskClient, limits: Any) -> None:
    limits("RATE_LIMIT_REGISTER", "1/minute")
    limits("RATE_LIMIT_LOGIN", "5/minute")
    assert register(client, "customer", "solo", address="10.0.6.1").status_code == 201
    assert_rate_limited(register(client, "customer", "solo2", address="10.0.6.1"))
    assert login(client, "solo", address="10.0.6.1", password=PASSWORD).status_code == 200


# --- bookings ---------------------------------------------------------------------------


@pytest.fixture
def three_events(client: FlaskClient) -> list[int]:
    organizer = f.organizer(client)
    return [f.create_event(client, organizer["token"])["id"] for _ in range(3)]


def test_bookings_are_limited_per_user(
    client: FlaskClient, limits: Any, three_events: list[int]
) -> None:
    customer, other = f.customer(client), f.customer(client)
    limits("RATE_LIMIT_BOOKINGS", "2/minute")
    assert f.book(client, customer["token"], three_events[0]).status_code == 201
    assert f.book(client, customer["token"], three_events[1]).status_code == 201

    assert_rate_limited(f.book(client, customer["token"], three_events[2]))
    assert f.count_rows("bookings", event_id=three_events[2]) == 0
    assert f.booked_count(three_events[2]) == 0
    # Per user, not per address: another customer on the same address books fine.
    assert f.book(client, other["token"], three_events[2]).status_code == 201


def test_reactivation_spends_the_same_booking_budget(
    client: FlaskClient, limits: Any, three_events: list[int]
) -> None:
    customer = f.customer(client)
    booking = f.book(client, customer["token"], three_events[0]).get_json()
    client.post(f"{BOOKINGS}/{booking['id']}/cancel", headers=auth(customer["token"]))
    limits("RATE_LIMIT_BOOKINGS", "1/minute")
    assert f.book(client, customer["token"], three_events[1]).status_code == 201

    response = client.post(
        f"{BOOKINGS}/{booking['id']}/reactivate", headers=auth(customer["token"])
    )

    assert_rate_limited(response)
    assert f.booking_status(booking["id"]) == "cancelled"


def test_cancel_and_reads_are_not_limited(
    client: FlaskClient, limits: Any, three_events: list[int]
) -> None:
    customer = f.customer(client)
    booking = f.book(client, customer["token"], three_events[0]).get_json()
    limits("RATE_LIMIT_BOOKINGS", "1/minute")
    for _ in range(3):
        assert client.get(BOOKINGS, headers=auth(customer["token"])).status_code == 200
    cancel = client.post(f"{BOOKINGS}/{booking['id']}/cancel", headers=auth(customer["token"]))
    assert cancel.status_code == 200


def test_a_429_is_not_kept_as_the_answer_to_an_idempotency_key(
    client: FlaskClient, limits: Any, three_events: list[int]
) -> None:
    customer = f.customer(client)
    headers = {**auth(customer["token"]), "Idempotency-Key": "limited-once"}
    limits("RATE_LIMIT_BOOKINGS", "1/minute")
    assert f.book(client, customer["token"], three_events[0]).status_code == 201
    assert_rate_limited(client.post(BOOKINGS, json={"event_id": three_events[1]}, headers=headers))

    limits("RATE_LIMIT_BOOKINGS", "100/minute")
    retry = client.post(BOOKINGS, json={"event_id": three_events[1]}, headers=headers)
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers


def test_limits_can_be_switched_off(
    client: FlaskClient, limits: Any, three_events: list[int]
) -> None:
    customer = f.customer(client)
    limits("RATE_LIMIT_BOOKINGS", "1/minute")
    limits("RATE_LIMIT_LOGIN", "1/minute")
    limits("RATE_LIMIT_ENABLED", False)
    for event_id in three_events:
        assert f.book(client, customer["token"], event_id).status_code == 201
    for _ in range(3):
        assert login(client, "nobody", address="10.0.7.1").status_code == 401


# --- storage, configuration, documentation ----------------------------------------------


def test_counters_are_kept_in_redis(
    client: FlaskClient, limits: Any, redis_conn: redis.Redis
) -> None:
    # Shared storage is what makes a limit hold across instances and workers.
    limits("RATE_LIMIT_LOGIN", "5/minute")
    login(client, "counted", address="10.0.8.1")
    keys = [key.decode() for key in redis_conn.keys("LIMITS:*")]
    assert any("address:10.0.8.1" in key for key in keys), keys
    # Usernames are hashed in key names.
    assert not any("counted" in key for key in keys), keys
    assert any("username:" in key for key in keys), keys


@pytest.mark.parametrize("value", ["ten per minute", "10/fortnight", ""])
def test_a_malformed_limit_is_a_config_error(value: str) -> None:
    settings = config_module.from_environment()
    settings["RATE_LIMIT_LOGIN"] = value
    with pytest.raises(config_module.ConfigError, match="RATE_LIMIT_LOGIN"):
        config_module.validate(settings)


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/register/customer", "post"),
        ("/api/v1/auth/register/organizer", "post"),
        ("/api/v1/bookings", "post"),
        ("/api/v1/bookings/{booking_id}/reactivate", "post"),
    ],
)
def test_429_is_documented(client: FlaskClient, path: str, method: str) -> None:
    operation = client.get("/api/openapi.json").get_json()["paths"][path][method]
    response = operation["responses"]["429"]
    assert "rate_limited" in response["description"]
    assert "Retry-After" in response["headers"]
