"""The relay in this process against real receivers: signatures, retries with the same
webhook-id, order, 410, timeouts, redirects, private targets at delivery."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from booking_service.services import webhook_http
from booking_service.services.relay import relay
from tests import factories
from tests.factories import API, auth
from tests.webhooks.conftest import drain, messages, subscribe
from tests.webhooks.receiver import Receiver


def _book_all(client: FlaskClient, event_id: int, count: int) -> list[int]:
    ids = []
    for _ in range(count):
        response = factories.book(client, factories.customer(client)["token"], event_id)
        assert response.status_code == 201
        ids.append(response.get_json()["id"])
    return ids


def _deliveries(client: FlaskClient, token: str, endpoint_id: int) -> list[dict[str, Any]]:
    response = client.get(f"{API}/webhooks/{endpoint_id}/deliveries", headers=auth(token))
    assert response.status_code == 200
    return response.get_json()


def test_signed_per_standard_webhooks_and_verified_by_the_receiver(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any]
) -> None:
    subscribe(client, seller["organizer"]["token"], receiver)
    _book_all(client, seller["event"]["id"], 2)
    assert drain() == 2
    assert [item.verified for item in receiver.received] == [True, True]
    first = receiver.received[0]
    assert set(first.headers) >= {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert first.headers["webhook-signature"].startswith("v1,")
    assert first.headers["content-type"] == "application/json"
    # Another secret does not verify: the signature is the endpoint's.
    assert not Receiver(secret=factories_secret()).verify(first.body, first.headers)
    assert set(first.payload) == {"type", "timestamp", "data"}


def factories_secret() -> str:
    from booking_service.services.webhooks import new_secret

    return new_secret()


def test_failures_retry_with_the_same_webhook_id_then_succeed_in_order(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay, "retry_seconds", (0.2, 0.2, 0.2))
    token = seller["organizer"]["token"]
    endpoint = subscribe(client, token, receiver, ["booking.created"])
    bookings = _book_all(client, seller["event"]["id"], 3)
    receiver.status = 500
    drain()  # the first message fails; the two behind it wait for it
    assert len(receiver.received) == 1
    time.sleep(0.3)
    drain()
    assert receiver.ids() == ["msg_1", "msg_1"] or len(set(receiver.ids())) == 1
    receiver.status = 200
    time.sleep(0.3)
    drain()
    ids = receiver.ids()
    assert [p["data"]["id"] for p in receiver.payloads()][-3:] == bookings
    assert len(set(ids[:-2])) == 1  # every attempt of the first message had one webhook-id
    assert all(item.verified for item in receiver.received)
    attempts = _deliveries(client, token, endpoint["id"])
    assert [a["result"] for a in attempts] == [
        "success",
        "success",
        "success",
        "http_error",
        "http_error",
    ]
    assert attempts[-1]["status_code"] == 500 and attempts[-1]["response_body"] == "ok"
    assert attempts[-1]["attempt"] == 1 and attempts[-2]["attempt"] == 2
    assert all(m["status"] == "delivered" for m in messages())


def test_after_the_last_retry_the_message_is_kept_as_failed_and_can_be_retried(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay, "retry_seconds", (0.1,))
    token = seller["organizer"]["token"]
    endpoint = subscribe(client, token, receiver, ["booking.created"])
    _book_all(client, seller["event"]["id"], 1)
    receiver.status = 503
    drain()
    time.sleep(0.2)
    drain()
    time.sleep(0.2)
    assert drain() == 0  # given up after 1 + 1 attempts
    [message] = messages()
    assert message["status"] == "failed" and message["attempts"] == 2
    attempts = _deliveries(client, token, endpoint["id"])
    receiver.status = 204
    retried = client.post(
        f"{API}/webhooks/{endpoint['id']}/deliveries/{attempts[0]['id']}/retry",
        headers=auth(token),
    )
    assert retried.status_code == 202 and retried.get_json()["status"] == "pending"
    assert drain() == 1
    assert len(set(receiver.ids())) == 1 and messages()[0]["status"] == "delivered"
    missing = client.post(
        f"{API}/webhooks/{endpoint['id']}/deliveries/999999/retry", headers=auth(token)
    )
    assert missing.status_code == 404
    assert missing.get_json()["code"] == "webhook_delivery_not_found"


def test_410_disables_the_endpoint_until_its_owner_enables_it(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any]
) -> None:
    token = seller["organizer"]["token"]
    endpoint = subscribe(client, token, receiver, ["booking.created"])
    _book_all(client, seller["event"]["id"], 1)
    receiver.status = 410
    drain()
    shown = client.get(f"{API}/webhooks/{endpoint['id']}", headers=auth(token)).get_json()
    assert shown["enabled"] is False and shown["disabled_reason"] == "410 Gone"
    _book_all(client, seller["event"]["id"], 1)
    assert len(messages()) == 1  # a disabled endpoint gets no new message
    assert drain() == 0
    receiver.status = 204
    client.patch(f"{API}/webhooks/{endpoint['id']}", json={"enabled": True}, headers=auth(token))
    assert drain() == 1  # its pending message goes out
    assert messages()[0]["status"] == "delivered"


def test_a_slow_receiver_times_out(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_http.settings, "timeout", 0.5)
    token = seller["organizer"]["token"]
    endpoint = subscribe(client, token, receiver, ["booking.created"])
    _book_all(client, seller["event"]["id"], 1)
    receiver.delay = 2.0
    started = time.monotonic()
    drain()
    assert time.monotonic() - started < 1.5
    [attempt] = _deliveries(client, token, endpoint["id"])
    assert attempt["result"] == "timeout" and attempt["status_code"] is None
    assert 400 <= attempt["latency_ms"] < 1500


def test_a_redirect_is_not_followed(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any]
) -> None:
    token = seller["organizer"]["token"]
    endpoint = subscribe(client, token, receiver, ["booking.created"])
    with Receiver() as elsewhere:
        receiver.status = 307
        receiver.headers_out = {"Location": elsewhere.url}
        _book_all(client, seller["event"]["id"], 1)
        drain()
        assert elsewhere.received == []
    [attempt] = _deliveries(client, token, endpoint["id"])
    assert attempt["result"] == "http_error" and attempt["status_code"] == 307
    assert messages()[0]["status"] == "pending"


def test_a_private_address_is_refused_at_delivery_too(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name resolved to a public address at registration, to loopback at
    delivery; the delivery is refused and nothing reaches the loopback receiver."""
    token = seller["organizer"]["token"]
    answers = {"address": "93.184.216.34"}

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers["address"], port))]

    monkeypatch.setattr(webhook_http.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(webhook_http.settings, "allow_private", False)
    url = f"http://rebind.example.com:{receiver.port}/hooks"
    created = client.post(
        f"{API}/webhooks",
        json={"url": url, "event_types": ["booking.created"]},
        headers=auth(token),
    )
    assert created.status_code == 201
    answers["address"] = "127.0.0.1"
    _book_all(client, seller["event"]["id"], 1)
    drain()
    assert receiver.received == []
    [attempt] = _deliveries(client, token, created.get_json()["id"])
    assert attempt["result"] == "refused_target" and "127.0.0.1" in attempt["error"]


def test_delivery_connects_to_the_address_it_checked(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once; the connection goes to that address, with the URL's host
    in the Host header (no second lookup for the socket to make)."""
    lookups: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    token = seller["organizer"]["token"]
    monkeypatch.setattr(webhook_http.socket, "getaddrinfo", getaddrinfo)
    url = f"http://pinned.example.com:{receiver.port}/hooks"
    created = client.post(
        f"{API}/webhooks",
        json={"url": url, "event_types": ["booking.created"]},
        headers=auth(token),
    ).get_json()
    receiver.secret = created["secret"]
    lookups.clear()
    _book_all(client, seller["event"]["id"], 1)
    assert drain() == 1
    assert lookups == ["pinned.example.com"]
    [received] = receiver.received
    assert received.headers["host"] == f"pinned.example.com:{receiver.port}" and received.verified


def test_the_secret_is_never_logged(
    client: FlaskClient,
    receiver: Receiver,
    seller: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = seller["organizer"]["token"]
    endpoint = subscribe(client, token, receiver, ["booking.created"])
    rotated = client.post(f"{API}/webhooks/{endpoint['id']}/rotate-secret", headers=auth(token))
    receiver.secret = rotated.get_json()["secret"]
    _book_all(client, seller["event"]["id"], 2)
    receiver.status = 410  # warnings are logged about this endpoint
    drain()
    secrets = {endpoint["secret"], receiver.secret}
    text = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    assert caplog.records and not any(secret in text for secret in secrets)
    assert not any(secret.removeprefix("whsec_") in text for secret in secrets)


def test_metrics(client: FlaskClient, receiver: Receiver, seller: dict[str, Any]) -> None:
    subscribe(client, seller["organizer"]["token"], receiver, ["booking.created"])
    _book_all(client, seller["event"]["id"], 1)
    scraped = client.get("/metrics").get_data(as_text=True)
    assert "booking_webhook_outbox_lag_seconds" in scraped
    assert "booking_webhook_outbox_pending 1.0" in scraped
    drain()
    scraped = client.get("/metrics").get_data(as_text=True)
    assert 'booking_webhook_deliveries_total{result="success"}' in scraped
    assert "booking_webhook_outbox_pending 0.0" in scraped
    assert "booking_webhook_endpoints_disabled 0.0" in scraped
