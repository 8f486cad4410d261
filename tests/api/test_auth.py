"""Accounts: registration, sign-in, sign-out and the current user (docs/architecture.md, "HTTP
contract")."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests import factories as f
from tests.factories import API, PASSWORD, auth

REGISTER_ORGANIZER = f"{API}/auth/register/organizer"
REGISTER_CUSTOMER = f"{API}/auth/register/customer"
LOGIN = f"{API}/auth/login"
LOGOUT = f"{API}/auth/logout"
ME = f"{API}/auth/me"

USER_FIELDS = {
    "id",
    "username",
    "email",
    "first_name",
    "last_name",
    "role",
    "organization_name",
    "business_address",
    "created_at",
    "updated_at",
}


def customer_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "username": "carol",
        "password": PASSWORD,
        "email": "carol@example.com",
        "first_name": "Carol",
        "last_name": "Client",
    }
    body.update(overrides)
    return body


def organizer_body(**overrides: Any) -> dict[str, Any]:
    body = customer_body(username="olga", email="olga@example.com", first_name="Olga")
    body.update(organization_name="Olga Events", business_address="1 Hall Road")
    body.update(overrides)
    return body


def assert_validation_error(response: Any, *fields: str) -> dict[str, Any]:
    assert response.status_code == 422, response.get_json()
    assert response.content_type == "application/problem+json"
    problem = response.get_json()
    assert problem["code"] == "validation_error"
    for field in fields:
        assert field in problem["errors"], problem["errors"]
        assert problem["errors"][field], problem["errors"]
    return problem


def assert_nothing_registered() -> None:
    assert f.count_rows("users") == 0
    assert f.count_rows("api_tokens") == 0
    assert f.count_rows("history_entries") == 0


# --- registration -----------------------------------------------------------------------


def test_register_organizer_returns_user_with_organizer_fields_and_token(client: FlaskClient):
    response = client.post(REGISTER_ORGANIZER, json=organizer_body())

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"user", "token", "device_token"}
    user = body["user"]
    assert set(user) == USER_FIELDS
    assert user["username"] == "olga"
    assert user["email"] == "olga@example.com"
    assert user["first_name"] == "Olga"
    assert user["last_name"] == "Client"
    assert user["role"] == "organizer"
    assert user["organization_name"] == "Olga Events"
    assert user["business_address"] == "1 Hall Road"
    assert isinstance(user["id"], int)
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    assert isinstance(body["device_token"], str) and len(body["device_token"]) >= 32
    assert body["device_token"] != body["token"]


def test_register_customer_returns_customer_role_without_organizer_fields(client: FlaskClient):
    response = client.post(REGISTER_CUSTOMER, json=customer_body())

    assert response.status_code == 201
    user = response.get_json()["user"]
    assert set(user) == USER_FIELDS
    assert user["role"] == "customer"
    assert user["username"] == "carol"
    assert user["organization_name"] is None
    assert user["business_address"] is None


def test_registration_never_returns_the_password_or_its_hash(client: FlaskClient):
    response = client.post(REGISTER_CUSTOMER, json=customer_body())

    text = response.get_data(as_text=True)
    assert PASSWORD not in text
    assert "password" not in response.get_json()["user"]


def test_registration_token_authenticates_immediately(client: FlaskClient):
    signed_in = client.post(REGISTER_CUSTOMER, json=customer_body()).get_json()

    me = client.get(ME, headers=auth(signed_in["token"]))

    assert me.status_code == 200
    assert me.get_json()["id"] == signed_in["user"]["id"]


def test_registration_stores_only_a_hash_of_the_token(client: FlaskClient):
    token = client.post(REGISTER_CUSTOMER, json=customer_body()).get_json()["token"]

    assert f.count_rows("api_tokens") == 1
    assert f.count_rows("api_tokens", token_hash=token) == 0


def test_organizer_business_address_is_optional(client: FlaskClient):
    body = organizer_body()
    del body["business_address"]

    response = client.post(REGISTER_ORGANIZER, json=body)

    assert response.status_code == 201
    assert response.get_json()["user"]["business_address"] is None


def test_first_and_last_name_default_to_empty(client: FlaskClient):
    body = customer_body()
    del body["first_name"], body["last_name"]

    response = client.post(REGISTER_CUSTOMER, json=body)

    assert response.status_code == 201
    user = response.get_json()["user"]
    assert (user["first_name"], user["last_name"]) == ("", "")


def test_organizer_registration_requires_organization_name(client: FlaskClient):
    body = organizer_body()
    del body["organization_name"]

    response = client.post(REGISTER_ORGANIZER, json=body)

    assert_validation_error(response, "organization_name")
    assert_nothing_registered()


def test_organizer_registration_rejects_blank_organization_name(client: FlaskClient):
    response = client.post(REGISTER_ORGANIZER, json=organizer_body(organization_name="  "))

    assert_validation_error(response, "organization_name")
    assert_nothing_registered()


@pytest.mark.parametrize("url", [REGISTER_CUSTOMER, REGISTER_ORGANIZER])
def test_registration_reports_every_missing_field(client: FlaskClient, url: str):
    response = client.post(url, json={})

    problem = assert_validation_error(response, "username", "password", "email")
    if url == REGISTER_ORGANIZER:
        assert "organization_name" in problem["errors"]
    assert problem["status"] == 422
    assert_nothing_registered()


@pytest.mark.parametrize("password", ["", "short", "1234567"])
def test_registration_rejects_password_shorter_than_eight(client: FlaskClient, password: str):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(password=password))

    problem = assert_validation_error(response, "password")
    assert set(problem["errors"]) == {"password"}
    assert_nothing_registered()


def test_registration_accepts_password_of_exactly_eight(client: FlaskClient):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(password="12345678"))

    assert response.status_code == 201


def test_registration_rejects_overlong_password(client: FlaskClient):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(password="x" * 129))

    assert_validation_error(response, "password")
    assert_nothing_registered()


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "a b@example.com"])
def test_registration_rejects_malformed_email(client: FlaskClient, email: str):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(email=email))

    problem = assert_validation_error(response, "email")
    assert set(problem["errors"]) == {"email"}
    assert_nothing_registered()


@pytest.mark.parametrize("username", ["", "   ", "\t"])
def test_registration_rejects_blank_username(client: FlaskClient, username: str):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(username=username))

    assert_validation_error(response, "username")
    assert_nothing_registered()


def test_registration_rejects_overlong_username(client: FlaskClient):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(username="u" * 151))

    assert_validation_error(response, "username")
    assert_nothing_registered()


@pytest.mark.parametrize("field", ["username", "first_name", "last_name"])
def test_registration_rejects_nul_characters_as_invalid_input(client: FlaskClient, field: str):
    body = customer_body()
    body[field] = "bad\x00name"

    response = client.post(REGISTER_CUSTOMER, json=body)

    assert_validation_error(response, field)
    assert_nothing_registered()


def test_registration_rejects_nul_in_organization_name(client: FlaskClient):
    response = client.post(REGISTER_ORGANIZER, json=organizer_body(organization_name="A\x00B"))

    assert_validation_error(response, "organization_name")
    assert_nothing_registered()


def test_registration_rejects_unknown_field(client: FlaskClient):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(is_admin=True))

    problem = assert_validation_error(response, "is_admin")
    assert set(problem["errors"]) == {"is_admin"}
    assert_nothing_registered()


def test_customer_registration_rejects_organizer_only_fields(client: FlaskClient):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(organization_name="Sneaky Ltd"))

    assert_validation_error(response, "organization_name")
    assert_nothing_registered()


def test_registration_rejects_role_field_so_nobody_can_pick_admin(client: FlaskClient):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(role="admin"))

    assert_validation_error(response, "role")
    assert_nothing_registered()


@pytest.mark.parametrize("field,value", [("username", 42), ("email", ["x"]), ("password", None)])
def test_registration_rejects_wrong_types(client: FlaskClient, field: str, value: Any):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(**{field: value}))

    assert_validation_error(response, field)
    assert_nothing_registered()


def test_registration_with_malformed_json_is_a_bad_request(client: FlaskClient):
    response = client.post(REGISTER_CUSTOMER, data='{"username": ', content_type="application/json")

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "bad_request"
    assert_nothing_registered()


def test_registering_a_taken_username_is_a_conflict(client: FlaskClient):
    assert client.post(REGISTER_CUSTOMER, json=customer_body()).status_code == 201

    response = client.post(REGISTER_CUSTOMER, json=customer_body(email="other@example.com"))

    assert response.status_code == 409
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "username_taken"
    assert f.count_rows("users") == 1
    assert f.count_rows("api_tokens") == 1
    assert f.count_rows("history_entries") == 1


@pytest.mark.parametrize("variant", ["CAROL", "Carol", "cArOl"])
def test_username_uniqueness_ignores_case(client: FlaskClient, variant: str):
    assert client.post(REGISTER_CUSTOMER, json=customer_body()).status_code == 201

    response = client.post(REGISTER_CUSTOMER, json=customer_body(username=variant))

    assert response.status_code == 409
    assert response.get_json()["code"] == "username_taken"
    assert f.count_rows("users") == 1


def test_username_is_unique_across_roles(client: FlaskClient):
    assert client.post(REGISTER_CUSTOMER, json=customer_body(username="sam")).status_code == 201

    response = client.post(REGISTER_ORGANIZER, json=organizer_body(username="Sam"))

    assert response.status_code == 409
    assert response.get_json()["code"] == "username_taken"
    assert f.count_rows("users") == 1


# --- usernames: one normalization (NFKC, case folded, trimmed) --------------------------


@pytest.mark.parametrize(
    "username",
    [
        "İzmir",
        "ΟΔΥΣΣΕΑΣ",
        "Straße",
        "ǅemal",
        "\uff21\uff2c\uff29\uff23\uff25",
        "Zoë",
        "e\u0301cole",
    ],
)
def test_a_username_signs_in_with_exactly_what_was_registered(client: FlaskClient, username: str):
    registered = client.post(REGISTER_CUSTOMER, json=customer_body(username=username))
    assert registered.status_code == 201, registered.get_json()

    response = client.post(LOGIN, json={"username": username, "password": PASSWORD})

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["user"]["id"] == registered.get_json()["user"]["id"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("ΟΔΥΣΣΕΑΣ", "οδυσσεας"),  # final sigma
        ("alice", "alice "),
        ("alice", " Alice"),
        ("alice", "\uff41\uff4c\uff49\uff43\uff45"),  # fullwidth
        ("Straße", "STRASSE"),
        ("école", "e\u0301cole"),  # composed and decomposed é
        ("ﬁnn", "finn"),  # ligature
    ],
)
def test_usernames_that_normalize_alike_are_one_account(
    client: FlaskClient, first: str, second: str
):
    assert client.post(REGISTER_CUSTOMER, json=customer_body(username=first)).status_code == 201

    taken = client.post(REGISTER_CUSTOMER, json=customer_body(username=second))
    signed_in = client.post(LOGIN, json={"username": second, "password": PASSWORD})

    assert taken.status_code == 409, taken.get_json()
    assert taken.get_json()["code"] == "username_taken"
    assert f.count_rows("users") == 1
    assert signed_in.status_code == 200, signed_in.get_json()


@pytest.mark.parametrize(
    "username",
    [
        "alice\u200b",  # zero-width space
        "al\u200dice",  # zero-width joiner
        "\ufeffalice",  # byte order mark
        "ali\u2060ce",  # word joiner
        "ali\u00adce",  # soft hyphen
        "ali\u202ece",  # right-to-left override
        "ali\nce",
        "alice\n",
        "\talice",
        "ali\x7fce",
        "ali\u2028ce",  # line separator
    ],
)
def test_control_and_invisible_characters_in_a_username_are_refused(
    client: FlaskClient, username: str
):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(username=username))

    problem = assert_validation_error(response, "username")
    assert set(problem["errors"]) == {"username"}
    assert_nothing_registered()


def test_the_username_is_kept_as_given_but_trimmed(client: FlaskClient):
    response = client.post(REGISTER_CUSTOMER, json=customer_body(username="  Zoë Smith "))

    assert response.status_code == 201
    assert response.get_json()["user"]["username"] == "Zoë Smith"
    for variant in ("zoë smith", "ZOË SMITH", " zoe\u0308 smith"):
        login = client.post(LOGIN, json={"username": variant, "password": PASSWORD})
        assert login.status_code == 200, (variant, login.get_json())
        assert login.get_json()["user"]["username"] == "Zoë Smith"


def test_a_username_whose_normal_form_is_too_long_is_refused(client: FlaskClient):
    # U+FDFA is one character that NFKC spells as 18: the key column and its index are bounded.
    response = client.post(REGISTER_CUSTOMER, json=customer_body(username="\ufdfa" * 150))

    assert_validation_error(response, "username")
    assert_nothing_registered()


# --- login ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["organizer", "customer"])
def test_login_returns_user_and_a_fresh_working_token(client: FlaskClient, role: str):
    registered = f.register(client, role)
    username = registered["user"]["username"]

    response = client.post(LOGIN, json={"username": username, "password": PASSWORD})

    assert response.status_code == 200
    body = response.get_json()
    assert body["user"]["id"] == registered["user"]["id"]
    assert body["user"]["role"] == role
    assert body["token"] != registered["token"]
    assert client.get(ME, headers=auth(body["token"])).status_code == 200
    # Signing in again does not revoke the earlier token.
    assert client.get(ME, headers=auth(registered["token"])).status_code == 200


def test_login_username_is_case_insensitive(client: FlaskClient):
    client.post(REGISTER_CUSTOMER, json=customer_body(username="Carol"))

    response = client.post(LOGIN, json={"username": "cAROL", "password": PASSWORD})

    assert response.status_code == 200
    assert response.get_json()["user"]["username"] == "Carol"


def test_login_with_wrong_password_is_invalid_credentials(client: FlaskClient):
    user = f.customer(client)["user"]
    tokens_before = f.count_rows("api_tokens")

    response = client.post(LOGIN, json={"username": user["username"], "password": "wrong-pass"})

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "invalid_credentials"
    assert f.count_rows("api_tokens") == tokens_before
    assert f.count_rows("history_entries", action="login") == 0


def test_login_with_unknown_user_is_invalid_credentials(client: FlaskClient):
    response = client.post(LOGIN, json={"username": "nobody", "password": PASSWORD})

    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_credentials"
    assert f.count_rows("api_tokens") == 0


def test_login_failure_does_not_reveal_whether_the_user_exists(client: FlaskClient):
    user = f.customer(client)["user"]

    wrong_password = client.post(LOGIN, json={"username": user["username"], "password": "nope1234"})
    unknown_user = client.post(LOGIN, json={"username": "ghost", "password": "nope1234"})

    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.get_json() == unknown_user.get_json()


def test_login_requires_username_and_password(client: FlaskClient):
    response = client.post(LOGIN, json={})

    assert_validation_error(response, "username", "password")


def test_login_rejects_nul_in_username(client: FlaskClient):
    response = client.post(LOGIN, json={"username": "a\x00b", "password": PASSWORD})

    assert_validation_error(response, "username")


# --- logout -----------------------------------------------------------------------------


def test_logout_answers_204_and_the_token_stops_working(client: FlaskClient):
    token = f.customer(client)["token"]
    assert client.get(ME, headers=auth(token)).status_code == 200

    response = client.post(LOGOUT, headers=auth(token))

    assert response.status_code == 204
    assert response.get_data() == b""
    after = client.get(ME, headers=auth(token))
    assert after.status_code == 401
    assert after.get_json()["code"] == "unauthorized"


def test_logout_revokes_only_the_token_it_was_sent_with(client: FlaskClient):
    registered = f.organizer(client)
    other = client.post(
        LOGIN, json={"username": registered["user"]["username"], "password": PASSWORD}
    ).get_json()["token"]

    assert client.post(LOGOUT, headers=auth(registered["token"])).status_code == 204

    assert client.get(ME, headers=auth(registered["token"])).status_code == 401
    assert client.get(ME, headers=auth(other)).status_code == 200


def test_logging_out_twice_fails_the_second_time(client: FlaskClient):
    token = f.customer(client)["token"]
    assert client.post(LOGOUT, headers=auth(token)).status_code == 204

    response = client.post(LOGOUT, headers=auth(token))

    assert response.status_code == 401
    assert f.count_rows("history_entries", action="logout") == 1


def test_logout_without_token_is_unauthorized(client: FlaskClient):
    response = client.post(LOGOUT)

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "unauthorized"


def test_logout_with_unknown_token_is_unauthorized(client: FlaskClient):
    token = f.customer(client)["token"]

    response = client.post(LOGOUT, headers=auth("not-" + token))

    assert response.status_code == 401
    assert response.get_json()["code"] == "unauthorized"
    assert client.get(ME, headers=auth(token)).status_code == 200
    assert f.count_rows("history_entries", action="logout") == 0


# --- me ---------------------------------------------------------------------------------


def test_me_returns_organizer_with_role_and_organizer_fields(client: FlaskClient):
    signed_in = client.post(REGISTER_ORGANIZER, json=organizer_body()).get_json()

    response = client.get(ME, headers=auth(signed_in["token"]))

    assert response.status_code == 200
    me = response.get_json()
    assert set(me) == USER_FIELDS
    assert me == signed_in["user"]
    assert me["role"] == "organizer"
    assert me["organization_name"] == "Olga Events"
    assert me["business_address"] == "1 Hall Road"


def test_me_returns_customer_with_role(client: FlaskClient):
    signed_in = client.post(REGISTER_CUSTOMER, json=customer_body()).get_json()

    response = client.get(ME, headers=auth(signed_in["token"]))

    assert response.status_code == 200
    me = response.get_json()
    assert me == signed_in["user"]
    assert me["role"] == "customer"
    assert me["organization_name"] is None


def test_me_identifies_each_user_by_their_own_token(client: FlaskClient):
    first = f.customer(client)
    second = f.organizer(client)

    assert client.get(ME, headers=auth(first["token"])).get_json()["id"] == first["user"]["id"]
    assert client.get(ME, headers=auth(second["token"])).get_json()["id"] == second["user"]["id"]


def test_me_without_token_is_unauthorized(client: FlaskClient):
    response = client.get(ME)

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "unauthorized"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Token {token}",
        "Basic {token}",
        "{token}",
        "Bearer{token}",
        "Bearer {token} extra",
        "Bearer not-a-real-token",
    ],
)
def test_me_rejects_malformed_authorization_headers(client: FlaskClient, header: str):
    token = f.customer(client)["token"]

    response = client.get(ME, headers={"Authorization": header.format(token=token)})

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "unauthorized"


def test_bearer_scheme_is_case_insensitive(client: FlaskClient):
    token = f.customer(client)["token"]

    response = client.get(ME, headers={"Authorization": f"bearer {token}"})

    assert response.status_code == 200


def test_an_unknown_username_costs_as_much_as_a_wrong_password(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
):
    # A measurably slow method, so that the hash dominates each login's time; the dummy check
    # for an unknown username must pay the configured method, not a cheap one.
    from booking_service.services import accounts

    monkeypatch.setattr(accounts.settings, "password_hash_method", "pbkdf2:sha256:200000")
    username = f.customer(client)["user"]["username"]

    def seconds(name: str) -> float:
        started = time.perf_counter()
        response = client.post(LOGIN, json={"username": name, "password": "wrong-password"})
        elapsed = time.perf_counter() - started
        assert response.status_code == 401
        return elapsed

    seconds("ghost")  # the dummy hash for this method may be built on first use
    known, unknown = [], []
    for _ in range(7):  # interleaved, so that a noisy spell hits both sides alike
        known.append(seconds(username))
        unknown.append(seconds("ghost"))

    assert statistics.median(unknown) >= 0.5 * statistics.median(known), (known, unknown)
