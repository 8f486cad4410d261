"""Targeted bad input: each answer is the documented 4xx with its problem code, and writes nothing.

The request bodies come from the served OpenAPI document, so every string field of every body
is covered (a new field is fuzzed without touching this file), and the document is the oracle:
a value the schema allows must be accepted and stored as sent, one it forbids must be a 422.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.test import TestResponse

from booking_service import create_app
from booking_service.database import db
from booking_service.services import MAX_ID
from tests import factories
from tests.conftest import TEST_SETTINGS
from tests.factories import API, PASSWORD, auth

TABLES = (
    "users",
    "api_tokens",
    "events",
    "bookings",
    "holds",
    "waitlist_entries",
    "history_entries",
    "idempotency_keys",
)
METHODS = ("get", "post", "put", "patch", "delete")
_unique = itertools.count(1)


def _load_spec() -> dict[str, Any]:
    # The document as served; building an app opens no connection.
    return create_app(dict(TEST_SETTINGS)).test_client().get("/api/openapi.json").get_json()


SPEC = _load_spec()


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return SPEC["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _body_operations() -> list[tuple[str, str]]:
    return sorted(
        (method, path)
        for path, item in SPEC["paths"].items()
        for method, operation in item.items()
        if method in METHODS
        and "application/json" in operation.get("requestBody", {}).get("content", {})
    )


def _body_schema(method: str, path: str) -> dict[str, Any]:
    content = SPEC["paths"][path][method]["requestBody"]["content"]["application/json"]
    return _resolve(content["schema"])


def _fields(kind: str) -> list[tuple[str, str, str]]:
    """(method, path, field) for every body field of one JSON type."""
    return [
        (method, path, name)
        for method, path in _body_operations()
        for name, schema in _body_schema(method, path)["properties"].items()
        if schema.get("type") == kind and not schema.get("readOnly")
    ]


# --- a small world to send requests into ------------------------------------------------


@dataclass
class World:
    client: FlaskClient
    organizer: dict[str, Any]
    customer: dict[str, Any]
    event_id: int  # the organizer's upcoming event
    booking_id: int  # the customer's cancelled booking on it
    active_booking_id: int  # the customer's active booking on a second event
    sold_out_event_id: int  # an event whose one seat someone else booked
    webhook_id: int  # the organizer's webhook endpoint


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> World:
    organizer, customer = factories.organizer(client), factories.customer(client)
    event = factories.create_event(client, organizer["token"], capacity=5)
    booking = factories.book(client, customer["token"], event["id"]).get_json()
    cancelled = client.post(
        f"{API}/bookings/{booking['id']}/cancel", headers=auth(customer["token"])
    )
    assert cancelled.status_code == 200
    second = factories.create_event(client, organizer["token"], capacity=5)
    active = factories.book(client, customer["token"], second["id"]).get_json()
    sold_out = factories.create_event(client, organizer["token"], capacity=1)
    taken = factories.book(client, factories.customer(client)["token"], sold_out["id"])
    assert taken.status_code == 201
    webhook = client.post(f"{API}/webhooks", json=WEBHOOK, headers=auth(organizer["token"]))
    assert webhook.status_code == 201, webhook.get_json()
    return World(
        client,
        organizer,
        customer,
        event["id"],
        booking["id"],
        active["id"],
        sold_out["id"],
        webhook.get_json()["id"],
    )


# A public address, so no name lookup: valid wherever the tests run.
WEBHOOK = {"url": "https://93.184.216.34/hooks", "event_types": ["booking.created"]}


def _future(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def _valid_request(world: World, method: str, path: str) -> tuple[str, dict[str, Any], dict]:
    """A request that succeeds as is: (url, body, headers). Each call makes fresh names."""
    n = next(_unique)
    person = {
        "username": f"bad-input-{n}",
        "password": PASSWORD,
        "email": f"bad-input-{n}@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
    }
    event = {
        "title": f"Event {n}",
        "description": "About it",
        "start_time": _future(24),
        "end_time": _future(26),
        "capacity": 7,
    }
    organizer, customer = auth(world.organizer["token"]), auth(world.customer["token"])
    requests: dict[tuple[str, str], tuple[str, dict[str, Any], dict]] = {
        ("post", f"{API}/auth/register/customer"): (path, person, {}),
        ("post", f"{API}/auth/register/organizer"): (
            path,
            {**person, "organization_name": "Org", "business_address": "1 Main St"},
            {},
        ),
        ("post", f"{API}/auth/login"): (
            path,
            {"username": world.customer["user"]["username"], "password": PASSWORD},
            {},
        ),
        ("post", f"{API}/events"): (path, event, organizer),
        ("patch", f"{API}/events/{{event_id}}"): (
            f"{API}/events/{world.event_id}",
            event,
            organizer,
        ),
        ("post", f"{API}/bookings"): (path, {"event_id": world.event_id}, customer),
        ("patch", f"{API}/bookings/{{booking_id}}"): (
            f"{API}/bookings/{world.active_booking_id}",
            {"seats": 2},
            customer,
        ),
        ("post", f"{API}/events/{{event_id}}/holds"): (
            f"{API}/events/{world.event_id}/holds",
            {"seats": 1},
            customer,
        ),
        ("post", f"{API}/events/{{event_id}}/waitlist"): (
            f"{API}/events/{world.sold_out_event_id}/waitlist",
            {"seats": 1},
            customer,
        ),
        ("post", f"{API}/webhooks"): (path, WEBHOOK, organizer),
        ("patch", f"{API}/webhooks/{{webhook_id}}"): (
            f"{API}/webhooks/{world.webhook_id}",
            WEBHOOK,
            organizer,
        ),
    }
    assert (method, path) in requests, f"no valid request known for {method.upper()} {path}"
    return requests[(method, path)]


def _send(world: World, method: str, url: str, body: Any, headers: dict) -> TestResponse:
    return world.client.open(
        url,
        method=method.upper(),
        data=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def _counts() -> dict[str, int]:
    with db.transaction() as session:
        return {
            table: int(session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
            for table in TABLES
        }


@contextmanager
def _writes_nothing() -> Iterator[None]:
    """The block's requests must leave every table as it was."""
    before = _counts()
    yield
    assert _counts() == before


