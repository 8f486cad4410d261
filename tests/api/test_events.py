"""Events: publish, list, read, edit, delete, and an event's bookings (/events).

The contract: docs/architecture.md, "HTTP contract" and the OpenAPI document.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests import factories as f
from tests.factories import API, EVENT_FIELDS, assert_problem, auth, in_hours, iso

EVENTS = f"{API}/events"


def event_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Jazz night",
        "description": "Live music",
        "start_time": iso(in_hours(48)),
        "end_time": iso(in_hours(51)),
        "capacity": 50,
    }
    body.update(overrides)
    return body


def parse(timestamp: str) -> datetime:
    moment = datetime.fromisoformat(timestamp)
    assert moment.tzinfo is not None, timestamp
    return moment


def pagination(response: Any) -> dict[str, Any]:
    return json.loads(response.headers["X-Pagination"])


def ids(response: Any) -> list[int]:
    return [item["id"] for item in response.get_json()]


def event_row(client: FlaskClient, event_id: int) -> dict[str, Any]:
    response = client.get(f"{EVENTS}/{event_id}")
    assert response.status_code == 200
    return response.get_json()


def started_event(org: dict[str, Any], **kwargs: Any) -> int:
    return f.insert_event(
        organizer_id=org["user"]["id"], start=in_hours(-1), end=in_hours(1), **kwargs
    )


def past_event(org: dict[str, Any], **kwargs: Any) -> int:
    return f.insert_event(
        organizer_id=org["user"]["id"], start=in_hours(-5), end=in_hours(-3), **kwargs
    )


# --- create -----------------------------------------------------------------------------


def test_organizer_creates_event(client: FlaskClient, org: dict[str, Any]):
    body = event_body()

    response = client.post(EVENTS, json=body, headers=auth(org["token"]))

    assert response.status_code == 201
    event = response.get_json()
    assert set(event) == EVENT_FIELDS
    assert event["title"] == "Jazz night"
    assert event["description"] == "Live music"
    assert event["capacity"] == 50
    assert event["booked_count"] == 0
    assert event["available_slots"] == 50
    assert event["is_full"] is False
    assert event["is_past"] is False
    assert event["is_ongoing"] is False
    assert event["organizer_id"] == org["user"]["id"]
    assert parse(event["start_time"]) == parse(body["start_time"])
    assert parse(event["end_time"]) == parse(body["end_time"])
    parse(event["created_at"])
    parse(event["updated_at"])
    assert f.count_rows("events") == 1


def test_created_event_is_readable_at_its_id(client: FlaskClient, org: dict[str, Any]):
    created = f.create_event(client, org["token"], title="Readable")

    fetched = event_row(client, created["id"])

    assert fetched["title"] == "Readable"
    assert fetched["id"] == created["id"]


def test_description_defaults_to_empty(client: FlaskClient, org: dict[str, Any]):
    body = event_body()
    del body["description"]

    response = client.post(EVENTS, json=body, headers=auth(org["token"]))

    assert response.status_code == 201
    assert response.get_json()["description"] == ""


def test_timestamp_without_timezone_is_taken_as_utc(client: FlaskClient, org: dict[str, Any]):
    body = event_body(start_time="2099-01-01T10:00:00", end_time="2099-01-01T12:00:00")

    response = client.post(EVENTS, json=body, headers=auth(org["token"]))

    assert response.status_code == 201
    start = parse(response.get_json()["start_time"])
    assert start == datetime.fromisoformat("2099-01-01T10:00:00+00:00")


def test_timestamp_offsets_keep_the_same_instant(client: FlaskClient, org: dict[str, Any]):
    body = event_body(start_time="2099-06-01T12:00:00+02:00", end_time="2099-06-01T15:00:00+02:00")

    response = client.post(EVENTS, json=body, headers=auth(org["token"]))

    assert response.status_code == 201
    assert parse(response.get_json()["start_time"]) == datetime.fromisoformat(
        "2099-06-01T10:00:00+00:00"
    )


def test_customer_cannot_create_event(client: FlaskClient, cust: dict[str, Any]):
    response = client.post(EVENTS, json=event_body(), headers=auth(cust["token"]))

    assert_problem(response, 403, "forbidden")
    assert f.count_rows("events") == 0
    assert f.count_rows("history_entries", action="create") == 0


def test_anonymous_cannot_create_event(client: FlaskClient):
    response = client.post(EVENTS, json=event_body())

    assert_problem(response, 401, "unauthorized")
    assert f.count_rows("events") == 0


@pytest.mark.parametrize("end_offset_hours", [0, -1])
def test_event_must_end_after_it_starts(
    client: FlaskClient, org: dict[str, Any], end_offset_hours: int
):
    start = in_hours(48)
    body = event_body(
        start_time=iso(start), end_time=iso(start + timedelta(hours=end_offset_hours))
    )

    response = client.post(EVENTS, json=body, headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert "end_time" in problem["errors"]
    assert f.count_rows("events") == 0


def test_event_cannot_start_in_the_past(client: FlaskClient, org: dict[str, Any]):
    body = event_body(start_time=iso(in_hours(-1)), end_time=iso(in_hours(2)))

    response = client.post(EVENTS, json=body, headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert set(problem["errors"]) == {"start_time"}
    assert f.count_rows("events") == 0


def test_schedule_errors_are_reported_together(client: FlaskClient, org: dict[str, Any]):
    body = event_body(start_time=iso(in_hours(-1)), end_time=iso(in_hours(-2)))

    response = client.post(EVENTS, json=body, headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert set(problem["errors"]) == {"start_time", "end_time"}


@pytest.mark.parametrize("capacity", [0, -1, 1_000_001])
def test_capacity_out_of_range_is_rejected(client: FlaskClient, org: dict[str, Any], capacity: int):
    response = client.post(EVENTS, json=event_body(capacity=capacity), headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert set(problem["errors"]) == {"capacity"}
    assert f.count_rows("events") == 0


def test_capacity_of_one_is_accepted(client: FlaskClient, org: dict[str, Any]):
    response = client.post(EVENTS, json=event_body(capacity=1), headers=auth(org["token"]))

    assert response.status_code == 201
    assert response.get_json()["capacity"] == 1


def test_create_reports_every_missing_field(client: FlaskClient, org: dict[str, Any]):
    response = client.post(EVENTS, json={}, headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert {"title", "start_time", "end_time", "capacity"} <= set(problem["errors"])
    assert "description" not in problem["errors"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("capacity", "10"),
        ("capacity", 2.5),
        ("capacity", True),
        ("start_time", "tomorrow"),
        ("end_time", 1234567890),
        ("title", 42),
        ("title", "   "),
        ("title", "\u200b"),  # a lone zero-width space: nothing visible
        ("title", " \u2060\u00ad\ufeff\u200d "),  # only invisible formatting and spaces
        ("title", "x" * 201),
        ("description", "nul\x00byte"),
    ],
)
def test_create_rejects_wrong_types_and_bad_values(
    client: FlaskClient, org: dict[str, Any], field: str, value: Any
):
    response = client.post(EVENTS, json=event_body(**{field: value}), headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert field in problem["errors"]
    assert f.count_rows("events") == 0


def test_create_rejects_unknown_fields(client: FlaskClient, org: dict[str, Any]):
    body = event_body(booked_count=5)

    response = client.post(EVENTS, json=body, headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert "booked_count" in problem["errors"]


# --- list -------------------------------------------------------------------------------


def test_anyone_can_list_events_with_seat_counts(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event = f.create_event(client, org["token"], capacity=3)
    assert f.book(client, cust["token"], event["id"]).status_code == 201

    response = client.get(EVENTS)

    assert response.status_code == 200
    [listed] = response.get_json()
    assert set(listed) == EVENT_FIELDS
    assert listed["booked_count"] == 1
    assert listed["available_slots"] == 2
    assert pagination(response)["total"] == 1


def test_list_is_soonest_first(client: FlaskClient, org: dict[str, Any]):
    later = f.create_event(
        client, org["token"], start_time=iso(in_hours(30)), end_time=iso(in_hours(31))
    )
    sooner = f.create_event(
        client, org["token"], start_time=iso(in_hours(20)), end_time=iso(in_hours(21))
    )

    response = client.get(EVENTS)

    assert ids(response) == [sooner["id"], later["id"]]


def test_list_is_paginated_with_totals_in_header(client: FlaskClient, org: dict[str, Any]):
    created = [
        f.create_event(client, org["token"], start_time=iso(in_hours(20 + n)))["id"]
        for n in range(5)
    ]

    first = client.get(EVENTS, query_string={"page": 1, "page_size": 2})
    last = client.get(EVENTS, query_string={"page": 3, "page_size": 2})

    assert ids(first) == created[:2]
    assert ids(last) == created[4:]
    header = pagination(first)
    assert header["total"] == 5
    assert header["total_pages"] == 3
    assert header["page"] == 1
    assert header["next_page"] == 2
    assert pagination(last)["page"] == 3


def test_page_beyond_the_last_is_empty(client: FlaskClient, org: dict[str, Any]):
    f.create_event(client, org["token"])

    response = client.get(EVENTS, query_string={"page": 5})

    assert response.status_code == 200
    assert response.get_json() == []
    assert pagination(response)["total"] == 1


@pytest.mark.parametrize("query", [{"page_size": 101}, {"page_size": 0}, {"page": 0}])
def test_list_rejects_bad_pagination(client: FlaskClient, query: dict[str, int]):
    response = client.get(EVENTS, query_string=query)

    problem = assert_problem(response, 422, "validation_error")
    assert set(problem["errors"]) == set(query)


def test_when_filters_upcoming_ongoing_and_past(client: FlaskClient, org: dict[str, Any]):
    upcoming = f.create_event(client, org["token"])["id"]
    ongoing = started_event(org)
    past = past_event(org)

    def listed(when: str) -> list[int]:
        response = client.get(EVENTS, query_string={"when": when})
        assert response.status_code == 200
        return ids(response)

    assert listed("upcoming") == [upcoming]
    assert listed("ongoing") == [ongoing]
    assert listed("past") == [past]
    assert sorted(ids(client.get(EVENTS))) == sorted([upcoming, ongoing, past])


def test_past_events_list_most_recent_first(client: FlaskClient, org: dict[str, Any]):
    older = f.insert_event(organizer_id=org["user"]["id"], start=in_hours(-50), end=in_hours(-49))
    recent = past_event(org)

    response = client.get(EVENTS, query_string={"when": "past"})

    assert ids(response) == [recent, older]


def test_listed_events_report_past_and_ongoing_flags(client: FlaskClient, org: dict[str, Any]):
    ongoing = started_event(org)
    past = past_event(org)

    flags = {
        item["id"]: (item["is_past"], item["is_ongoing"]) for item in client.get(EVENTS).get_json()
    }

    assert flags[ongoing] == (False, True)
    assert flags[past] == (True, False)


@pytest.mark.parametrize("when", ["soon", "UPCOMING", ""])
def test_unknown_when_filter_is_rejected(client: FlaskClient, when: str):
    response = client.get(EVENTS, query_string={"when": when})

    problem = assert_problem(response, 422, "validation_error")
    assert "when" in problem["errors"]


def test_mine_lists_only_the_organizers_own_events(
    client: FlaskClient, org: dict[str, Any], other_org: dict[str, Any]
):
    mine = f.create_event(client, org["token"])["id"]
    mine_past = past_event(org)
    f.create_event(client, other_org["token"])

    response = client.get(EVENTS, query_string={"mine": "true"}, headers=auth(org["token"]))

    assert response.status_code == 200
    assert sorted(ids(response)) == sorted([mine, mine_past])
    assert pagination(response)["total"] == 2


def test_mine_combines_with_when(client: FlaskClient, org: dict[str, Any], other_org: dict):
    f.create_event(client, org["token"])
    mine_past = past_event(org)
    past_event(other_org)

    response = client.get(
        EVENTS, query_string={"mine": "true", "when": "past"}, headers=auth(org["token"])
    )

    assert ids(response) == [mine_past]


def test_mine_is_for_organizers_only(client: FlaskClient, cust: dict[str, Any]):
    response = client.get(EVENTS, query_string={"mine": "true"}, headers=auth(cust["token"]))

    assert_problem(response, 403, "forbidden")


def test_mine_needs_authentication(client: FlaskClient, org: dict[str, Any]):
    f.create_event(client, org["token"])

    response = client.get(EVENTS, query_string={"mine": "true"})

    assert_problem(response, 401, "unauthorized")


def test_mine_with_revoked_token_is_unauthorized(client: FlaskClient, org: dict[str, Any]):
    client.post(f"{API}/auth/logout", headers=auth(org["token"]))

    response = client.get(EVENTS, query_string={"mine": "true"}, headers=auth(org["token"]))

    assert_problem(response, 401, "unauthorized")


def test_mine_false_lists_everything_anonymously(
    client: FlaskClient, org: dict[str, Any], other_org: dict[str, Any]
):
    f.create_event(client, org["token"])
    f.create_event(client, other_org["token"])

    response = client.get(EVENTS, query_string={"mine": "false"})

    assert response.status_code == 200
    assert len(response.get_json()) == 2


def test_mine_must_be_a_boolean(client: FlaskClient, org: dict[str, Any]):
    response = client.get(EVENTS, query_string={"mine": "maybe"}, headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert "mine" in problem["errors"]


# --- detail -----------------------------------------------------------------------------


def test_detail_has_every_contract_field(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"], capacity=10)

    detail = event_row(client, event["id"])

    assert set(detail) == EVENT_FIELDS
    assert detail["capacity"] == 10
    assert detail["booked_count"] == 0
    assert detail["available_slots"] == 10
    assert detail["is_full"] is False


def test_detail_counts_seats_after_bookings(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"], capacity=5)
    for _ in range(2):
        assert f.book(client, f.customer(client)["token"], event["id"]).status_code == 201

    detail = event_row(client, event["id"])

    assert detail["booked_count"] == 2
    assert detail["available_slots"] == 3
    assert detail["is_full"] is False


def test_detail_reports_full_event(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"], capacity=2)
    for _ in range(2):
        assert f.book(client, f.customer(client)["token"], event["id"]).status_code == 201

    detail = event_row(client, event["id"])

    assert detail["booked_count"] == 2
    assert detail["available_slots"] == 0
    assert detail["is_full"] is True


def test_detail_reports_ongoing_event(client: FlaskClient, org: dict[str, Any]):
    detail = event_row(client, started_event(org))

    assert detail["is_ongoing"] is True
    assert detail["is_past"] is False


def test_detail_reports_past_event(client: FlaskClient, org: dict[str, Any]):
    detail = event_row(client, past_event(org))

    assert detail["is_past"] is True
    assert detail["is_ongoing"] is False


def test_unknown_event_is_not_found(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])

    response = client.get(f"{EVENTS}/{event['id'] + 1}")

    problem = assert_problem(response, 404, "event_not_found")
    assert problem["status"] == 404


@pytest.mark.parametrize("event_id", [str(2**63), str(2**63 - 1), "99999999999999999999999", "0"])
def test_out_of_range_event_ids_are_not_found(client: FlaskClient, event_id: str):
    response = client.get(f"{EVENTS}/{event_id}")

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_non_numeric_event_id_is_not_found(client: FlaskClient):
    response = client.get(f"{EVENTS}/abc")

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


# --- update -----------------------------------------------------------------------------


def test_organizer_updates_own_event(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"], title="Old", capacity=10)

    response = client.patch(
        f"{EVENTS}/{event['id']}",
        json={"title": "New", "description": "Changed", "capacity": 20},
        headers=auth(org["token"]),
    )

    assert response.status_code == 200
    updated = response.get_json()
    assert (updated["title"], updated["description"], updated["capacity"]) == (
        "New",
        "Changed",
        20,
    )
    assert updated["available_slots"] == 20
    assert parse(updated["updated_at"]) > parse(event["updated_at"])
    assert updated["created_at"] == event["created_at"]
    stored = event_row(client, event["id"])
    assert (stored["title"], stored["capacity"]) == ("New", 20)


def test_update_moves_both_times(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])
    start, end = in_hours(100), in_hours(103)

    response = client.patch(
        f"{EVENTS}/{event['id']}",
        json={"start_time": iso(start), "end_time": iso(end)},
        headers=auth(org["token"]),
    )

    assert response.status_code == 200
    assert parse(response.get_json()["start_time"]) == start
    assert parse(response.get_json()["end_time"]) == end


def test_other_organizer_cannot_update(
    client: FlaskClient, org: dict[str, Any], other_org: dict[str, Any]
):
    event = f.create_event(client, org["token"], title="Mine")

    response = client.patch(
        f"{EVENTS}/{event['id']}", json={"title": "Hijacked"}, headers=auth(other_org["token"])
    )

    assert_problem(response, 403, "forbidden")
    assert event_row(client, event["id"])["title"] == "Mine"
    assert f.count_rows("history_entries", action="update") == 0


def test_customer_cannot_update(client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]):
    event = f.create_event(client, org["token"], title="Mine")

    response = client.patch(
        f"{EVENTS}/{event['id']}", json={"title": "Hijacked"}, headers=auth(cust["token"])
    )

    assert_problem(response, 403, "forbidden")
    assert event_row(client, event["id"])["title"] == "Mine"


def test_anonymous_cannot_update(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"], title="Mine")

    response = client.patch(f"{EVENTS}/{event['id']}", json={"title": "Hijacked"})

    assert_problem(response, 401, "unauthorized")
    assert event_row(client, event["id"])["title"] == "Mine"


def test_update_unknown_event_is_not_found(client: FlaskClient, org: dict[str, Any]):
    response = client.patch(f"{EVENTS}/12345", json={"title": "X"}, headers=auth(org["token"]))

    assert_problem(response, 404, "event_not_found")


def test_capacity_cannot_go_below_booked_seats(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"], capacity=5)
    for _ in range(3):
        assert f.book(client, f.customer(client)["token"], event["id"]).status_code == 201

    response = client.patch(
        f"{EVENTS}/{event['id']}",
        json={"capacity": 2, "title": "Renamed"},
        headers=auth(org["token"]),
    )

    assert_problem(response, 409, "capacity_below_bookings")
    stored = event_row(client, event["id"])
    assert (stored["capacity"], stored["booked_count"], stored["title"]) == (5, 3, event["title"])
    assert f.count_rows("history_entries", action="update") == 0


def test_capacity_can_shrink_to_exactly_the_booked_seats(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"], capacity=5)
    for _ in range(3):
        assert f.book(client, f.customer(client)["token"], event["id"]).status_code == 201

    response = client.patch(
        f"{EVENTS}/{event['id']}", json={"capacity": 3}, headers=auth(org["token"])
    )

    assert response.status_code == 200
    updated = response.get_json()
    assert (updated["capacity"], updated["booked_count"]) == (3, 3)
    assert updated["available_slots"] == 0
    assert updated["is_full"] is True


def test_end_time_before_start_is_rejected_on_update(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])

    response = client.patch(
        f"{EVENTS}/{event['id']}",
        json={"end_time": iso(parse(event["start_time"]) - timedelta(minutes=1))},
        headers=auth(org["token"]),
    )

    problem = assert_problem(response, 422, "validation_error")
    assert "end_time" in problem["errors"]
    assert event_row(client, event["id"])["end_time"] == event["end_time"]


def test_start_moved_after_end_is_rejected(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])

    response = client.patch(
        f"{EVENTS}/{event['id']}",
        json={"start_time": iso(parse(event["end_time"]) + timedelta(hours=1))},
        headers=auth(org["token"]),
    )

    problem = assert_problem(response, 422, "validation_error")
    assert "end_time" in problem["errors"]
    assert event_row(client, event["id"])["start_time"] == event["start_time"]


def test_start_cannot_be_moved_into_the_past(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])

    response = client.patch(
        f"{EVENTS}/{event['id']}",
        json={"start_time": iso(in_hours(-1))},
        headers=auth(org["token"]),
    )

    problem = assert_problem(response, 422, "validation_error")
    assert "start_time" in problem["errors"]
    assert event_row(client, event["id"])["start_time"] == event["start_time"]


def test_started_event_can_still_be_retitled(client: FlaskClient, org: dict[str, Any]):
    event_id = started_event(org)

    response = client.patch(
        f"{EVENTS}/{event_id}", json={"title": "Still on"}, headers=auth(org["token"])
    )

    assert response.status_code == 200
    assert response.get_json()["title"] == "Still on"


def test_resending_unchanged_start_of_started_event_is_accepted(
    client: FlaskClient, org: dict[str, Any]
):
    event_id = started_event(org)
    current = event_row(client, event_id)

    response = client.patch(
        f"{EVENTS}/{event_id}",
        json={"start_time": current["start_time"], "end_time": iso(in_hours(3))},
        headers=auth(org["token"]),
    )

    assert response.status_code == 200
    assert parse(response.get_json()["start_time"]) == parse(current["start_time"])


def test_update_with_empty_body_is_rejected(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])

    response = client.patch(f"{EVENTS}/{event['id']}", json={}, headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"]
    assert f.count_rows("history_entries", action="update") == 0


@pytest.mark.parametrize(
    "body,field",
    [
        ({"capacity": 0}, "capacity"),
        ({"capacity": "7"}, "capacity"),
        ({"title": ""}, "title"),
        ({"start_time": "soon"}, "start_time"),
        ({"organizer_id": 99}, "organizer_id"),
        ({"booked_count": 0}, "booked_count"),
    ],
)
def test_update_rejects_invalid_fields(
    client: FlaskClient, org: dict[str, Any], body: dict[str, Any], field: str
):
    event = f.create_event(client, org["token"], capacity=10)

    response = client.patch(f"{EVENTS}/{event['id']}", json=body, headers=auth(org["token"]))

    problem = assert_problem(response, 422, "validation_error")
    assert field in problem["errors"]
    stored = event_row(client, event["id"])
    assert (stored["capacity"], stored["title"]) == (10, event["title"])


# --- delete -----------------------------------------------------------------------------


def test_organizer_deletes_own_event_with_its_bookings(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event = f.create_event(client, org["token"])
    booking = f.book(client, cust["token"], event["id"]).get_json()

    response = client.delete(f"{EVENTS}/{event['id']}", headers=auth(org["token"]))

    assert response.status_code == 204
    assert response.get_data() == b""
    assert client.get(f"{EVENTS}/{event['id']}").status_code == 404
    assert f.count_rows("bookings") == 0
    gone = client.get(f"{API}/bookings/{booking['id']}", headers=auth(cust["token"]))
    assert gone.status_code == 404


def test_deleted_event_stays_in_history(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event = f.create_event(client, org["token"], title="Gone soon")
    booking = f.book(client, cust["token"], event["id"]).get_json()

    assert client.delete(f"{EVENTS}/{event['id']}", headers=auth(org["token"])).status_code == 204

    [deleted] = f.history(client, org["token"], action="delete")
    assert (deleted["entity_type"], deleted["entity_id"]) == ("event", event["id"])
    assert deleted["details"]["title"] == "Gone soon"
    assert deleted["details"]["active_bookings_removed"] == 1
    # The customer's own record of booking it survives too.
    created = f.history(client, cust["token"], action="create")
    assert [(e["entity_type"], e["entity_id"]) for e in created] == [("booking", booking["id"])]


def test_other_organizer_cannot_delete(
    client: FlaskClient, org: dict[str, Any], other_org: dict[str, Any]
):
    event = f.create_event(client, org["token"])

    response = client.delete(f"{EVENTS}/{event['id']}", headers=auth(other_org["token"]))

    assert_problem(response, 403, "forbidden")
    assert client.get(f"{EVENTS}/{event['id']}").status_code == 200
    assert f.count_rows("history_entries", action="delete") == 0


def test_customer_cannot_delete_event(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event = f.create_event(client, org["token"])
    f.book(client, cust["token"], event["id"])

    response = client.delete(f"{EVENTS}/{event['id']}", headers=auth(cust["token"]))

    assert_problem(response, 403, "forbidden")
    assert client.get(f"{EVENTS}/{event['id']}").status_code == 200
    assert f.count_rows("bookings") == 1


def test_anonymous_cannot_delete_event(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])

    response = client.delete(f"{EVENTS}/{event['id']}")

    assert_problem(response, 401, "unauthorized")
    assert f.count_rows("events") == 1


def test_delete_unknown_event_is_not_found(client: FlaskClient, org: dict[str, Any]):
    response = client.delete(f"{EVENTS}/4242", headers=auth(org["token"]))

    assert_problem(response, 404, "event_not_found")
    assert f.count_rows("history_entries", action="delete") == 0


# --- an event's bookings ----------------------------------------------------------------


def test_organizer_lists_bookings_of_own_event_newest_first(
    client: FlaskClient, org: dict[str, Any]
):
    event = f.create_event(client, org["token"])
    other_event = f.create_event(client, org["token"])
    booked = [f.book(client, f.customer(client)["token"], event["id"]).get_json() for _ in range(3)]
    f.book(client, f.customer(client)["token"], other_event["id"])

    response = client.get(f"{EVENTS}/{event['id']}/bookings", headers=auth(org["token"]))

    assert response.status_code == 200
    assert ids(response) == [b["id"] for b in reversed(booked)]
    assert all(item["event_id"] == event["id"] for item in response.get_json())
    assert pagination(response)["total"] == 3


def test_event_bookings_filter_by_status(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])
    cancelled_by = f.customer(client)
    cancelled = f.book(client, cancelled_by["token"], event["id"]).get_json()
    client.post(f"{API}/bookings/{cancelled['id']}/cancel", headers=auth(cancelled_by["token"]))
    active = f.book(client, f.customer(client)["token"], event["id"]).get_json()

    def listed(status: str) -> list[int]:
        response = client.get(
            f"{EVENTS}/{event['id']}/bookings",
            query_string={"status": status},
            headers=auth(org["token"]),
        )
        assert response.status_code == 200
        return ids(response)

    assert listed("active") == [active["id"]]
    assert listed("cancelled") == [cancelled["id"]]


def test_event_bookings_reject_unknown_status(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])

    response = client.get(
        f"{EVENTS}/{event['id']}/bookings",
        query_string={"status": "pending"},
        headers=auth(org["token"]),
    )

    assert_problem(response, 422, "validation_error")


def test_other_organizer_cannot_list_event_bookings(
    client: FlaskClient, org: dict[str, Any], other_org: dict[str, Any], cust: dict[str, Any]
):
    event = f.create_event(client, org["token"])
    f.book(client, cust["token"], event["id"])

    response = client.get(f"{EVENTS}/{event['id']}/bookings", headers=auth(other_org["token"]))

    assert_problem(response, 403, "forbidden")


def test_customer_cannot_list_event_bookings(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event = f.create_event(client, org["token"])
    f.book(client, cust["token"], event["id"])

    response = client.get(f"{EVENTS}/{event['id']}/bookings", headers=auth(cust["token"]))

    assert_problem(response, 403, "forbidden")


def test_anonymous_cannot_list_event_bookings(client: FlaskClient, org: dict[str, Any]):
    event = f.create_event(client, org["token"])

    response = client.get(f"{EVENTS}/{event['id']}/bookings")

    assert_problem(response, 401, "unauthorized")


def test_bookings_of_unknown_event_are_not_found(client: FlaskClient, org: dict[str, Any]):
    response = client.get(f"{EVENTS}/999/bookings", headers=auth(org["token"]))

    assert_problem(response, 404, "event_not_found")
