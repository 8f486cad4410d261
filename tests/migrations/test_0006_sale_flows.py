"""Migration 0006 (seats, holds, waitlist) on a scratch database with bookings in it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from booking_service import migrate
from tests.migrations.conftest import downgrade_to, migrate_to


def run(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql), params)


def rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(text(sql)))


def version(engine: Engine) -> str:
    return rows(engine, "SELECT version_num FROM alembic_version")[0][0]


def sold_event_at_0005(engine: Engine) -> None:
    """An organizer, two customers and an event of capacity 3 with two active bookings and a
    cancelled one, as the schema before 0006 holds them."""
    migrate_to("0005")
    for n, role in enumerate(("organizer", "customer", "customer"), start=1):
        run(
            engine,
            "INSERT INTO users (id, username, username_key, email, password_hash, role, "
            "organization_name) VALUES (:id, :name, :name, 'x@example.com', '!', :role, 'Org')",
            id=n,
            name=f"user{n}",
            role=role,
        )
    run(
        engine,
        "INSERT INTO events (id, organizer_id, title, start_time, end_time, capacity, "
        "booked_count) VALUES (1, 1, 'Gig', now() + interval '1 day', "
        "now() + interval '2 days', 3, 2)",
    )
    run(
        engine,
        "INSERT INTO bookings (event_id, customer_id, status) VALUES "
        "(1, 2, 'active'), (1, 3, 'active'), (1, 3, 'cancelled')",
    )


def test_existing_bookings_become_one_seat_each_and_the_counters_stay_right(
    scratch: Engine,
) -> None:
    sold_event_at_0005(scratch)

    migrate_to("0006")

    assert rows(scratch, "SELECT status, seats FROM bookings ORDER BY id") == [
        ("active", 1),
        ("active", 1),
        ("cancelled", 1),
    ]
    assert rows(
        scratch,
        "SELECT booked_count, held_count, waitlist_length, max_seats_per_booking, "
        "hold_ttl_seconds FROM events",
    ) == [(2, 0, 0, 10, None)]
    # One CHECK covers booked and held seats together.
    with pytest.raises(IntegrityError, match="seats_within_capacity"):
        run(scratch, "UPDATE events SET held_count = 2")
    run(scratch, "UPDATE events SET held_count = 1")


def test_downgrade_refuses_what_the_old_schema_cannot_count_then_goes_back(
    scratch: Engine,
) -> None:
    sold_event_at_0005(scratch)
    migrate_to("0006")
    run(scratch, "UPDATE bookings SET seats = 2 WHERE id = 1")
    run(scratch, "UPDATE events SET booked_count = 3")
    run(
        scratch,
        "INSERT INTO waitlist_entries (event_id, customer_id, seats, status) "
        "VALUES (1, 3, 1, 'waiting')",
    )

    with pytest.raises(migrate.MigrationRefused) as refused:
        downgrade_to("0005")

    message = str(refused.value)
    assert "1 booking(s) hold several seats" in message
    assert "1 customer(s) wait" in message
    # Nothing changed: the new tables and columns are all still there.
    assert version(scratch) == "0006"
    assert {"holds", "waitlist_entries"} <= set(inspect(scratch).get_table_names())

    run(scratch, "UPDATE waitlist_entries SET status = 'left'")
    run(scratch, "UPDATE bookings SET seats = 1 WHERE id = 1")
    run(scratch, "UPDATE events SET booked_count = 2")
    downgrade_to("0005")

    assert version(scratch) == "0005"
    assert not {"holds", "waitlist_entries"} & set(inspect(scratch).get_table_names())
    assert "seats" not in {c["name"] for c in inspect(scratch).get_columns("bookings")}
    assert rows(scratch, "SELECT booked_count FROM events") == [(2,)]
    assert len(rows(scratch, "SELECT id FROM bookings")) == 3
    # The old CHECK is back.
    with pytest.raises(IntegrityError, match="booked_within_capacity"):
        run(scratch, "UPDATE events SET booked_count = 4")
