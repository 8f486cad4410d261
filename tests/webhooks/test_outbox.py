"""The outbox: every change writes its messages in its own transaction, and a message's
``data`` is the resource exactly as ``GET`` answered right after the change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.services import ledger
from booking_service.services.relay import relay
from tests import factories
from tests.factories import API, auth
from tests.webhooks.conftest import drain, messages, subscribe
from tests.webhooks.receiver import Receiver


def _get(client: FlaskClient, path: str, token: str) -> dict[str, Any]:
    response = client.get(f"{API}{path}", headers=auth(token))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _sent(receiver: Receiver, type_: str) -> list[dict[str, Any]]:
    drain()
    return [payload for payload in receiver.payloads() if payload["type"] == type_]


def test_every_seat_change_sends_the_resource_as_get_shows_it(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any]
) -> None:
    token = seller["organizer"]["token"]
    customer = seller["customer"]["token"]
    event_id = seller["event"]["id"]
    subscribe(client, token, receiver)

    booked = client.post(f"{API}/bookings", json={"event_id": event_id}, headers=auth(customer))
    booking_id = booked.get_json()["id"]
    shown = _get(client, f"/bookings/{booking_id}", customer)
    [created] = _sent(receiver, "booking.created")
    assert created["data"] == shown
    assert datetime.fromisoformat(created["timestamp"]) == datetime.fromisoformat(
        shown["created_at"]
    )

    client.patch(f"{API}/bookings/{booking_id}", json={"seats": 2}, headers=auth(customer))
    assert _sent(receiver, "booking.seats_changed")[-1]["data"] == _get(
        client, f"/bookings/{booking_id}", customer
    )
    client.post(f"{API}/bookings/{booking_id}/cancel", headers=auth(customer))
    assert _sent(receiver, "booking.cancelled")[-1]["data"] == _get(
        client, f"/bookings/{booking_id}", customer
    )
    client.post(f"{API}/bookings/{booking_id}/reactivate", headers=auth(customer))
    assert _sent(receiver, "booking.reactivated")[-1]["data"] == _get(
        client, f"/bookings/{booking_id}", customer
    )

    other = factories.customer(client)["token"]
    hold = client.post(f"{API}/events/{event_id}/holds", json={}, headers=auth(other))
    assert hold.status_code == 201, hold.get_json()
    hold_id = hold.get_json()["id"]
    assert _sent(receiver, "hold.created")[-1]["data"] == _get(client, f"/holds/{hold_id}", other)
    # That hold took the last seat: sold out, with the event as GET shows it.
    [sold_out] = _sent(receiver, "event.sold_out")
    assert sold_out["data"] == _get(client, f"/events/{event_id}", token)

    confirmed = client.post(f"{API}/holds/{hold_id}/confirm", headers=auth(other))
    assert confirmed.status_code == 201
    assert _sent(receiver, "hold.confirmed")[-1]["data"] == _get(client, f"/holds/{hold_id}", other)
    new_booking = confirmed.get_json()["id"]
    assert _sent(receiver, "booking.created")[-1]["data"] == _get(
        client, f"/bookings/{new_booking}", other
    )


def test_holds_released_and_expired_and_waitlist_offers(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any]
) -> None:
    token = seller["organizer"]["token"]
    event_id = seller["event"]["id"]
    subscribe(client, token, receiver)
    first = factories.customer(client)["token"]
    hold = client.post(f"{API}/events/{event_id}/holds", json={"seats": 3}, headers=auth(first))
    hold_id = hold.get_json()["id"]
    waiting = factories.customer(client)["token"]
    joined = client.post(f"{API}/events/{event_id}/waitlist", json={}, headers=auth(waiting))
    assert joined.status_code == 201, joined.get_json()
    entry_id = joined.get_json()["id"]

    assert client.delete(f"{API}/holds/{hold_id}", headers=auth(first)).status_code == 204
    assert _sent(receiver, "hold.released")[-1]["data"] == _get(client, f"/holds/{hold_id}", first)
    # The freed seats went to the waiting customer, as an offer (a hold), in the same change.
    [offered] = _sent(receiver, "waitlist.offered")
    assert offered["data"] == _get(client, f"/waitlist/{entry_id}", waiting)
    offer_hold = offered["data"]["offer"]["hold_id"]
    assert _sent(receiver, "hold.created")[-1]["data"] == _get(
        client, f"/holds/{offer_hold}", waiting
    )

    # The offer lapses: its hold expires and its entry with it (the sweeper's intent).
    with db.transaction() as session:
        session.execute(
            text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": offer_hold},
        )
    ledger.submit(event_id, ledger.intent("expire"))
    assert _sent(receiver, "hold.expired")[-1]["data"] == _get(
        client, f"/holds/{offer_hold}", waiting
    )
    [lapsed] = _sent(receiver, "waitlist.offer_lapsed")
    assert lapsed["data"] == _get(client, f"/waitlist/{entry_id}", waiting)


def test_event_updated_and_deleted(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any]
) -> None:
    token = seller["organizer"]["token"]
    event_id = seller["event"]["id"]
    subscribe(client, token, receiver, ["event.updated", "event.deleted"])
    changed = client.patch(
        f"{API}/events/{event_id}", json={"title": "Renamed", "capacity": 5}, headers=auth(token)
    )
    assert changed.status_code == 200
    [updated] = _sent(receiver, "event.updated")
    assert updated["data"] == _get(client, f"/events/{event_id}", token) == changed.get_json()

    before = _get(client, f"/events/{event_id}", token)
    assert client.delete(f"{API}/events/{event_id}", headers=auth(token)).status_code == 204
    [deleted] = _sent(receiver, "event.deleted")
    assert deleted["data"] == before
    assert [p["type"] for p in receiver.payloads()] == ["event.updated", "event.deleted"]


def test_messages_go_to_the_subscribed_endpoints_only(client: FlaskClient) -> None:
    owner = factories.organizer(client)
    stranger = factories.organizer(client)
    mine = factories.create_event(client, owner["token"], capacity=5)
    other_event = factories.create_event(client, owner["token"], capacity=5)
    theirs = factories.create_event(client, stranger["token"], capacity=5)
    all_mine, only_mine, holds_only, strangers, disabled = (Receiver().start() for _ in range(5))
    endpoints = {
        "all": subscribe(client, owner["token"], all_mine),
        "event": subscribe(client, owner["token"], only_mine, event_id=mine["id"]),
        "holds": subscribe(client, owner["token"], holds_only, ["hold.created"]),
        "stranger": subscribe(client, stranger["token"], strangers),
        "disabled": subscribe(client, owner["token"], disabled),
    }
    client.patch(
        f"{API}/webhooks/{endpoints['disabled']['id']}",
        json={"enabled": False},
        headers=auth(owner["token"]),
    )
    customer = factories.customer(client)["token"]
    for event in (mine, other_event, theirs):
        factories.book(client, customer, event["id"])

    def written(name: str) -> list[tuple[str, int]]:
        return [(m["type"], m["event_id"]) for m in messages(endpoint_id=endpoints[name]["id"])]

    assert written("all") == [
        ("booking.created", mine["id"]),
        ("booking.created", other_event["id"]),
    ]
    assert written("event") == [("booking.created", mine["id"])]
    assert written("holds") == []
    assert written("stranger") == [("booking.created", theirs["id"])]
    assert written("disabled") == []
    for receiver in (all_mine, only_mine, holds_only, strangers, disabled):
        receiver.stop()


def test_a_batch_writes_its_messages_with_its_changes_in_order_and_refusals_write_none(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any]
) -> None:
    """The group commit: one statement applies a batch of several customers' intents; each
    applied intent's message is in it, in the batch's order; a refused one has none."""
    event_id = seller["event"]["id"]
    subscribe(client, seller["organizer"]["token"], receiver, ["booking.created"])
    customers = [factories.customer(client)["user"]["id"] for _ in range(5)]
    batch = [ledger.intent("book", customer_id=c, seats=1) for c in customers]
    outcomes = ledger._apply_batch(event_id, batch)
    applied = [o["booking"]["id"] for o in outcomes if "booking" in o]
    assert len(applied) == 3 and sum("error" in o for o in outcomes) == 2  # 3 seats
    assert [m["data"]["id"] for m in messages(event_id=event_id)] == applied
    drain()
    assert [p["data"]["id"] for p in receiver.payloads()] == applied
    assert all(item.verified for item in receiver.received)


def test_no_endpoint_no_message(client: FlaskClient, seller: dict[str, Any]) -> None:
    factories.book(client, seller["customer"]["token"], seller["event"]["id"])
    assert messages() == []
    assert relay.run_once() == 0


def test_event_payload_is_as_of_the_change(
    client: FlaskClient, receiver: Receiver, seller: dict[str, Any]
) -> None:
    """is_past and is_ongoing are those of the change's moment, not of the sending."""
    token = seller["organizer"]["token"]
    event_id = seller["event"]["id"]
    subscribe(client, token, receiver, ["event.updated"])
    shown = client.patch(f"{API}/events/{event_id}", json={"title": "T"}, headers=auth(token))
    assert shown.get_json()["is_past"] is False
    now = datetime.now(UTC)
    factories.set_event_times(
        event_id, start=now - timedelta(hours=2), end=now - timedelta(hours=1)
    )
    assert _get(client, f"/events/{event_id}", token)["is_past"] is True  # by now
    [payload] = _sent(receiver, "event.updated")
    assert payload["data"] == shown.get_json()
