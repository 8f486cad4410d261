"""Request bodies a hostile client can send: refused with a 4xx problem, never a 500.

Every endpoint that takes a JSON body is sent each of them, signed in where it needs a token
(a body is only read after authentication), with and without an Idempotency-Key where the
endpoint takes one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests import factories as f
from tests.factories import API, assert_problem, auth

# 2 KB: past the parser's recursion limit, far below MAX_CONTENT_LENGTH.
DEEPLY_NESTED = "[" * 1000 + "]" * 1000
# One digit past Python's limit on converting a decimal string to int (4,300 digits).
LONG_NUMBER = '{"n": ' + "1" * 4301 + "}"

JSON_BODY_ENDPOINTS = [
    "register-customer",
    "register-organizer",
    "login",
    "create-event",
    "update-event",
    "book",
    "book-with-idempotency-key",
]


def send(client: FlaskClient, endpoint: str, body: str | bytes, content_type: str | None) -> Any:
    """POST (or PATCH) the raw body to the endpoint, as a user allowed to call it."""
    method, url, headers = "POST", "", {}
    if endpoint.startswith("register-"):
        url = f"{API}/auth/register/{endpoint.removeprefix('register-')}"
    elif endpoint == "login":
        url = f"{API}/auth/login"
    elif endpoint in ("create-event", "update-event"):
        organizer = f.organizer(client)
        headers = auth(organizer["token"])
        url = f"{API}/events"
        if endpoint == "update-event":
            method = "PATCH"
            url += f"/{f.create_event(client, organizer['token'])['id']}"
    else:
        headers = auth(f.customer(client)["token"])
        url = f"{API}/bookings"
        if endpoint == "book-with-idempotency-key":
            headers["Idempotency-Key"] = "hostile-body"
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.open(url, method=method, data=body, headers=headers)


@pytest.mark.parametrize("endpoint", JSON_BODY_ENDPOINTS)
@pytest.mark.parametrize(
    "body", [DEEPLY_NESTED, LONG_NUMBER], ids=["nested-1000-deep", "number-4301-digits"]
)
def test_a_body_the_parser_cannot_take_is_a_bad_request_not_a_crash(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, endpoint: str, body: str
) -> None:
    with caplog.at_level(logging.WARNING):
        response = send(client, endpoint, body, "application/json")

    assert_problem(response, 400, "bad_request")
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert logged == [], [r.getMessage() for r in logged]


# --- the body's media type ----------------------------------------------------------------

VALID_BODIES = {
    "register-customer": {"username": "mt-user", "password": "long-enough", "email": "a@b.cd"},
    "register-organizer": {
        "username": "mt-org",
        "password": "long-enough",
        "email": "a@b.cd",
        "organization_name": "Org",
    },
    "login": {"username": "mt-user", "password": "long-enough"},
    "create-event": {"title": "T", "start_time": "2031-01-01T10:00:00Z", "capacity": 3},
    "update-event": {"title": "T"},
    "book": {"event_id": 1},
    "book-with-idempotency-key": {"event_id": 1},
}


@pytest.mark.parametrize("endpoint", JSON_BODY_ENDPOINTS)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", None],
    ids=["text", "form", "xml", "none"],
)
def test_a_body_that_is_not_declared_json_is_unsupported_media_type(
    client: FlaskClient, endpoint: str, content_type: str | None
) -> None:
    body = json.dumps(VALID_BODIES[endpoint])
    before = {table: f.count_rows(table) for table in ("users", "events", "bookings")}

    response = send(client, endpoint, body, content_type)

    problem = assert_problem(response, 415, "unsupported_media_type")
    assert "application/json" in problem["detail"]
    # Nothing but the users and events the request itself needed was written.
    assert f.count_rows("bookings") == before["bookings"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"],
)
def test_json_and_json_suffixed_media_types_are_read(
    client: FlaskClient, content_type: str
) -> None:
    organizer = f.organizer(client)
    event = f.create_event(client, organizer["token"])

    response = client.patch(
        f"{API}/events/{event['id']}",
        data=json.dumps({"title": "Renamed"}),
        headers={**auth(organizer["token"]), "Content-Type": content_type},
    )

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["title"] == "Renamed"


def test_an_empty_body_of_another_type_is_validated_as_missing(client: FlaskClient) -> None:
    organizer = f.organizer(client)
    response = client.post(
        f"{API}/events",
        data=b"",
        headers={**auth(organizer["token"]), "Content-Type": "text/plain"},
    )
    problem = assert_problem(response, 422, "validation_error")
    assert "title" in problem["errors"]


@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_endpoints_without_a_body_still_take_a_bare_post(
    client: FlaskClient, content_type: str | None
) -> None:
    organizer, customer = f.organizer(client), f.customer(client)
    event = f.create_event(client, organizer["token"])
    booking = f.book(client, customer["token"], event["id"]).get_json()
    headers = auth(customer["token"])
    if content_type is not None:
        headers["Content-Type"] = content_type

    cancel = client.post(f"{API}/bookings/{booking['id']}/cancel", headers=headers)
    reactivate = client.post(f"{API}/bookings/{booking['id']}/reactivate", headers=headers)

    assert cancel.status_code == 200, cancel.get_json()
    assert reactivate.status_code == 200, reactivate.get_json()


def test_415_is_documented_on_every_operation_with_a_json_body(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    with_body, without_body = [], []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            (with_body if "requestBody" in operation else without_body).append(
                (method, path, operation["responses"])
            )
    # register x2, login, create and update an event, book, change seats, hold, join a waitlist,
    # create and update a webhook endpoint
    assert len(with_body) == 11
    for method, path, responses in with_body:
        assert "unsupported_media_type" in responses.get("415", {}).get("description", ""), (
            method,
            path,
        )
    for method, path, responses in without_body:
        assert "415" not in responses, (method, path)
