"""The webhook endpoints API: secrets shown once, ownership, URL and address rules."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from flask.testing import FlaskClient

from booking_service.services import webhook_http
from tests import factories
from tests.factories import API, assert_problem, auth
from tests.webhooks.conftest import subscribe
from tests.webhooks.receiver import Receiver


def test_lifecycle_and_the_secret_shown_only_on_create_and_rotate(
    client: FlaskClient, receiver: Receiver
) -> None:
    token = factories.organizer(client)["token"]
    created = subscribe(client, token, receiver, ["hold.created", "booking.created"])
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == ["booking.created", "hold.created"]  # canonical order
    assert created["enabled"] is True and created["event_id"] is None
    path = f"{API}/webhooks/{created['id']}"

    shown = client.get(path, headers=auth(token)).get_json()
    assert "secret" not in shown
    listed = client.get(f"{API}/webhooks", headers=auth(token))
    assert [item["id"] for item in listed.get_json()] == [created["id"]]
    assert all("secret" not in item for item in listed.get_json())

    patched = client.patch(path, json={"event_types": ["event.updated"]}, headers=auth(token))
    assert patched.status_code == 200 and patched.get_json()["event_types"] == ["event.updated"]
    assert_problem(client.patch(path, json={}, headers=auth(token)), 422, "validation_error")

    rotated = client.post(f"{path}/rotate-secret", headers=auth(token)).get_json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    assert "secret" not in client.get(path, headers=auth(token)).get_json()

    assert client.delete(path, headers=auth(token)).status_code == 204
    assert_problem(client.get(path, headers=auth(token)), 404, "webhook_not_found")


def test_only_the_owner_sees_an_endpoint_and_only_organizers_register(
    client: FlaskClient, receiver: Receiver
) -> None:
    owner = factories.organizer(client)["token"]
    created = subscribe(client, owner, receiver)
    stranger = factories.organizer(client)["token"]
    path = f"{API}/webhooks/{created['id']}"
    assert_problem(client.get(path, headers=auth(stranger)), 404, "webhook_not_found")
    assert_problem(client.delete(path, headers=auth(stranger)), 404, "webhook_not_found")
    assert_problem(
        client.post(f"{path}/rotate-secret", headers=auth(stranger)), 404, "webhook_not_found"
    )
    assert client.get(f"{API}/webhooks", headers=auth(stranger)).get_json() == []
    customer = factories.customer(client)["token"]
    body = {"url": receiver.url, "event_types": ["booking.created"]}
    assert_problem(
        client.post(f"{API}/webhooks", json=body, headers=auth(customer)), 403, "forbidden"
    )
    assert_problem(client.post(f"{API}/webhooks", json=body), 401, "unauthorized")
    # One event only: it must be the organizer's own.
    theirs = factories.create_event(client, owner)
    refused = client.post(
        f"{API}/webhooks", json={**body, "event_id": theirs["id"]}, headers=auth(stranger)
    )
    assert_problem(refused, 403, "forbidden")
    missing = client.post(
        f"{API}/webhooks", json={**body, "event_id": 10**12}, headers=auth(stranger)
    )
    assert_problem(missing, 404, "event_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://example.com/h", "event_types": []},
        {"url": "https://example.com/h", "event_types": ["booking.deleted"]},
        {"url": "", "event_types": ["booking.created"]},
        {"event_types": ["booking.created"]},
        {"url": "ftp://example.com/hook", "event_types": ["booking.created"]},
        {"url": "file:///etc/passwd", "event_types": ["booking.created"]},
        {"url": "example.com/hook", "event_types": ["booking.created"]},
    ],
)
def test_invalid_bodies(client: FlaskClient, body: dict[str, Any]) -> None:
    token = factories.organizer(client)["token"]
    assert_problem(
        client.post(f"{API}/webhooks", json=body, headers=auth(token)), 422, "validation_error"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",  # loopback
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://[::ffff:7f00:1]/hook",  # loopback, IPv4-mapped
        "https://10.1.2.3/hook",  # private
        "https://192.168.0.10/hook",
        "https://172.16.5.4/hook",
        "https://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "https://100.100.100.200/hook",  # metadata, shared address space
        "https://[fd00:ec2::254]/hook",  # metadata, unique local
        "https://0.0.0.0/hook",
        "https://user:pass@example.com/hook",  # credentials
    ],
)
def test_private_targets_and_other_schemes_are_refused_at_registration(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setattr(webhook_http.settings, "allow_http", False)
    monkeypatch.setattr(webhook_http.settings, "allow_private", False)
    token = factories.organizer(client)["token"]
    body = {"url": url, "event_types": ["booking.created"]}
    refused = client.post(f"{API}/webhooks", json=body, headers=auth(token))
    assert_problem(refused, 422, "webhook_target_refused")


def test_http_needs_the_setting(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_http.settings, "allow_http", False)
    monkeypatch.setattr(webhook_http.settings, "allow_private", False)
    _resolve_to(monkeypatch, "93.184.216.34")  # a public address
    token = factories.organizer(client)["token"]
    body = {"url": "http://hooks.example.com/h", "event_types": ["booking.created"]}
    assert_problem(
        client.post(f"{API}/webhooks", json=body, headers=auth(token)),
        422,
        "webhook_target_refused",
    )
    body["url"] = "https://hooks.example.com/h"
    assert client.post(f"{API}/webhooks", json=body, headers=auth(token)).status_code == 201


def test_a_name_resolving_to_any_private_address_is_refused(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_http.settings, "allow_private", False)
    _resolve_to(monkeypatch, "93.184.216.34", "10.0.0.7")
    token = factories.organizer(client)["token"]
    body = {"url": "https://mixed.example.com/h", "event_types": ["booking.created"]}
    refused = client.post(f"{API}/webhooks", json=body, headers=auth(token))
    assert "10.0.0.7" in assert_problem(refused, 422, "webhook_target_refused")["detail"]


def _resolve_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    """Answer every name lookup with ``addresses`` (the tests have no DNS of their own)."""

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses
        ]

    monkeypatch.setattr(webhook_http.socket, "getaddrinfo", getaddrinfo)