def _problem(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.content_type == "application/problem+json"
    problem = response.get_json()
    assert problem["code"] == code, problem
    assert problem["status"] == status
    return problem


def _accepts(schema: dict[str, Any], value: str) -> bool:
    """Whether the field's schema allows the string (its formats are not used here)."""
    if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 10**9):
        return False
    pattern = schema.get("pattern")
    return pattern is None or re.search(pattern, value) is not None


def _success_statuses(method: str, path: str) -> set[int]:
    if path.endswith("/login"):
        return {200, 401}  # a schema-valid username need not exist
    return {201} if method == "post" else {200}


def test_every_body_operation_is_covered(world: World):
    for method, path in _body_operations():
        _valid_request(world, method, path)  # asserts there is one


# --- oversized bodies -------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), _body_operations())
def test_oversized_body_is_413_and_writes_nothing(app: Flask, world: World, method, path):
    url, body, headers = _valid_request(world, method, path)
    padded = {**body, "padding": "x" * app.config["MAX_CONTENT_LENGTH"]}
    with _writes_nothing():
        _problem(_send(world, method, url, padded, headers), 413, "payload_too_large")


def test_largest_body_the_schema_allows_fits(app: Flask, world: World):
    """Every text field at its maxLength in astral characters, each JSON-escaped to 12 bytes."""
    for method, path in (("post", f"{API}/events"), ("post", f"{API}/auth/register/organizer")):
        url, body, headers = _valid_request(world, method, path)
        schema = _body_schema(method, path)
        for name, field in schema["properties"].items():
            if field.get("type") == "string" and "format" not in field and "maxLength" in field:
                prefix = f"{next(_unique)}-" if name == "username" else ""
                body[name] = prefix + "\U0001d518" * (field["maxLength"] - len(prefix))
        encoded = json.dumps(body)  # ensure_ascii: the longest encoding
        assert len(encoded) <= app.config["MAX_CONTENT_LENGTH"], len(encoded)
        response = _send(world, method, url, body, headers)
        assert response.status_code == 201, response.get_json()


# --- wrong types ------------------------------------------------------------------------

WRONG_TYPES = {
    "string": [0, 1.5, True, [], {}, ["text"]],
    "integer": ["1", 1.5, True, [], {}, "abc", 1e300],
}


@pytest.mark.parametrize(
    ("method", "path", "field", "kind"),
    [(*item, kind) for kind in WRONG_TYPES for item in _fields(kind)],
)
def test_wrong_type_is_422_naming_the_field(world: World, method, path, field, kind):
    for value in WRONG_TYPES[kind]:
        url, body, headers = _valid_request(world, method, path)
        with _writes_nothing():
            problem = _problem(
                _send(world, method, url, {**body, field: value}, headers), 422, "validation_error"
            )
        assert field in problem["errors"], (value, problem)


