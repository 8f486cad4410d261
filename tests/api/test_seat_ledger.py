"""The seat ledger's rules through the API, tried as a hostile client would.

A customer's seats on an event (active booking and live hold or offer together) never exceed
``max_seats_per_booking`` on any path; live held seats across events are capped per customer
(MAX_HELD_SEATS_PER_CUSTOMER); an event that does not exist is a 404 before any lock or Redis
write; every applied intent is journaled with its outcome.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.services import invariants, ledger
from tests import factories as f
from tests.api.test_sale_flows import book, event, hold

API = f.API


@pytest.fixture(autouse=True)
def no_drift_afterwards() -> Any:
    yield
    assert invariants.find_drift() == []


def _tied_up(event_id: int, customer_id: int) -> int:
    """The customer's seats on the event, read from the rows: active booking + live hold."""
    with db.single_statement() as connection:
        return int(
            connection.scalar(
                text(
                    "SELECT coalesce((SELECT sum(seats) FROM bookings WHERE event_id = :e "
                    "AND customer_id = :c AND status = 'active'), 0) + coalesce((SELECT "
                    "sum(seats) FROM holds WHERE event_id = :e AND customer_id = :c "
                    "AND status = 'held'), 0)"
                ),
                {"e": event_id, "c": customer_id},
            )
        )


def test_a_hold_then_a_booking_cannot_tie_up_twice_the_seat_limit(client: FlaskClient) -> None:
    shown = event(client, capacity=50, max_seats_per_booking=10)
    who = f.customer(client)
    assert hold(client, who["token"], shown["id"], seats=10).status_code == 201

    problem = f.assert_problem(
        book(client, who["token"], shown["id"], seats=10), 422, "too_many_seats"
    )
    assert problem["max_seats_per_booking"] == 10
    f.assert_problem(book(client, who["token"], shown["id"], seats=1), 422, "too_many_seats")
    assert _tied_up(shown["id"], who["user"]["id"]) == 10
    assert f.count_rows("bookings", event_id=shown["id"]) == 0


def test_a_seat_change_counts_the_live_hold(client: FlaskClient) -> None:
    shown = event(client, capacity=50, max_seats_per_booking=4)
    who = f.customer(client)
    booking = book(client, who["token"], shown["id"], seats=1).get_json()
    assert hold(client, who["token"], shown["id"], seats=3).status_code == 201

    f.assert_problem(
        client.patch(
            f"{API}/bookings/{booking['id']}", json={"seats": 2}, headers=f.auth(who["token"])
        ),
        422,
        "too_many_seats",
    )
    assert _tied_up(shown["id"], who["user"]["id"]) == 4


def test_a_reactivation_counts_the_live_hold(client: FlaskClient) -> None:
    shown = event(client, capacity=50, max_seats_per_booking=4)
    who = f.customer(client)
    booking = book(client, who["token"], shown["id"], seats=2).get_json()
    url = f"{API}/bookings/{booking['id']}"
    assert client.post(f"{url}/cancel", headers=f.auth(who["token"])).status_code == 200
    assert hold(client, who["token"], shown["id"], seats=3).status_code == 201

    f.assert_problem(
        client.post(f"{url}/reactivate", headers=f.auth(who["token"])), 422, "too_many_seats"
    )
    assert _tied_up(shown["id"], who["user"]["id"]) == 3


