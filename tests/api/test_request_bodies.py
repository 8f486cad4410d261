"""Request bodies a hostile client can send: refused with a 4xx problem, never a 500.

Every endpoint that takes a JSON body is sent each of them, signed in where it needs a token
(a body is only read after authentication), with and without an Idempotency-Key where the
endpoint takes one.
"""

from __future__ import annotations

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
