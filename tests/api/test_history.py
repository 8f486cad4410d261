"""Audit history: what gets recorded, and who may read it (docs/architecture.md, "HTTP
contract", /history)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests import factories as f
from tests.factories import API, PASSWORD, assert_problem, auth

HISTORY = f"{API}/history"
ENTRY_FIELDS = {"id", "action", "entity_type", "entity_id", "details", "created_at"}


def summary(entries: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(e["action"], e["entity_type"], e["entity_id"]) for e in entries]


def login(client: FlaskClient, username: str) -> str:
    response = client.post(f"{API}/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200
    return response.get_json()["token"]


def tick() -> None:
    """Let the clock move so that consecutive transactions get distinct timestamps."""
    time.sleep(0.01)


# --- what is recorded -------------------------------------------------------------------


@pytest.mark.parametrize("role", ["organizer", "customer"])
def test_registration_is_recorded(client: FlaskClient, role: str):
    signed_in = f.register(client, role)

    entries = f.history(client, signed_in["token"])

    assert summary(entries) == [("register", "user", signed_in["user"]["id"])]
    [entry] = entries
    assert set(entry) == ENTRY_FIELDS
    assert entry["details"] == {"role": role}
    assert datetime.fromisoformat(entry["created_at"]).tzinfo is not None


def test_login_is_recorded(client: FlaskClient, cust: dict[str, Any]):
    token = login(client, cust["user"]["username"])

    entries = f.history(client, token)

    assert summary(entries)[0] == ("login", "user", cust["user"]["id"])
    assert [e["action"] for e in entries] == ["login", "register"]


def test_logout_is_recorded(client: FlaskClient, cust: dict[str, Any]):
    other_token = login(client, cust["user"]["username"])
    assert client.post(f"{API}/auth/logout", headers=auth(cust["token"])).status_code == 204

    entries = f.history(client, other_token, action="logout")

    assert summary(entries) == [("logout", "user", cust["user"]["id"])]


def test_event_create_update_delete_are_recorded(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"], title="Tracked", capacity=4)
    client.patch(
        f"{API}/events/{event['id']}",
        json={"title": "Renamed", "capacity": 6},
        headers=auth(org["token"]),
    )
    client.delete(f"{API}/events/{event['id']}", headers=auth(org["token"]))

    entries = f.history(client, org["token"], entity_type="event")

    assert summary(entries) == [
        ("delete", "event", event["id"]),
        ("update", "event", event["id"]),
        ("create", "event", event["id"]),
    ]
    deleted, updated, created = entries
    assert created["details"] == {"title": "Tracked", "capacity": 4}
    assert updated["details"]["before"] == {"title": "Tracked", "capacity": 4}
    assert updated["details"]["after"] == {"title": "Renamed", "capacity": 6}
    assert deleted["details"]["title"] == "Renamed"


def test_booking_lifecycle_is_recorded(client: FlaskClient, org: dict[str, Any], cust: dict):
    event = f.create_event(client, org["token"])
    booking = f.book(client, cust["token"], event["id"]).get_json()
    headers = auth(cust["token"])
    assert client.post(f"{API}/bookings/{booking['id']}/cancel", headers=headers).status_code == 200
    assert (
        client.post(f"{API}/bookings/{booking['id']}/reactivate", headers=headers).status_code
        == 200
    )
    assert client.delete(f"{API}/bookings/{booking['id']}", headers=headers).status_code == 204

    entries = f.history(client, cust["token"], entity_type="booking")

    assert summary(entries) == [
        ("delete", "booking", booking["id"]),
        ("reactivate", "booking", booking["id"]),
        ("cancel", "booking", booking["id"]),
        ("create", "booking", booking["id"]),
    ]
    assert all(e["details"] == {"event_id": event["id"], "seats": 1} for e in entries)


def test_bookings_are_recorded_for_the_customer_not_the_organizer(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event = f.create_event(client, org["token"])
    f.book(client, cust["token"], event["id"])

    assert f.history(client, org["token"], entity_type="booking") == []
    assert len(f.history(client, cust["token"], entity_type="booking")) == 1


def test_failed_actions_record_nothing(client: FlaskClient, org: dict[str, Any], cust: dict):
    event = f.create_event(client, org["token"], capacity=1)
    f.book(client, cust["token"], event["id"])
    before = f.count_rows("history_entries")

    f.book(client, cust["token"], event["id"])  # already booked
    f.book(client, f.customer(client)["token"], event["id"])  # full
    client.patch(f"{API}/events/{event['id']}", json={"capacity": 0}, headers=auth(org["token"]))
    client.post(f"{API}/auth/login", json={"username": "ghost", "password": PASSWORD})

    # Only the extra customer's registration was written.
    assert f.count_rows("history_entries") == before + 1


# --- listing ----------------------------------------------------------------------------


def test_organizer_lists_only_own_entries(client: FlaskClient, org: dict[str, Any], cust: dict):
    event = f.create_event(client, org["token"])
    f.book(client, cust["token"], event["id"])

    response = client.get(HISTORY, headers=auth(org["token"]))

    assert response.status_code == 200
    assert summary(response.get_json()) == [
        ("create", "event", event["id"]),
        ("register", "user", org["user"]["id"]),
    ]


def test_customer_lists_only_own_entries(client: FlaskClient, org: dict[str, Any], cust: dict):
    event = f.create_event(client, org["token"])
    booking = f.book(client, cust["token"], event["id"]).get_json()

    response = client.get(HISTORY, headers=auth(cust["token"]))

    assert response.status_code == 200
    assert summary(response.get_json()) == [
        ("create", "booking", booking["id"]),
        ("register", "user", cust["user"]["id"]),
    ]


def test_anonymous_cannot_list_history(client: FlaskClient, cust: dict[str, Any]):
    assert_problem(client.get(HISTORY), 401, "unauthorized")


def test_revoked_token_cannot_list_history(client: FlaskClient, cust: dict[str, Any]):
    client.post(f"{API}/auth/logout", headers=auth(cust["token"]))

    assert_problem(client.get(HISTORY, headers=auth(cust["token"])), 401, "unauthorized")


def test_history_is_newest_first(client: FlaskClient, org: dict[str, Any]):
    made = []
    for _ in range(3):
        tick()
        made.append(f.create_event(client, org["token"])["id"])

    entries = f.history(client, org["token"])

    assert [e["entity_id"] for e in entries[:3]] == list(reversed(made))
    stamps = [datetime.fromisoformat(e["created_at"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True)
    assert entries[-1]["action"] == "register"


def test_history_is_paginated(client: FlaskClient, org: dict[str, Any]):
    for _ in range(4):
        f.create_event(client, org["token"])  # 4 creates + 1 register = 5 entries
    all_ids = [e["id"] for e in f.history(client, org["token"])]

    pages = [
        client.get(HISTORY, query_string={"page": n, "page_size": 2}, headers=auth(org["token"]))
        for n in (1, 2, 3)
    ]

    assert [[e["id"] for e in p.get_json()] for p in pages] == [
        all_ids[:2],
        all_ids[2:4],
        all_ids[4:],
    ]
    header = json.loads(pages[0].headers["X-Pagination"])
    assert (header["total"], header["total_pages"]) == (5, 3)


def test_filter_by_action(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])
    client.patch(f"{API}/events/{event['id']}", json={"title": "x"}, headers=auth(org["token"]))

    entries = f.history(client, org["token"], action="update")

    assert summary(entries) == [("update", "event", event["id"])]


def test_filter_by_entity_type(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])

    assert summary(f.history(client, org["token"], entity_type="user")) == [
        ("register", "user", org["user"]["id"])
    ]
    assert summary(f.history(client, org["token"], entity_type="event")) == [
        ("create", "event", event["id"])
    ]
    assert f.history(client, org["token"], entity_type="booking") == []


def test_filters_combine(client: FlaskClient, org: dict[str, Any]):
    f.create_event(client, org["token"])

    assert f.history(client, org["token"], action="create", entity_type="user") == []
    assert len(f.history(client, org["token"], action="create", entity_type="event")) == 1


def test_filter_by_time_range(client: FlaskClient, org: dict[str, Any]):
    tick()
    first = f.create_event(client, org["token"])["id"]
    tick()
    second = f.create_event(client, org["token"])["id"]
    tick()
    third = f.create_event(client, org["token"])["id"]
    stamps = {
        e["entity_id"]: e["created_at"] for e in f.history(client, org["token"], action="create")
    }

    since = f.history(client, org["token"], since=stamps[second])
    until = f.history(client, org["token"], until=stamps[second], action="create")
    between = f.history(client, org["token"], since=stamps[second], until=stamps[second])

    assert [e["entity_id"] for e in since] == [third, second]
    assert [e["entity_id"] for e in until] == [second, first]
    assert [e["entity_id"] for e in between] == [second]


def test_since_in_the_future_matches_nothing(client: FlaskClient, org: dict[str, Any]):
    assert f.history(client, org["token"], since="2999-01-01T00:00:00+00:00") == []


def test_until_before_since_is_rejected(client: FlaskClient, org: dict[str, Any]):
    response = client.get(
        HISTORY,
        query_string={"since": "2030-01-02T00:00:00+00:00", "until": "2030-01-01T00:00:00+00:00"},
        headers=auth(org["token"]),
    )

    problem = assert_problem(response, 422, "validation_error")
    assert "until" in problem["errors"]


@pytest.mark.parametrize(
    "query,field",
    [
        ({"action": "book"}, "action"),
        ({"action": "CREATE"}, "action"),
        ({"entity_type": "ticket"}, "entity_type"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2030-13-01T00:00:00Z"}, "until"),
        ({"page_size": 101}, "page_size"),
    ],
)
def test_bad_history_filters_are_rejected(
    client: FlaskClient, org: dict[str, Any], query: dict[str, Any], field: str
):
    response = client.get(HISTORY, query_string=query, headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert field in problem["errors"]


# --- detail -----------------------------------------------------------------------------


def test_user_reads_own_entry(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])
    [listed] = f.history(client, org["token"], action="create")

    response = client.get(f"{HISTORY}/{listed['id']}", headers=auth(org["token"]))

    assert response.status_code == 200
    assert response.get_json() == listed
    assert response.get_json()["entity_id"] == event["id"]


def test_another_users_entry_is_not_found(client: FlaskClient, org: dict[str, Any], cust: dict):
    [entry] = f.history(client, org["token"])

    response = client.get(f"{HISTORY}/{entry['id']}", headers=auth(cust["token"]))

    assert_problem(response, 404, "history_entry_not_found")


def test_unknown_entry_is_not_found(client: FlaskClient, org: dict[str, Any]):
    response = client.get(f"{HISTORY}/99999", headers=auth(org["token"]))

    assert_problem(response, 404, "history_entry_not_found")


def test_out_of_range_entry_id_is_not_found(client: FlaskClient, org: dict[str, Any]):
    response = client.get(f"{HISTORY}/{2**63}", headers=auth(org["token"]))

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_anonymous_cannot_read_entry(client: FlaskClient, org: dict[str, Any]):
    [entry] = f.history(client, org["token"])

    assert_problem(client.get(f"{HISTORY}/{entry['id']}"), 401, "unauthorized")