def test_held_seats_are_capped_per_customer_across_events(client: FlaskClient, app: Flask) -> None:
    limit = app.config["MAX_HELD_SEATS_PER_CUSTOMER"]
    assert limit == 20  # the documented default
    organizer = f.organizer(client)["token"]
    events = [
        f.create_event(client, organizer, capacity=4, max_seats_per_booking=4)["id"]
        for _ in range(6)
    ]
    who = f.customer(client)
    answers = [hold(client, who["token"], event_id, seats=4).status_code for event_id in events]

    assert answers == [201] * 5 + [409]
    problem = f.assert_problem(
        hold(client, who["token"], events[5], seats=1), 409, "hold_limit_reached"
    )
    assert (problem["max_held_seats"], problem["held_seats"]) == (20, 20)
    assert f.count_rows("holds", customer_id=who["user"]["id"], status="held") == 5
    # Another customer is not affected; a released hold makes room again.
    assert hold(client, f.customer(client)["token"], events[5], seats=4).status_code == 201
    first = client.get(f"{API}/holds", headers=f.auth(who["token"])).get_json()[0]
    assert (
        client.delete(f"{API}/holds/{first['id']}", headers=f.auth(who["token"])).status_code == 204
    )
    assert hold(client, who["token"], first["event_id"], seats=4).status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/events/{id}/waitlist", {"seats": 1}),
        ("POST", "/events/{id}/holds", {"seats": 1}),
        ("POST", "/bookings", {"event_id": "{id}", "seats": 1}),
    ],
)
def test_an_event_that_does_not_exist_is_a_404_before_any_lock_or_redis_write(
    client: FlaskClient, redis_conn: redis.Redis, method: str, path: str, body: dict[str, Any]
) -> None:
    invented = 987_654_321
    token = f.customer(client)["token"]
    keys_before = set(redis_conn.keys("*"))
    payload = {k: invented if v == "{id}" else v for k, v in body.items()}

    response = client.open(
        f"{API}{path.format(id=invented)}", method=method, json=payload, headers=f.auth(token)
    )

    f.assert_problem(response, 404, "event_not_found")
    new_keys = {key.decode() for key in set(redis_conn.keys("*")) - keys_before}
    assert not [key for key in new_keys if str(invented) in key], new_keys


def _journal(event_id: int) -> list[tuple[str, str | None]]:
    with db.single_statement() as connection:
        return [
            (row.kind, row.outcome.get("error"))
            for row in connection.execute(
                text(
                    "SELECT kind, outcome FROM seat_intents WHERE event_id = :e ORDER BY created_at"
                ),
                {"e": event_id},
            )
        ]


def test_queued_changes_are_journaled_and_unqueued_ones_need_not_be(client: FlaskClient) -> None:
    shown = event(client, capacity=3)
    first, second = f.customer(client)["user"]["id"], f.customer(client)["user"]["id"]
    queued = ledger.intent("book", customer_id=first, seats=1)
    unqueued = {**ledger.intent("book", customer_id=second, seats=1), "unqueued": True}
    with db.single_write() as connection:
        outcomes, _ = ledger.apply(connection, shown["id"], [queued, unqueued])

    assert all("booking" in outcome for outcome in outcomes)
    # A queued intent may be asked for (a waiter whose holder died) or replayed (a holder
    # that lost its lease): journaled. One its own submitter applied unqueued cannot be.
    assert _journal(shown["id"]) == [("book", None)]
    assert ledger.applied_outcome(queued["id"]) == outcomes[0]
    # Through the API, uncontended: applied by its own request, unqueued.
    assert book(client, f.customer(client)["token"], shown["id"]).status_code == 201
    assert _journal(shown["id"]) == [("book", None)]


def test_a_replayed_intent_answers_its_first_outcome_and_changes_nothing(
    client: FlaskClient,
) -> None:
    shown = event(client, capacity=5)
    who = f.customer(client)["user"]["id"]
    intent = ledger.intent("book", customer_id=who, seats=2)
    with db.single_write() as connection:
        [first], _ = ledger.apply(connection, shown["id"], [intent])
    with db.single_write() as connection:  # a holder whose lease ran out, replaying its batch
        [again], _ = ledger.apply(connection, shown["id"], [intent])

    assert again == first and first["booking"]["seats"] == 2
    assert f.count_rows("bookings", event_id=shown["id"]) == 1
    assert client.get(f"{API}/events/{shown['id']}").get_json()["available_slots"] == 3
    assert ledger.applied_outcome(intent["id"]) == first
    assert ledger.applied_outcome("never-applied") is None


def test_purge_seat_intents_deletes_journal_rows_past_their_retention(
    client: FlaskClient, app: Flask
) -> None:
    shown = event(client, capacity=10)
    intents = [
        ledger.intent("book", customer_id=f.customer(client)["user"]["id"], seats=1)
        for _ in range(3)
    ]
    with db.single_write() as connection:  # as a holder applies queued intents
        ledger.apply(connection, shown["id"], intents)
    with db.transaction() as session:  # two of them were applied two days ago
        session.execute(
            text(
                "UPDATE seat_intents SET created_at = now() - interval '48 hours' WHERE id IN "
                "(SELECT id FROM seat_intents ORDER BY created_at LIMIT 2)"
            )
        )

    with app.app_context():  # as the flask command runs it
        result = app.test_cli_runner().invoke(args=["purge-seat-intents", "--batch-size", "1"])

    assert result.exit_code == 0, result.output
    assert "deleted 2 seat intent journal row(s)" in result.output
    assert f.count_rows("seat_intents") == 1
