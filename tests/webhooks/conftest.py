"""Webhooks against real receivers: loopback HTTP servers verifying with standardwebhooks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.services import webhook_http
from booking_service.services.relay import relay
from tests import factories
from tests.factories import API, auth
from tests.webhooks.receiver import Receiver


@pytest.fixture(autouse=True)
def loopback_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Receivers here are http on 127.0.0.1: allowed for these tests only."""
    monkeypatch.setattr(webhook_http.settings, "allow_http", True)
    monkeypatch.setattr(webhook_http.settings, "allow_private", True)
    monkeypatch.setattr(webhook_http.settings, "timeout", 2.0)
    monkeypatch.setattr(relay, "retry_seconds", (60.0,))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def subscribe(
    client: FlaskClient,
    token: str,
    receiver: Receiver,
    types: list[str] | None = None,
    **body: Any,
) -> dict[str, Any]:
    """Register ``receiver`` for ``types`` (all by default); it learns the secret."""
    from booking_service.services.outbox import EVENT_TYPES

    response = client.post(
        f"{API}/webhooks",
        json={"url": receiver.url, "event_types": types or list(EVENT_TYPES), **body},
        headers=auth(token),
    )
    assert response.status_code == 201, response.get_json()
    endpoint = response.get_json()
    receiver.secret = endpoint["secret"]
    return endpoint


def messages(**where: Any) -> list[dict[str, Any]]:
    """Outbox rows in id order."""
    sql = "SELECT * FROM webhook_messages"
    if where:
        sql += " WHERE " + " AND ".join(f"{key} = :{key}" for key in where)
    with db.read_transaction() as session:
        return [dict(row) for row in session.execute(text(sql + " ORDER BY id"), where).mappings()]


def drain(rounds: int = 20) -> int:
    """Run the relay in this process until a round sends nothing; attempts made."""
    total = 0
    for _ in range(rounds):
        sent = relay.run_once()
        total += sent
        if not sent:
            break
    return total


@pytest.fixture
def seller(client: FlaskClient) -> dict[str, Any]:
    """An organizer with an event of 3 seats and a customer."""
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=3)
    return {"organizer": organizer, "event": event, "customer": factories.customer(client)}