def test_a_body_that_is_not_an_object_is_422(world: World):
    for method, path in _body_operations():
        url, _, headers = _valid_request(world, method, path)
        for body in ([], "text", 1, None, [{"event_id": world.event_id}]):
            with _writes_nothing():
                _problem(_send(world, method, url, body, headers), 422, "validation_error")


# --- null and unicode in every string field ---------------------------------------------

UNICODE_VALUES = [
    "Zoë Ångström",
    "\u0634\u0644\u0648\u0645 \u05e9\u05dc\u05d5\u05dd",  # right-to-left scripts
    "\U0001d518\U0001d52b\U0001d526 \U0001f389",  # astral plane, emoji
    "e\u0301 a\u030a",  # combining marks
    "\u200b",  # zero-width space alone: nothing visible, so blank; never in a username
    "ali\u200dce",  # zero-width joiner inside: fine in text, refused in a username
    "\u3000 \u00a0\u2003",  # only Unicode spaces: blank
    " \t\n ",  # only ASCII whitespace: blank
    "\x00",
    "nul\x00inside",
    "\ufeff",
    "'; DROP TABLE users; --",
    "<script>alert(1)</script>",
]


@pytest.mark.parametrize(("method", "path", "field"), _fields("string"))
def test_null_in_string_field_follows_the_schema(world: World, method, path, field):
    url, body, headers = _valid_request(world, method, path)
    nullable = _body_schema(method, path)["properties"][field].get("nullable", False)
    if nullable:
        response = _send(world, method, url, {**body, field: None}, headers)
        assert response.status_code in _success_statuses(method, path), response.get_json()
        return
    with _writes_nothing():
        problem = _problem(
            _send(world, method, url, {**body, field: None}, headers), 422, "validation_error"
        )
    assert field in problem["errors"]


@pytest.mark.parametrize(("method", "path", "field"), _fields("string"))
def test_unicode_in_string_field_is_stored_as_sent_or_rejected(world: World, method, path, field):
    schema = _body_schema(method, path)["properties"][field]
    for value in UNICODE_VALUES:
        url, body, headers = _valid_request(world, method, path)
        if field == "username" and not path.endswith("/login"):
            value = f"{value}{next(_unique)}"  # usernames are unique
        accepted = "format" not in schema and _accepts(schema, value)
        response = _send(world, method, url, {**body, field: value}, headers)
        if not accepted:
            assert response.status_code == 422, (value, response.get_json())
            assert field in response.get_json()["errors"]
            continue
        assert response.status_code in _success_statuses(method, path), (value, response.get_json())
        answer = response.get_json()
        stored = answer.get("user", answer) if isinstance(answer, dict) else {}
        if field in stored:
            # A username is kept without leading and trailing white space (its description).
            assert stored[field] == (value.strip() if field == "username" else value)


@pytest.mark.parametrize(("method", "path", "field"), _fields("string"))
def test_unpaired_surrogate_is_422(world: World, method, path, field):
    """JSON can escape a lone surrogate; PostgreSQL and the password hash cannot take one."""
    url, body, headers = _valid_request(world, method, path)
    raw = json.dumps({**body, field: "PLACEHOLDER"}).replace("PLACEHOLDER", "ab\\ud800")
    with _writes_nothing():
        response = world.client.open(
            url, method=method.upper(), data=raw, content_type="application/json", headers=headers
        )
        problem = _problem(response, 422, "validation_error")
    assert field in problem["errors"]


# --- ids out of range -------------------------------------------------------------------

BAD_PATH_IDS = ["0", "-1", str(MAX_ID + 1), str(2**64), "9" * 40, "1.5", "1e3", "abc", "%201"]


def _id_paths() -> list[tuple[str, str]]:
    return sorted(
        (method, path)
        for path, item in SPEC["paths"].items()
        if "{" in path
        for method in item
        if method in METHODS
    )


@pytest.mark.parametrize(("method", "path"), _id_paths())
def test_path_id_out_of_range_is_404(world: World, method, path):
    for bad in BAD_PATH_IDS:
        url = re.sub(r"\{[^}]+\}", bad, path)
        for token in (world.customer["token"], world.organizer["token"]):
            with _writes_nothing():
                response = world.client.open(url, method=method.upper(), headers=auth(token))
                _problem(response, 404, "not_found")


@pytest.mark.parametrize("event_id", [0, -1, MAX_ID + 1, 2**64, 10**40, -(2**63) - 1])
def test_body_id_out_of_range_is_422(world: World, event_id: int):
    with _writes_nothing():
        response = factories.book(world.client, world.customer["token"], event_id)
        problem = _problem(response, 422, "validation_error")
    assert "event_id" in problem["errors"]


