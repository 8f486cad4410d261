"""Bookings: book, list, read, cancel, reactivate, delete (docs/architecture.md, "HTTP
contract", /bookings).

Every failing request must leave nothing behind: no booking row, no seat taken, no history.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from booking_service.locking import locks
from tests import factories as f
from tests.factories import API, assert_problem, auth, in_hours, iso


def unreachable_redis() -> redis.Redis:
    """A client for a port nothing listens on: refused at once, no retries."""
    return redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


BOOKINGS = f"{API}/bookings"
BOOKING_FIELDS = {"id", "event_id", "customer_id", "status", "seats", "created_at", "updated_at"}


def snapshot(event_id: int) -> tuple[int, int, int]:
    """What a failed request must not change: seats, booking rows, history rows."""
    return (
        f.booked_count(event_id),
        f.count_rows("bookings", event_id=event_id),
        f.count_rows("history_entries"),
    )


def ids(response: Any) -> list[int]:
    return [item["id"] for item in response.get_json()]


def pagination(response: Any) -> dict[str, Any]:
    return json.loads(response.headers["X-Pagination"])


def cancel(client: FlaskClient, token: str, booking_id: int) -> Any:
    return client.post(f"{BOOKINGS}/{booking_id}/cancel", headers=auth(token))


def reactivate(client: FlaskClient, token: str, booking_id: int) -> Any:
    return client.post(f"{BOOKINGS}/{booking_id}/reactivate", headers=auth(token))


def booked(client: FlaskClient, token: str, event_id: int) -> dict[str, Any]:
    response = f.book(client, token, event_id)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def event(client: FlaskClient, org: dict[str, Any]) -> dict[str, Any]:
    return f.create_event(client, org["token"], capacity=5)


def start_now(event_id: int) -> None:
    """Make an already booked event start (it cannot be created in that state)."""
    f.set_event_times(event_id, start=in_hours(-1), end=in_hours(1))


# --- book -------------------------------------------------------------------------------


def test_customer_books_a_seat(client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]):
    response = f.book(client, cust["token"], event["id"])

    assert response.status_code == 201
    booking = response.get_json()
    assert set(booking) == BOOKING_FIELDS
    assert booking["event_id"] == event["id"]
    assert booking["customer_id"] == cust["user"]["id"]
    assert booking["status"] == "active"
    assert datetime.fromisoformat(booking["created_at"]).tzinfo is not None
    assert f.booked_count(event["id"]) == 1
    assert f.count_rows("bookings") == 1


def test_booking_location_header_points_at_the_booking(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    response = f.book(client, cust["token"], event["id"])

    booking_id = response.get_json()["id"]
    location = response.headers["Location"]
    assert location.endswith(f"/api/v1/bookings/{booking_id}")
    fetched = client.get(location, headers=auth(cust["token"]))
    assert fetched.status_code == 200
    assert fetched.get_json() == response.get_json()


def test_booking_decrements_available_slots(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booked(client, cust["token"], event["id"])

    detail = client.get(f"{API}/events/{event['id']}").get_json()

    assert (detail["booked_count"], detail["available_slots"]) == (1, 4)


def test_organizer_cannot_book(client: FlaskClient, org: dict[str, Any], event: dict[str, Any]):
    before = snapshot(event["id"])

    response = f.book(client, org["token"], event["id"])

    assert_problem(response, 403, "forbidden")
    assert snapshot(event["id"]) == before


def test_anonymous_cannot_book(client: FlaskClient, event: dict[str, Any]):
    before = snapshot(event["id"])

    response = client.post(BOOKINGS, json={"event_id": event["id"]})

    assert_problem(response, 401, "unauthorized")
    assert snapshot(event["id"]) == before


def test_booking_twice_is_already_booked(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booked(client, cust["token"], event["id"])
    before = snapshot(event["id"])

    response = f.book(client, cust["token"], event["id"])

    assert_problem(response, 409, "already_booked")
    assert snapshot(event["id"]) == before == (1, 1, before[2])


def test_full_event_is_rejected(client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]):
    event = f.create_event(client, org["token"], capacity=2)
    for _ in range(2):
        booked(client, f.customer(client)["token"], event["id"])
    before = snapshot(event["id"])

    response = f.book(client, cust["token"], event["id"])

    assert_problem(response, 409, "event_full")
    assert snapshot(event["id"]) == before
    assert f.count_rows("bookings", customer_id=cust["user"]["id"]) == 0


def test_started_event_cannot_be_booked(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event_id = f.insert_event(organizer_id=org["user"]["id"], start=in_hours(-1), end=in_hours(1))
    before = snapshot(event_id)

    response = f.book(client, cust["token"], event_id)

    assert_problem(response, 422, "event_started")
    assert snapshot(event_id) == before


def test_ended_event_cannot_be_booked(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event_id = f.insert_event(organizer_id=org["user"]["id"], start=in_hours(-3), end=in_hours(-1))
    before = snapshot(event_id)

    response = f.book(client, cust["token"], event_id)

    assert_problem(response, 422, "event_ended")
    assert snapshot(event_id) == before


def test_ended_and_full_event_reports_ended(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event_id = f.insert_event(
        organizer_id=org["user"]["id"], start=in_hours(-3), end=in_hours(-1), capacity=1
    )
    f.insert_active_booking(event_id=event_id, customer_id=f.customer(client)["user"]["id"])

    response = f.book(client, cust["token"], event_id)

    assert_problem(response, 422, "event_ended")
    assert f.booked_count(event_id) == 1


def test_booking_unknown_event_is_not_found(client: FlaskClient, cust: dict[str, Any]):
    response = f.book(client, cust["token"], 987654)

    assert_problem(response, 404, "event_not_found")
    assert f.count_rows("bookings") == 0
    assert f.count_rows("history_entries", action="create") == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"event_id": None},
        {"event_id": "1"},
        {"event_id": "abc"},
        {"event_id": -1},
        {"event_id": 0},
        {"event_id": 2**63},
        {"event_id": 10**30},
        {"event_id": 1.5},
        {"event_id": True},
        {"event_id": [1]},
    ],
)
def test_invalid_event_id_is_a_validation_error(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any], body: dict[str, Any]
):
    before = snapshot(event["id"])

    response = client.post(BOOKINGS, json=body, headers=auth(cust["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert "event_id" in problem["errors"]
    assert snapshot(event["id"]) == before


def test_booking_rejects_unknown_fields(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    response = client.post(
        BOOKINGS,
        json={"event_id": event["id"], "status": "cancelled"},
        headers=auth(cust["token"]),
    )

    problem = assert_problem(response, 422, "validation_error")
    assert "status" in problem["errors"]
    assert f.count_rows("bookings") == 0


def test_cancelled_bookings_do_not_count_against_capacity(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], other_cust: dict[str, Any]
):
    event = f.create_event(client, org["token"], capacity=1)
    first = booked(client, cust["token"], event["id"])
    assert cancel(client, cust["token"], first["id"]).status_code == 200

    response = f.book(client, other_cust["token"], event["id"])

    assert response.status_code == 201
    assert f.booked_count(event["id"]) == 1


def test_customer_can_book_again_after_cancelling(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    first = booked(client, cust["token"], event["id"])
    assert cancel(client, cust["token"], first["id"]).status_code == 200

    second = f.book(client, cust["token"], event["id"])

    assert second.status_code == 201
    assert second.get_json()["id"] != first["id"]
    assert f.booked_count(event["id"]) == 1
    assert f.count_rows("bookings", customer_id=cust["user"]["id"]) == 2


def test_booking_fails_closed_when_lock_service_is_unreachable(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any], monkeypatch
):
    before = snapshot(event["id"])
    unreachable = unreachable_redis()
    monkeypatch.setattr(locks, "client", unreachable)

    response = f.book(client, cust["token"], event["id"])

    assert_problem(response, 503, "lock_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert snapshot(event["id"]) == before


# --- list -------------------------------------------------------------------------------


def test_customer_lists_only_own_bookings(
    client: FlaskClient, cust: dict[str, Any], other_cust: dict[str, Any], event: dict[str, Any]
):
    mine = booked(client, cust["token"], event["id"])
    booked(client, other_cust["token"], event["id"])

    response = client.get(BOOKINGS, headers=auth(cust["token"]))

    assert response.status_code == 200
    assert ids(response) == [mine["id"]]
    assert pagination(response)["total"] == 1


def test_organizer_lists_bookings_of_own_events_only(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], event: dict[str, Any]
):
    other_org = f.organizer(client)
    foreign_event = f.create_event(client, other_org["token"])
    mine = [
        booked(client, cust["token"], event["id"]),
        booked(client, f.customer(client)["token"], event["id"]),
    ]
    booked(client, cust["token"], foreign_event["id"])

    response = client.get(BOOKINGS, headers=auth(org["token"]))

    assert response.status_code == 200
    assert sorted(ids(response)) == sorted(b["id"] for b in mine)
    other = client.get(BOOKINGS, headers=auth(other_org["token"]))
    assert [b["event_id"] for b in other.get_json()] == [foreign_event["id"]]


def test_organizer_without_events_sees_no_bookings(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booked(client, cust["token"], event["id"])
    newcomer = f.organizer(client)

    response = client.get(BOOKINGS, headers=auth(newcomer["token"]))

    assert response.status_code == 200
    assert response.get_json() == []


def test_anonymous_cannot_list_bookings(client: FlaskClient):
    assert_problem(client.get(BOOKINGS), 401, "unauthorized")


def test_bookings_filter_by_status(client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]):
    first = f.create_event(client, org["token"])
    second = f.create_event(client, org["token"])
    cancelled = booked(client, cust["token"], first["id"])
    cancel(client, cust["token"], cancelled["id"])
    active = booked(client, cust["token"], second["id"])

    def listed(status: str) -> list[int]:
        response = client.get(
            BOOKINGS, query_string={"status": status}, headers=auth(cust["token"])
        )
        assert response.status_code == 200
        return ids(response)

    assert listed("active") == [active["id"]]
    assert listed("cancelled") == [cancelled["id"]]


def test_bookings_filter_by_event(client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]):
    first = f.create_event(client, org["token"])
    second = f.create_event(client, org["token"])
    on_first = booked(client, cust["token"], first["id"])
    booked(client, cust["token"], second["id"])

    response = client.get(
        BOOKINGS, query_string={"event_id": first["id"]}, headers=auth(cust["token"])
    )

    assert ids(response) == [on_first["id"]]
    for_org = client.get(
        BOOKINGS, query_string={"event_id": second["id"]}, headers=auth(org["token"])
    )
    assert [b["event_id"] for b in for_org.get_json()] == [second["id"]]


def test_bookings_filters_combine(client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]):
    event = f.create_event(client, org["token"])
    old = booked(client, cust["token"], event["id"])
    cancel(client, cust["token"], old["id"])
    booked(client, cust["token"], event["id"])

    response = client.get(
        BOOKINGS,
        query_string={"event_id": event["id"], "status": "cancelled"},
        headers=auth(cust["token"]),
    )

    assert ids(response) == [old["id"]]


def test_bookings_are_listed_newest_first(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    events = [f.create_event(client, org["token"]) for _ in range(3)]
    made = [booked(client, cust["token"], e["id"])["id"] for e in events]

    response = client.get(BOOKINGS, headers=auth(cust["token"]))

    assert ids(response) == list(reversed(made))
    stamps = [datetime.fromisoformat(b["created_at"]) for b in response.get_json()]
    assert stamps == sorted(stamps, reverse=True)


def test_bookings_are_paginated(client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]):
    made = [
        booked(client, cust["token"], f.create_event(client, org["token"])["id"])["id"]
        for _ in range(5)
    ]
    newest_first = list(reversed(made))

    pages = [
        client.get(
            BOOKINGS, query_string={"page": page, "page_size": 2}, headers=auth(cust["token"])
        )
        for page in (1, 2, 3)
    ]

    assert [ids(page) for page in pages] == [newest_first[:2], newest_first[2:4], newest_first[4:]]
    header = pagination(pages[0])
    assert (header["total"], header["total_pages"], header["page"]) == (5, 3, 1)
    assert "next_page" not in pagination(pages[2])


@pytest.mark.parametrize(
    "query,field",
    [
        ({"page_size": 101}, "page_size"),
        ({"page": 0}, "page"),
        ({"page": "first"}, "page"),
        ({"status": "pending"}, "status"),
        ({"event_id": "abc"}, "event_id"),
        ({"event_id": 0}, "event_id"),
        ({"event_id": "1.5"}, "event_id"),
        ({"event_id": str(2**63)}, "event_id"),
    ],
)
def test_bookings_list_rejects_bad_query(
    client: FlaskClient, cust: dict[str, Any], query: dict[str, Any], field: str
):
    response = client.get(BOOKINGS, query_string=query, headers=auth(cust["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert field in problem["errors"]


# --- detail -----------------------------------------------------------------------------


def test_customer_reads_own_booking(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])

    response = client.get(f"{BOOKINGS}/{booking['id']}", headers=auth(cust["token"]))

    assert response.status_code == 200
    assert response.get_json() == booking


def test_event_organizer_reads_booking(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])

    response = client.get(f"{BOOKINGS}/{booking['id']}", headers=auth(org["token"]))

    assert response.status_code == 200
    assert response.get_json()["customer_id"] == cust["user"]["id"]


def test_other_customer_cannot_see_booking(
    client: FlaskClient, cust: dict[str, Any], other_cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])

    response = client.get(f"{BOOKINGS}/{booking['id']}", headers=auth(other_cust["token"]))

    assert_problem(response, 404, "booking_not_found")


def test_other_organizer_cannot_see_booking(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    other_org = f.organizer(client)

    response = client.get(f"{BOOKINGS}/{booking['id']}", headers=auth(other_org["token"]))

    assert_problem(response, 404, "booking_not_found")


def test_unknown_booking_is_not_found(client: FlaskClient, cust: dict[str, Any]):
    assert_problem(
        client.get(f"{BOOKINGS}/31337", headers=auth(cust["token"])), 404, "booking_not_found"
    )


def test_out_of_range_booking_id_is_not_found(client: FlaskClient, cust: dict[str, Any]):
    response = client.get(f"{BOOKINGS}/{2**63}", headers=auth(cust["token"]))

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_anonymous_cannot_read_booking(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])

    assert_problem(client.get(f"{BOOKINGS}/{booking['id']}"), 401, "unauthorized")


# --- cancel -----------------------------------------------------------------------------


def test_customer_cancels_and_frees_the_seat(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])

    response = cancel(client, cust["token"], booking["id"])

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == BOOKING_FIELDS
    assert body["id"] == booking["id"]
    assert body["status"] == "cancelled"
    assert datetime.fromisoformat(body["updated_at"]) > datetime.fromisoformat(
        booking["updated_at"]
    )
    assert body["created_at"] == booking["created_at"]
    assert f.booked_count(event["id"]) == 0
    assert f.booking_status(booking["id"]) == "cancelled"
    detail = client.get(f"{API}/events/{event['id']}").get_json()
    assert (detail["booked_count"], detail["available_slots"]) == (0, 5)


def test_other_customer_cannot_cancel(
    client: FlaskClient, cust: dict[str, Any], other_cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    before = snapshot(event["id"])

    response = cancel(client, other_cust["token"], booking["id"])

    assert_problem(response, 404, "booking_not_found")
    assert snapshot(event["id"]) == before
    assert f.booking_status(booking["id"]) == "active"


def test_organizer_cannot_cancel(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    before = snapshot(event["id"])

    response = cancel(client, org["token"], booking["id"])

    assert_problem(response, 403, "forbidden")
    assert snapshot(event["id"]) == before
    assert f.booking_status(booking["id"]) == "active"


def test_anonymous_cannot_cancel(client: FlaskClient, cust: dict[str, Any], event: dict):
    booking = booked(client, cust["token"], event["id"])

    assert_problem(client.post(f"{BOOKINGS}/{booking['id']}/cancel"), 401, "unauthorized")
    assert f.booking_status(booking["id"]) == "active"


def test_cancelling_twice_is_not_active(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    assert cancel(client, cust["token"], booking["id"]).status_code == 200
    before = snapshot(event["id"])

    response = cancel(client, cust["token"], booking["id"])

    assert_problem(response, 409, "not_active")
    assert snapshot(event["id"]) == before == (0, 1, before[2])


def test_booking_on_started_event_cannot_be_cancelled(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event_id = f.insert_event(organizer_id=org["user"]["id"], start=in_hours(-1), end=in_hours(1))
    booking_id = f.insert_active_booking(event_id=event_id, customer_id=cust["user"]["id"])
    before = snapshot(event_id)

    response = cancel(client, cust["token"], booking_id)

    assert_problem(response, 422, "event_started")
    assert snapshot(event_id) == before
    assert f.booking_status(booking_id) == "active"


def test_booking_on_ended_event_cannot_be_cancelled(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    f.set_event_times(event["id"], start=in_hours(-3), end=in_hours(-1))
    before = snapshot(event["id"])

    response = cancel(client, cust["token"], booking["id"])

    assert_problem(response, 422, "event_ended")
    assert snapshot(event["id"]) == before


def test_cancel_unknown_booking_is_not_found(client: FlaskClient, cust: dict[str, Any]):
    assert_problem(cancel(client, cust["token"], 4444), 404, "booking_not_found")


# --- reactivate -------------------------------------------------------------------------


def test_customer_reactivates_cancelled_booking_and_retakes_the_seat(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    cancel(client, cust["token"], booking["id"])
    assert f.booked_count(event["id"]) == 0

    response = reactivate(client, cust["token"], booking["id"])

    assert response.status_code == 200
    body = response.get_json()
    assert (body["id"], body["status"]) == (booking["id"], "active")
    assert f.booked_count(event["id"]) == 1
    assert f.booking_status(booking["id"]) == "active"


def test_reactivating_on_a_full_event_is_event_full(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], other_cust: dict[str, Any]
):
    event = f.create_event(client, org["token"], capacity=1)
    booking = booked(client, cust["token"], event["id"])
    cancel(client, cust["token"], booking["id"])
    booked(client, other_cust["token"], event["id"])
    before = snapshot(event["id"])

    response = reactivate(client, cust["token"], booking["id"])

    assert_problem(response, 409, "event_full")
    assert snapshot(event["id"]) == before
    assert f.booking_status(booking["id"]) == "cancelled"


def test_reactivating_an_active_booking_is_already_active(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    before = snapshot(event["id"])

    response = reactivate(client, cust["token"], booking["id"])

    assert_problem(response, 409, "already_active")
    assert snapshot(event["id"]) == before


def test_reactivating_when_already_rebooked_is_already_booked(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    old = booked(client, cust["token"], event["id"])
    cancel(client, cust["token"], old["id"])
    booked(client, cust["token"], event["id"])
    before = snapshot(event["id"])

    response = reactivate(client, cust["token"], old["id"])

    assert_problem(response, 409, "already_booked")
    assert snapshot(event["id"]) == before == (1, 2, before[2])
    assert f.booking_status(old["id"]) == "cancelled"


def test_other_customer_cannot_reactivate(
    client: FlaskClient, cust: dict[str, Any], other_cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    cancel(client, cust["token"], booking["id"])
    before = snapshot(event["id"])

    response = reactivate(client, other_cust["token"], booking["id"])

    assert_problem(response, 404, "booking_not_found")
    assert snapshot(event["id"]) == before
    assert f.booking_status(booking["id"]) == "cancelled"


def test_organizer_cannot_reactivate(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    cancel(client, cust["token"], booking["id"])

    response = reactivate(client, org["token"], booking["id"])

    assert_problem(response, 403, "forbidden")
    assert f.booking_status(booking["id"]) == "cancelled"


def test_reactivating_on_started_event_is_rejected(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    cancel(client, cust["token"], booking["id"])
    start_now(event["id"])
    before = snapshot(event["id"])

    response = reactivate(client, cust["token"], booking["id"])

    assert_problem(response, 422, "event_started")
    assert snapshot(event["id"]) == before
    assert f.booking_status(booking["id"]) == "cancelled"


def test_reactivate_unknown_booking_is_not_found(client: FlaskClient, cust: dict[str, Any]):
    assert_problem(reactivate(client, cust["token"], 5555), 404, "booking_not_found")


# --- delete -----------------------------------------------------------------------------


def test_customer_deletes_active_booking_and_frees_the_seat(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])

    response = client.delete(f"{BOOKINGS}/{booking['id']}", headers=auth(cust["token"]))

    assert response.status_code == 204
    assert response.get_data() == b""
    assert f.booking_status(booking["id"]) is None
    assert f.booked_count(event["id"]) == 0
    assert client.get(f"{BOOKINGS}/{booking['id']}", headers=auth(cust["token"])).status_code == 404


def test_deleting_cancelled_booking_leaves_seat_count_alone(
    client: FlaskClient, cust: dict[str, Any], other_cust: dict[str, Any], event: dict[str, Any]
):
    booked(client, other_cust["token"], event["id"])
    booking = booked(client, cust["token"], event["id"])
    cancel(client, cust["token"], booking["id"])
    assert f.booked_count(event["id"]) == 1

    response = client.delete(f"{BOOKINGS}/{booking['id']}", headers=auth(cust["token"]))

    assert response.status_code == 204
    assert f.booked_count(event["id"]) == 1
    assert f.count_rows("bookings") == 1


def test_organizer_cannot_delete_booking(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    before = snapshot(event["id"])

    response = client.delete(f"{BOOKINGS}/{booking['id']}", headers=auth(org["token"]))

    assert_problem(response, 403, "forbidden")
    assert snapshot(event["id"]) == before


def test_other_customer_cannot_delete_booking(
    client: FlaskClient, cust: dict[str, Any], other_cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])
    before = snapshot(event["id"])

    response = client.delete(f"{BOOKINGS}/{booking['id']}", headers=auth(other_cust["token"]))

    assert_problem(response, 404, "booking_not_found")
    assert snapshot(event["id"]) == before
    assert f.booking_status(booking["id"]) == "active"


def test_anonymous_cannot_delete_booking(
    client: FlaskClient, cust: dict[str, Any], event: dict[str, Any]
):
    booking = booked(client, cust["token"], event["id"])

    assert_problem(client.delete(f"{BOOKINGS}/{booking['id']}"), 401, "unauthorized")
    assert f.booking_status(booking["id"]) == "active"


def test_delete_unknown_booking_is_not_found(client: FlaskClient, cust: dict[str, Any]):
    response = client.delete(f"{BOOKINGS}/777", headers=auth(cust["token"]))

    assert_problem(response, 404, "booking_not_found")
    assert f.count_rows("history_entries", action="delete") == 0


def test_seat_freed_by_delete_can_be_booked_by_someone_else(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], other_cust: dict[str, Any]
):
    event = f.create_event(client, org["token"], capacity=1)
    booking = booked(client, cust["token"], event["id"])
    assert_problem(f.book(client, other_cust["token"], event["id"]), 409, "event_full")

    client.delete(f"{BOOKINGS}/{booking['id']}", headers=auth(cust["token"]))

    assert f.book(client, other_cust["token"], event["id"]).status_code == 201
    assert f.booked_count(event["id"]) == 1


@pytest.mark.parametrize(
    ("start", "end", "code"),
    [(-1, 1, "event_started"), (-3, -1, "event_ended")],
    ids=["started", "ended"],
)
def test_an_active_booking_cannot_be_deleted_once_its_event_started(
    client: FlaskClient,
    cust: dict[str, Any],
    event: dict[str, Any],
    start: float,
    end: float,
    code: str,
):
    # The cancel rule, applied to delete: otherwise delete frees the seat cancel refuses to.
    booking = booked(client, cust["token"], event["id"])
    f.set_event_times(event["id"], start=in_hours(start), end=in_hours(end))
    before = snapshot(event["id"])

    cancelled = cancel(client, cust["token"], booking["id"])
    deleted = client.delete(f"{BOOKINGS}/{booking['id']}", headers=auth(cust["token"]))

    assert_problem(cancelled, 422, code)
    assert_problem(deleted, 422, code)
    assert snapshot(event["id"]) == before
    assert f.booking_status(booking["id"]) == "active"
    assert f.count_rows("history_entries", action="delete") == 0


def test_a_cancelled_booking_can_be_deleted_after_its_event_started(
    client: FlaskClient, cust: dict[str, Any], other_cust: dict[str, Any], event: dict[str, Any]
):
    # It holds no seat, so deleting it changes nothing a started event depends on.
    booked(client, other_cust["token"], event["id"])
    booking = booked(client, cust["token"], event["id"])
    cancel(client, cust["token"], booking["id"])
    start_now(event["id"])

    response = client.delete(f"{BOOKINGS}/{booking['id']}", headers=auth(cust["token"]))

    assert response.status_code == 204
    assert f.booking_status(booking["id"]) is None
    assert f.booked_count(event["id"]) == 1


def test_capacity_raised_on_full_event_opens_seats(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], other_cust: dict[str, Any]
):
    event = f.create_event(client, org["token"], capacity=1)
    booked(client, cust["token"], event["id"])
    assert_problem(f.book(client, other_cust["token"], event["id"]), 409, "event_full")

    raised = client.patch(
        f"{API}/events/{event['id']}", json={"capacity": 2}, headers=auth(org["token"])
    )

    assert raised.status_code == 200
    assert f.book(client, other_cust["token"], event["id"]).status_code == 201
    assert f.booked_count(event["id"]) == 2


def test_event_starting_in_minutes_can_still_be_booked(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event = f.create_event(
        client, org["token"], start_time=iso(in_hours(0.05)), end_time=iso(in_hours(1))
    )

    response = f.book(client, cust["token"], event["id"])

    assert response.status_code == 201
