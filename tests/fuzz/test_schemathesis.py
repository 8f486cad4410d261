"""Schemathesis against /api/openapi.json with every built-in check, as a customer and an organizer.

Every operation of the served document is fuzzed (examples, coverage and fuzzing phases, positive
and negative data) and every response goes through all of Schemathesis' checks: no 5xx, status
codes, content types, headers and bodies as documented, schema-valid requests accepted and
schema-violating ones rejected, authentication not ignored.

Some rules cannot be written in JSON Schema, so positive cases are brought in line with them
before they are sent (negative cases are left alone):

- an event's ``start_time`` must be in the future and its ``end_time`` after it (documented in
  the field descriptions). Generated times that already obey this are kept as generated;
- in the history query, ``until`` must not be before ``since`` (the two are swapped);
- a new username must not hold invisible formatting characters beyond U+FFFF (the pattern
  cannot list them; the field description says so): they are dropped;
- a webhook's ``url`` must be an http(s) URL whose host has only public addresses (its
  description says so; which addresses a name has is not the document's to say): a positive
  body's URL becomes a public address's;
- an ``Idempotency-Key`` is single-use per request body. Generated keys repeat across
  examples, and a key reused with another body is rightly 422; each example therefore starts
  with no remembered keys, like a client that never reuses one.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from sqlalchemy import text

from booking_service import create_app
from booking_service.database import db
from tests import factories
from tests.conftest import TEST_SETTINGS

pytestmark = pytest.mark.slow

# The document is read from the app's /api/openapi.json, as a client would read it. Building
# the app opens no connection; the ``app`` fixture the tests request recreates the database.
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", create_app(dict(TEST_SETTINGS)))

FUZZ_SETTINGS = settings(
    max_examples=50,
    derandomize=True,  # the same examples on every run: a failure here is reproducible
    database=None,
    deadline=None,
    # Slow generation (long patterned strings) is fine; the examples are what matter.
    suppress_health_check=list(HealthCheck),
)


# (role, "METHOD /path", positive|negative) -> requests sent; printed at the end of the run.
SENT: Counter[tuple[str, str, str]] = Counter()


class FuzzSummary:
    """Prints how much was fuzzed, so that a shrinking run is visible in CI logs."""

    name = "booking-fuzz-summary"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not SENT:
            return
        terminalreporter.section("schemathesis")
        operations = {operation for _, operation, _ in SENT}
        by = Counter()
        for (role, _, mode), count in SENT.items():
            by[role] += count
            by[mode] += count
        terminalreporter.write_line(
            f"{len(operations)} operations, {sum(SENT.values())} requests "
            f"(customer {by['customer']}, organizer {by['organizer']}; "
            f"positive {by['positive']}, negative {by['negative']})"
        )


@pytest.fixture(autouse=True)
def _summary(request: pytest.FixtureRequest) -> None:
    if not request.config.pluginmanager.has_plugin(FuzzSummary.name):
        request.config.pluginmanager.register(FuzzSummary(), FuzzSummary.name)


@pytest.fixture
def customer_token(app: Flask, client: FlaskClient) -> str:
    return factories.customer(client)["token"]


@pytest.fixture
def organizer_token(app: Flask, client: FlaskClient) -> str:
    return factories.organizer(client)["token"]


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _obey_event_time_rules(case: Any) -> None:
    """Make a positive event body's times future and ordered, keeping them where they are."""
    body = case.body
    if not isinstance(body, dict) or case.meta.is_negative_at(ParameterLocation.BODY):
        return
    now = datetime.now(UTC)
    start, end = _parse(body.get("start_time")), _parse(body.get("end_time"))
    if "start_time" in body and (start is None or start <= now + timedelta(minutes=5)):
        start = now + timedelta(days=1)
        body["start_time"] = start.isoformat()
    if "end_time" in body and (end is None or end <= (start or now)):
        body["end_time"] = ((start or now) + timedelta(hours=2)).isoformat()


def _obey_history_range_rule(case: Any) -> None:
    """In a positive query, ``until`` must not be before ``since``: order them."""
    query = case.query
    if not isinstance(query, dict) or case.meta.is_negative_at(ParameterLocation.QUERY):
        return
    since, until = _parse(query.get("since")), _parse(query.get("until"))
    if since is not None and until is not None and until < since:
        query["since"], query["until"] = query["until"], query["since"]


def _obey_username_rule(case: Any) -> None:
    """Drop format characters beyond U+FFFF from a positive registration's username."""
    body = case.body
    if not isinstance(body, dict) or case.meta.is_negative_at(ParameterLocation.BODY):
        return
    username = body.get("username")
    if isinstance(username, str):
        kept = "".join(c for c in username if ord(c) <= 0xFFFF or unicodedata.category(c) != "Cf")
        body["username"] = kept if kept.strip() else "fuzz-user"


def _obey_webhook_url_rule(case: Any) -> None:
    """A positive webhook body's URL: an https URL on a public address (no name to look up)."""
    body = case.body
    if not isinstance(body, dict) or case.meta.is_negative_at(ParameterLocation.BODY):
        return
    if "url" in body:
        body["url"] = "https://93.184.216.34/hooks"


def _forget_idempotency_keys() -> None:
    with db.transaction() as session:
        session.execute(text("DELETE FROM idempotency_keys"))


def _call(case: Any, token: str, role: str) -> None:
    if case.operation.path.startswith("/api/v1/events"):
        _obey_event_time_rules(case)
    elif case.operation.path == "/api/v1/history":
        _obey_history_range_rule(case)
    elif case.operation.path.startswith("/api/v1/auth/register/"):
        _obey_username_rule(case)
    elif case.operation.path.startswith("/api/v1/webhooks"):
        _obey_webhook_url_rule(case)
    _forget_idempotency_keys()
    SENT[(role, case.operation.label, case.meta.generation.mode.value)] += 1
    if case.meta.is_negative_at(ParameterLocation.HEADER):
        # The generated headers are the point (a missing or malformed Authorization, a bad
        # Idempotency-Key): send them as they are.
        case.call_and_validate()
    else:
        case.call_and_validate(headers=factories.auth(token))


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_as_customer(case: Any, customer_token: str) -> None:
    _call(case, customer_token, "customer")


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_as_organizer(case: Any, organizer_token: str) -> None:
    _call(case, organizer_token, "organizer")
