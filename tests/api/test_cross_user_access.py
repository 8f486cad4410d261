"""Every route that takes an id, tried by users it does not belong to, of every role.

The contract (docs/architecture.md, "HTTP contract"): an event's writes and its booking list are its
organizer's (403 for anyone else); a booking is visible to its customer and its event's
organizer and is 404 to everyone else; only its customer may change it (404 to other customers,
403 to other roles); a history entry is its user's (404 to everyone else). Admins may read
events' and bookings' data (operators), never change it. After every refused attempt nothing has
changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.services import accounts
from tests import factories as f
from tests.factories import API, PASSWORD, auth


@dataclass
class World:
    tokens: dict[str, str]  # actor -> bearer token
    event_id: int
    booking_id: int  # active, the owner's, on event_id
    cancelled_booking_id: int  # cancelled, the owner's, on event_id
    history_id: int  # one of the owner's history entries


@pytest.fixture
def world(client: FlaskClient) -> World:
    organizer, customer = f.organizer(client), f.customer(client)
    other_organizer, other_customer = f.organizer(client), f.customer(client)
    accounts.create_admin(username="admin", password=PASSWORD, email="admin@example.com")
    admin_token = client.post(
        f"{API}/auth/login", json={"username": "admin", "password": PASSWORD}
    ).get_json()["token"]

    event = f.create_event(client, organizer["token"], capacity=5)
    second_event = f.create_event(client, organizer["token"], capacity=5)
    booking = f.book(client, customer["token"], event["id"]).get_json()
    cancelled = f.book(client, customer["token"], second_event["id"]).get_json()
    cancel = client.post(
        f"{API}/bookings/{cancelled['id']}/cancel", headers=auth(customer["token"])
    )
    assert cancel.status_code == 200
    history = f.history(client, customer["token"])
    return World(
        tokens={
            "owner": customer["token"],
            "organizer": organizer["token"],
            "other_customer": other_customer["token"],
            "other_organizer": other_organizer["token"],
            "admin": admin_token,
        },
        event_id=event["id"],
        booking_id=booking["id"],
        cancelled_booking_id=cancelled["id"],
        history_id=history[-1]["id"],
    )


def state() -> dict[str, Any]:
    """Everything a refused request could have touched."""
    with db.transaction() as session:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in session.execute(text(sql))]

        return {
            "events": rows(
                "SELECT id, title, description, start_time, end_time, capacity, booked_count, "
                "updated_at FROM events ORDER BY id"
            ),
            "bookings": rows("SELECT id, event_id, status, updated_at FROM bookings ORDER BY id"),
            "history": rows("SELECT count(*) FROM history_entries"),
        }


def call(client: FlaskClient, world: World, actor: str, method: str, path: str) -> Any:
    url = API + path.format(
        event=world.event_id,
        booking=world.booking_id,
        cancelled=world.cancelled_booking_id,
        entry=world.history_id,
    )
    body: dict[str, Any] | None = None
    if method == "PATCH":
        body = {"title": "Taken over", "capacity": 1}
    return client.open(url, method=method, json=body, headers=auth(world.tokens[actor]))


# (method, path, actor, status, code): every id route, every actor it does not belong to.
REFUSED = [
    # Events: writes and the booking list are the organizer's.
    *[
        ("PATCH", "/events/{event}", actor, 403, "forbidden")
        for actor in ("other_organizer", "owner", "other_customer", "admin")
    ],
    *[
        ("DELETE", "/events/{event}", actor, 403, "forbidden")
        for actor in ("other_organizer", "owner", "other_customer", "admin")
    ],
    *[
        ("GET", "/events/{event}/bookings", actor, 403, "forbidden")
        for actor in ("other_organizer", "owner", "other_customer")
    ],
    # Bookings: invisible (404) to other customers and organizers; changes are customers' only.
    *[
        ("GET", "/bookings/{booking}", actor, 404, "booking_not_found")
        for actor in ("other_customer", "other_organizer")
    ],
    ("DELETE", "/bookings/{booking}", "other_customer", 404, "booking_not_found"),
    ("POST", "/bookings/{booking}/cancel", "other_customer", 404, "booking_not_found"),
    ("POST", "/bookings/{cancelled}/reactivate", "other_customer", 404, "booking_not_found"),
    *[
        (method, path, actor, 403, "forbidden")
        for method, path in (
            ("DELETE", "/bookings/{booking}"),
            ("POST", "/bookings/{booking}/cancel"),
            ("POST", "/bookings/{cancelled}/reactivate"),
        )
        for actor in ("organizer", "other_organizer", "admin")
    ],
    # History: its user's only.
    *[
        ("GET", "/history/{entry}", actor, 404, "history_entry_not_found")
        for actor in ("other_customer", "organizer", "other_organizer", "admin")
    ],
]


@pytest.mark.parametrize(
    ("method", "path", "actor", "status", "code"),
    REFUSED,
    ids=[f"{m} {p} as {a}" for m, p, a, _, _ in REFUSED],
)
def test_another_user_is_refused_and_nothing_changes(
    client: FlaskClient, world: World, method: str, path: str, actor: str, status: int, code: str
) -> None:
    before = state()

    response = call(client, world, actor, method, path)

    assert response.status_code == status, response.get_json()
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == code
    assert state() == before


@pytest.mark.parametrize(
    ("method", "path", "actor"),
    [
        ("GET", "/events/{event}/bookings", "organizer"),
        ("GET", "/events/{event}/bookings", "admin"),
        ("GET", "/bookings/{booking}", "owner"),
        ("GET", "/bookings/{booking}", "organizer"),
        ("GET", "/bookings/{booking}", "admin"),
        ("GET", "/history/{entry}", "owner"),
        *[("GET", "/events/{event}", actor) for actor in ("owner", "other_customer", "admin")],
    ],
)
def test_the_rightful_readers_get_through(
    client: FlaskClient, world: World, method: str, path: str, actor: str
) -> None:
    # The control group: the refusals above are about who asks, not about broken routes.
    assert call(client, world, actor, method, path).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PATCH", "/events/{event}", 200),
        ("POST", "/bookings/{booking}/cancel", 200),
        ("POST", "/bookings/{cancelled}/reactivate", 200),
        ("DELETE", "/bookings/{booking}", 204),
        ("DELETE", "/events/{event}", 204),
    ],
)
def test_the_owner_may_change_what_others_may_not(
    client: FlaskClient, world: World, method: str, path: str, status: int
) -> None:
    actor = "organizer" if "/events/" in path else "owner"
    assert call(client, world, actor, method, path).status_code == status


def test_an_event_is_public_to_read(client: FlaskClient, world: World) -> None:
    assert client.get(f"{API}/events/{world.event_id}").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/bookings/{id}"),
        ("DELETE", "/bookings/{id}"),
        ("POST", "/bookings/{id}/cancel"),
        ("POST", "/bookings/{id}/reactivate"),
        ("GET", "/history/{id}"),
    ],
)
def test_someone_elses_id_looks_exactly_like_a_missing_one(
    client: FlaskClient, world: World, method: str, path: str
) -> None:
    # No existence oracle: ids of other users' records cannot be told from unused ids.
    token = auth(world.tokens["other_customer"])
    own_id = world.history_id if path.startswith("/history") else world.booking_id
    if path.endswith("reactivate"):
        own_id = world.cancelled_booking_id
    missing_id = 9_000_000

    theirs = client.open(API + path.format(id=own_id), method=method, headers=token)
    missing = client.open(API + path.format(id=missing_id), method=method, headers=token)

    assert theirs.status_code == missing.status_code == 404
    body_theirs, body_missing = theirs.get_json(), missing.get_json()
    assert body_theirs["detail"].replace(str(own_id), "N") == body_missing["detail"].replace(
        str(missing_id), "N"
    )
    assert {k: v for k, v in body_theirs.items() if k != "detail"} == {
        k: v for k, v in body_missing.items() if k != "detail"
    }


def test_listing_filters_leak_nothing(client: FlaskClient, world: World) -> None:
    # The id-taking list filters return only what the viewer may see anyway.
    for actor in ("other_customer", "other_organizer"):
        response = client.get(
            f"{API}/bookings",
            query_string={"event_id": world.event_id},
            headers=auth(world.tokens[actor]),
        )
        assert response.status_code == 200
        assert response.get_json() == []
