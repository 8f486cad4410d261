"""Event snapshots for the cheap rejections: reused briefly, dropped when this process changes
the event, never trusted to grant a seat (services/snapshots.py).

Reads are counted with a spy around the real read; the database is the real one. "Another
process" freeing a seat is its committed UPDATE, written here in SQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.models import Event
from booking_service.services import snapshots
from booking_service.services.snapshots import event_snapshots
from tests import factories as f
from tests.factories import API, auth


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The event ids read from the database, in order."""
    seen: list[int] = []
    real = snapshots.read_event

    def counting(event_id: int) -> Event | None:
        seen.append(event_id)
        return real(event_id)

    monkeypatch.setattr(snapshots, "read_event", counting)
    yield seen


@pytest.fixture
def full_event(client: FlaskClient) -> dict[str, int | str]:
    """A one-seat event, booked; a second customer has been refused (so it is known full)."""
    organizer = f.organizer(client)
    event = f.create_event(client, organizer["token"], capacity=1)
    holder, other = f.customer(client), f.customer(client)
    assert f.book(client, holder["token"], event["id"]).status_code == 201
    f.assert_problem(f.book(client, other["token"], event["id"]), 409, "event_full")
    return {
        "event": event["id"],
        "organizer": organizer["token"],
        "holder": holder["token"],
        "other": other["token"],
        "booking": _only_booking(event["id"]),
    }


def _only_booking(event_id: int) -> int:
    with db.transaction() as session:
        return session.scalar(text("SELECT id FROM bookings WHERE event_id = :e"), {"e": event_id})


def _free_the_seat_elsewhere(event_id: int) -> None:
    """What another instance's cancellation commits."""
    with db.transaction() as session:
        session.execute(
            text("UPDATE bookings SET status = 'cancelled' WHERE event_id = :e"), {"e": event_id}
        )
        session.execute(
            text("UPDATE events SET booked_count = booked_count - 1 WHERE id = :e"), {"e": event_id}
        )


def test_sold_out_storm_reads_the_event_once(
    client: FlaskClient, full_event: dict[str, int | str], reads: list[int]
) -> None:
    tokens = [f.customer(client)["token"] for _ in range(5)]
    for token in tokens:
        f.assert_problem(f.book(client, token, full_event["event"]), 409, "event_full")
    assert reads == []  # all answered from the snapshot the refusal before them kept
    assert f.booked_count(full_event["event"]) == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "actor", "status"),
    [
        ("post", "/bookings/{booking}/cancel", None, "holder", 200),
        ("delete", "/bookings/{booking}", None, "holder", 204),
        ("patch", "/events/{event}", {"capacity": 2}, "organizer", 200),
    ],
    ids=["cancel", "delete-booking", "raise-capacity"],
)
def test_a_seat_freed_in_this_process_is_bookable_at_once(
    client: FlaskClient,
    full_event: dict[str, int | str],
    method: str,
    path: str,
    body: dict[str, int] | None,
    actor: str,
    status: int,
) -> None:
    change = getattr(client, method)(
        API + path.format(**full_event), json=body, headers=auth(str(full_event[actor]))
    )
    assert change.status_code == status, change.get_json()

    assert f.book(client, full_event["other"], full_event["event"]).status_code == 201


