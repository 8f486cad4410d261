"""Test data builders: through the API where the API allows it, directly where it must not.

Events that have already started cannot be created through the API (by design), so
``insert_event`` writes them straight into the database.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from booking_service.database import db
from booking_service.models import Booking, Event

API = "/api/v1"
PASSWORD = "correct-horse-battery"
_sequence = itertools.count(1)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def in_hours(hours: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


def register(client: FlaskClient, role: str, **overrides: Any) -> dict[str, Any]:
    """Register a user; returns ``{"user": ..., "token": ...}``."""
    n = next(_sequence)
    body: dict[str, Any] = {
        "username": f"{role}{n}",
        "password": PASSWORD,
        "email": f"{role}{n}@example.com",
        "first_name": role.capitalize(),
        "last_name": str(n),
    }
    if role == "organizer":
        body["organization_name"] = f"Org {n}"
        body["business_address"] = f"{n} Main Street"
    body.update(overrides)
    response = client.post(f"{API}/auth/register/{role}", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def organizer(client: FlaskClient, **overrides: Any) -> dict[str, Any]:
    return register(client, "organizer", **overrides)


def customer(client: FlaskClient, **overrides: Any) -> dict[str, Any]:
    return register(client, "customer", **overrides)


def create_event(client: FlaskClient, token: str, **overrides: Any) -> dict[str, Any]:
    """Create an upcoming event through the API."""
    body: dict[str, Any] = {
        "title": f"Event {next(_sequence)}",
        "description": "A test event",
        "start_time": iso(in_hours(24)),
        "end_time": iso(in_hours(26)),
        "capacity": 10,
    }
    body.update(overrides)
    response = client.post(f"{API}/events", json=body, headers=auth(token))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def insert_event(
    *,
    organizer_id: int,
    start: datetime,
    end: datetime,
    capacity: int = 10,
    title: str = "Direct event",
) -> int:
    """Insert an event directly (e.g. one that has already started); returns its id."""
    with db.transaction() as session:
        event = Event(
            organizer_id=organizer_id,
            title=title,
            description="",
            start_time=start,
            end_time=end,
            capacity=capacity,
            booked_count=0,
        )
        session.add(event)
        session.flush()
        return event.id


def insert_active_booking(*, event_id: int, customer_id: int) -> int:
    """Book a seat directly, keeping booked_count in step (e.g. on an ongoing event)."""
    with db.transaction() as session:
        event = session.get(Event, event_id, with_for_update=True)
        assert event is not None
        event.booked_count += 1
        booking = Booking(event_id=event_id, customer_id=customer_id, status="active")
        session.add(booking)
        session.flush()
        return booking.id


def book(client: FlaskClient, token: str, event_id: int) -> TestResponse:
    return client.post(f"{API}/bookings", json={"event_id": event_id}, headers=auth(token))


# --- direct reads and adjustments (added for the api tier) ---------------------------------


def count_rows(table: str, **where: Any) -> int:
    """Count rows of ``table`` matching the equality filters in ``where``."""
    from sqlalchemy import text

    clause = " AND ".join(f"{column} = :{column}" for column in where) or "TRUE"
    with db.transaction() as session:
        return int(session.scalar(text(f"SELECT count(*) FROM {table} WHERE {clause}"), where))


def booked_count(event_id: int) -> int:
    """The event's stored booked_count, read straight from the database."""
    with db.transaction() as session:
        event = session.get(Event, event_id)
        assert event is not None
        return event.booked_count


def booking_status(booking_id: int) -> str | None:
    """The stored status of a booking, or None when the row is gone."""
    with db.transaction() as session:
        booking = session.get(Booking, booking_id)
        return None if booking is None else booking.status


def set_event_times(event_id: int, *, start: datetime, end: datetime) -> None:
    """Move an event in time directly (e.g. make a booked event start), bypassing validation."""
    with db.transaction() as session:
        event = session.get(Event, event_id, with_for_update=True)
        assert event is not None
        event.start_time = start
        event.end_time = end


def history(client: FlaskClient, token: str, **query: Any) -> list[dict[str, Any]]:
    """The signed-in user's history entries (first page of 100), newest first."""
    response = client.get(
        f"{API}/history", query_string={"page_size": 100, **query}, headers=auth(token)
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}
EVENT_FIELDS = {
    "id",
    "title",
    "description",
    "start_time",
    "end_time",
    "capacity",
    "booked_count",
    "held_count",
    "available_slots",
    "is_full",
    "waitlist_length",
    "max_seats_per_booking",
    "sale_starts_at",
    "waiting_room",
    "admit_per_minute",
    "admission_minutes",
    "hold_ttl_seconds",
    "is_past",
    "is_ongoing",
    "organizer_id",
    "created_at",
    "updated_at",
}


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check an RFC 9457 problem response with the given status and stable code."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == PROBLEM_CONTENT_TYPE
    problem = response.get_json()
    assert set(problem) >= PROBLEM_FIELDS
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"] == f"urn:booking-service:problem:{code}"
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    return problem


def insert_customers(count: int, *, prefix: str = "bulk-") -> list[tuple[int, str]]:
    """``count`` customers with live tokens, straight into PostgreSQL (registering hundreds
    over HTTP would time the password hash): [(user id, bearer token)]. Fresh ids each call."""
    from sqlalchemy import text

    with db.transaction() as session:
        first = int(session.scalar(text("SELECT coalesce(max(id), 0) FROM users"))) + 1_000_000
        last = first + count - 1
        session.execute(
            text(
                "INSERT INTO users (id, username, username_key, email, password_hash, role) "
                "SELECT k, :prefix || k, :prefix || k, k || '@example.com', '!', 'customer' "
                "FROM generate_series(:first, :last) AS k"
            ),
            {"first": first, "last": last, "prefix": prefix},
        )
        session.execute(
            text(
                "INSERT INTO api_tokens (user_id, token_hash, expires_at) "
                "SELECT k, encode(sha256(convert_to(k || '.' || :prefix || k, 'UTF8')), 'hex'), "
                "now() + interval '1 day' FROM generate_series(:first, :last) AS k"
            ),
            {"first": first, "last": last, "prefix": prefix},
        )
    return [(k, f"{k}.{prefix}{k}") for k in range(first, last + 1)]