@pytest.mark.parametrize("event_id", ["0", "-1", str(MAX_ID + 1), "9" * 40, "x"])
def test_query_id_out_of_range_is_422(world: World, event_id: str):
    response = world.client.get(
        f"{API}/bookings",
        query_string={"event_id": event_id},
        headers=auth(world.customer["token"]),
    )
    assert "event_id" in _problem(response, 422, "validation_error")["errors"]


@pytest.mark.parametrize("page", [str(MAX_ID), str(MAX_ID + 1), "9" * 40])
def test_huge_page_number_is_an_empty_page(world: World, page: str):
    for url in (f"{API}/events", f"{API}/bookings", f"{API}/history"):
        response = world.client.get(
            url, query_string={"page": page}, headers=auth(world.customer["token"])
        )
        assert response.status_code == 200, response.get_json()
        assert response.get_json() == []


# --- malformed tokens -------------------------------------------------------------------


def _revoked_token(world: World) -> str:
    token = factories.customer(world.client)["token"]
    assert world.client.post(f"{API}/auth/logout", headers=auth(token)).status_code == 204
    return token


def _expired_token(world: World) -> str:
    signed_in = factories.customer(world.client)
    with db.transaction() as session:
        session.execute(
            text(
                "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE user_id = :u"
            ),
            {"u": signed_in["user"]["id"]},
        )
    return signed_in["token"]


MALFORMED_AUTHORIZATION: list[Callable[[World, str], str | None]] = [
    lambda w, t: None,  # no header at all
    lambda w, t: "",
    lambda w, t: "Bearer",
    lambda w, t: "Bearer ",
    lambda w, t: "Bearer    ",
    lambda w, t: "Basic dXNlcjpwYXNz",
    lambda w, t: f"Token {t}",
    lambda w, t: t,  # no scheme
    lambda w, t: f"Bearer {t}x",
    lambda w, t: f"Bearer {t[:-1]}",
    lambda w, t: f"Bearer {t} {t}",
    lambda w, t: "Bearer " + "x" * 8000,
    lambda w, t: "Bearer caf\xe9",
    lambda w, t: "Bearer \x01\x02",
    lambda w, t: f"Bearer {_revoked_token(w)}",
    lambda w, t: f"Bearer {_expired_token(w)}",
]


@pytest.mark.parametrize("make_header", MALFORMED_AUTHORIZATION)
def test_malformed_token_is_401_and_writes_nothing(world: World, make_header):
    header = make_header(world, world.customer["token"])
    headers = {} if header is None else {"Authorization": header}
    requests = [
        ("GET", f"{API}/auth/me", None),
        ("POST", f"{API}/bookings", {"event_id": world.event_id}),
        ("POST", f"{API}/bookings/{world.booking_id}/reactivate", None),
        (
            "POST",
            f"{API}/events",
            {"title": "t", "start_time": _future(1), "end_time": _future(2), "capacity": 1},
        ),
        ("GET", f"{API}/events?mine=true", None),
        ("POST", f"{API}/auth/logout", None),
    ]
    with _writes_nothing():
        for method, url, body in requests:
            response = world.client.open(url, method=method, json=body, headers=headers)
            _problem(response, 401, "unauthorized")


# --- malformed Idempotency-Key ----------------------------------------------------------

MALFORMED_KEYS = [
    "",
    " ",
    "\t",
    '""',
    "k" * 256,
    '"' + "k" * 256 + '"',
    "caf\xe9",
    "tab\tinside",
    "\x7f",
    "\x01key",
]


@pytest.mark.parametrize("key", MALFORMED_KEYS)
def test_malformed_idempotency_key_is_400_and_writes_nothing(world: World, key: str):
    customer = auth(world.customer["token"])
    with _writes_nothing():
        booked = world.client.post(
            f"{API}/bookings",
            json={"event_id": world.event_id},
            headers={**customer, "Idempotency-Key": key},
        )
        _problem(booked, 400, "invalid_idempotency_key")
        reactivated = world.client.post(
            f"{API}/bookings/{world.booking_id}/reactivate",
            headers={**customer, "Idempotency-Key": key},
        )
        _problem(reactivated, 400, "invalid_idempotency_key")
    status = world.client.get(f"{API}/bookings/{world.booking_id}", headers=customer)
    assert status.get_json()["status"] == "cancelled"


def test_longest_idempotency_key_is_accepted(world: World):
    response = world.client.post(
        f"{API}/bookings/{world.booking_id}/reactivate",
        headers={**auth(world.customer["token"]), "Idempotency-Key": "k" * 255},
    )
    assert response.status_code == 200, response.get_json()