def test_a_seat_freed_elsewhere_is_seen_within_the_max_age(
    client: FlaskClient, full_event: dict[str, int | str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_snapshots, "max_age", 0.3)
    f.assert_problem(f.book(client, full_event["other"], full_event["event"]), 409, "event_full")
    _free_the_seat_elsewhere(full_event["event"])

    # The documented bound: this worker may still say "sold out" for up to max_age...
    f.assert_problem(f.book(client, full_event["other"], full_event["event"]), 409, "event_full")
    time.sleep(0.35)
    # ...and no longer.
    assert f.book(client, full_event["other"], full_event["event"]).status_code == 201
    assert f.booked_count(full_event["event"]) == 1


def test_a_stale_bookable_snapshot_cannot_overbook(client: FlaskClient, reads: list[int]) -> None:
    organizer = f.organizer(client)
    event = f.create_event(client, organizer["token"], capacity=1)
    assert event_snapshots.recent(event["id"]) is not None  # kept: one free seat
    # Another process takes that seat: this worker's snapshot still shows it free.
    f.insert_active_booking(event_id=event["id"], customer_id=f.customer(client)["user"]["id"])

    late = f.book(client, f.customer(client)["token"], event["id"])

    f.assert_problem(late, 409, "event_full")
    # The snapshot let the request through to the lock; the seat statement refused it on
    # the locked row, and only then was the event read again, to explain the refusal.
    assert reads == [event["id"], event["id"]]
    assert f.booked_count(event["id"]) == 1
    assert f.count_rows("bookings", event_id=event["id"]) == 1


def test_a_read_overtaken_by_a_change_is_not_kept(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    organizer = f.organizer(client)
    event = f.create_event(client, organizer["token"], capacity=1)
    real = snapshots.read_event
    seen: list[int] = []

    def read_then_change(event_id: int) -> Event | None:
        seen.append(event_id)
        found = real(event_id)
        event_snapshots.forget(event_id)  # a cancellation committed while the read ran
        return found

    monkeypatch.setattr(snapshots, "read_event", read_then_change)

    assert event_snapshots.fresh(event["id"]) is not None
    assert event_snapshots.recent(event["id"]) is not None
    assert seen == [event["id"], event["id"]]  # the first read was returned, not kept


def test_missing_events_are_never_kept(client: FlaskClient, reads: list[int]) -> None:
    token = f.customer(client)["token"]
    for _ in range(2):
        f.assert_problem(f.book(client, token, 10**12), 404, "event_not_found")
    assert reads == [10**12, 10**12]


def test_max_age_zero_reads_every_time(
    client: FlaskClient,
    full_event: dict[str, int | str],
    reads: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_snapshots, "max_age", 0.0)
    for _ in range(3):
        f.assert_problem(
            f.book(client, full_event["other"], full_event["event"]), 409, "event_full"
        )
    assert reads == [full_event["event"]] * 3


def test_a_bookable_snapshot_is_reused_past_the_max_age(
    client: FlaskClient, reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_snapshots, "max_age", 0.1)
    organizer = f.organizer(client)
    event = f.create_event(client, organizer["token"], capacity=5)
    assert f.book(client, f.customer(client)["token"], event["id"]).status_code == 201
    time.sleep(0.2)

    assert f.book(client, f.customer(client)["token"], event["id"]).status_code == 201
    assert reads == [event["id"]]  # only the first booking read the event
    assert f.booked_count(event["id"]) == 2


def test_an_old_snapshot_that_would_refuse_is_read_again(
    client: FlaskClient,
    full_event: dict[str, int | str],
    reads: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_snapshots, "max_age", 0.1)
    time.sleep(0.2)

    f.assert_problem(f.book(client, full_event["other"], full_event["event"]), 409, "event_full")
    assert reads == [full_event["event"]]


def test_an_event_deleted_elsewhere_behind_a_bookable_snapshot_is_a_404(
    client: FlaskClient, reads: list[int]
) -> None:
    organizer = f.organizer(client)
    event = f.create_event(client, organizer["token"], capacity=5)
    assert event_snapshots.recent(event["id"]) is not None
    with db.transaction() as session:  # another instance's DELETE /events/{id}
        session.execute(text("DELETE FROM events WHERE id = :e"), {"e": event["id"]})

    token = f.customer(client)["token"]
    f.assert_problem(f.book(client, token, event["id"]), 404, "event_not_found")
    f.assert_problem(f.book(client, token, event["id"]), 404, "event_not_found")
    # Through the lock once (the seat statement found no row, the refusal read the event
    # again), then refused before the lock: the missing event is not kept as bookable.
    assert reads == [event["id"]] * 3
    assert f.count_rows("bookings", event_id=event["id"]) == 0
