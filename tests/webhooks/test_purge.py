"""flask purge-webhook-deliveries: settled messages and old attempts go, pending ones stay."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from tests import factories
from tests.factories import API, auth
from tests.webhooks.conftest import drain, messages, subscribe
from tests.webhooks.receiver import Receiver


def test_purge_keeps_pending_messages_and_recent_history(
    app: Flask, client: FlaskClient, receiver: Receiver, seller: dict[str, Any]
) -> None:
    subscribe(client, seller["organizer"]["token"], receiver, ["booking.created"])
    event_id = seller["event"]["id"]
    for _ in range(3):
        factories.book(client, factories.customer(client)["token"], event_id)
    drain()
    with db.transaction() as session:  # one more, old and undelivered: it stays
        session.execute(
            text(
                "INSERT INTO webhook_messages (endpoint_id, event_id, type, data, created_at) "
                "SELECT endpoint_id, event_id, type, data, now() - interval '90 days' "
                "FROM webhook_messages LIMIT 1"
            )
        )
        # One to an endpoint deleted as its sale read it: it goes, however young.
        session.execute(
            text(
                "INSERT INTO webhook_messages (endpoint_id, event_id, type, data) "
                "SELECT 999999999, event_id, type, data FROM webhook_messages LIMIT 1"
            )
        )
        # Two delivered ones are old (their attempts go with them), and the third's attempt.
        session.execute(
            text(
                "UPDATE webhook_messages SET created_at = now() - interval '40 days' WHERE id IN "
                "(SELECT id FROM webhook_messages WHERE status = 'delivered' ORDER BY id LIMIT 2)"
            )
        )
        session.execute(
            text(
                "UPDATE webhook_deliveries SET attempted_at = now() - interval '40 days' "
                "WHERE message_id = (SELECT max(id) FROM webhook_messages "
                "WHERE status = 'delivered')"
            )
        )
    with app.app_context():
        result = app.test_cli_runner().invoke(
            args=["purge-webhook-deliveries", "--batch-size", "1"]
        )
    assert result.exit_code == 0, result.output
    assert "deleted 4 webhook message(s) and delivery attempt(s)" in result.output
    left = messages()
    assert [m["status"] for m in left] == ["delivered", "pending"]
    assert factories.count_rows("webhook_deliveries") == 0


def test_deleting_an_endpoint_deletes_its_messages(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any]
) -> None:
    token = seller["organizer"]["token"]
    endpoint = subscribe(client, token, receiver, ["booking.created"])
    other = Receiver().start()
    kept = subscribe(client, token, other, ["booking.created"])
    other.stop()
    factories.book(client, seller["customer"]["token"], seller["event"]["id"])
    assert len(messages()) == 2
    response = client.delete(f"{API}/webhooks/{endpoint['id']}", headers=auth(token))
    assert response.status_code == 204
    assert [m["endpoint_id"] for m in messages()] == [kept["id"]]
