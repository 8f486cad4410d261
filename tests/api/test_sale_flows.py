"""Sale flows through the API: several seats per booking, holds, the waitlist.

Real PostgreSQL and Redis; the in-process app runs no sweeper, so expiry is driven here by
moving a hold's expiry into the past and calling the sweeper's step (holds.expire_lapsed) or a
flow that reclaims lapsed holds itself.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis_lock
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.locking import lock_name
from booking_service.services import holds, invariants
from booking_service.services.ledger_sql import MAX_PASSES
from tests import factories as f

API = f.API


def event(client: FlaskClient, capacity: int, **fields: Any) -> dict[str, Any]:
    return f.create_event(client, f.organizer(client)["token"], capacity=capacity, **fields)


def book(client: FlaskClient, token: str, event_id: int, seats: int = 1) -> Any:
    return client.post(
        f"{API}/bookings", json={"event_id": event_id, "seats": seats}, headers=f.auth(token)
    )


def hold(client: FlaskClient, token: str, event_id: int, seats: int = 1) -> Any:
    return client.post(
        f"{API}/events/{event_id}/holds", json={"seats": seats}, headers=f.auth(token)
    )


def join(client: FlaskClient, token: str, event_id: int, seats: int = 1) -> Any:
    return client.post(
        f"{API}/events/{event_id}/waitlist", json={"seats": seats}, headers=f.auth(token)
    )


def seen(client: FlaskClient, event_id: int) -> dict[str, Any]:
    return client.get(f"{API}/events/{event_id}").get_json()


def lapse(hold_id: int) -> None:
    """Move a hold's expiry into the past, as time would."""
    with db.transaction() as session:
        session.execute(
            text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": hold_id},
        )


def customers(client: FlaskClient, n: int) -> list[str]:
    return [f.customer(client)["token"] for _ in range(n)]


@pytest.fixture(autouse=True)
def no_drift_afterwards() -> Any:
    yield
    assert invariants.find_drift() == []


# --- several seats -----------------------------------------------------------------------------


def test_a_booking_takes_several_seats_all_or_none(client: FlaskClient) -> None:
    sold = event(client, capacity=5)
    first, second = customers(client, 2)
    booked = book(client, first, sold["id"], seats=3)
    assert booked.status_code == 201 and booked.get_json()["seats"] == 3
    problem = f.assert_problem(book(client, second, sold["id"], seats=3), 409, "event_full")
    assert problem["available_slots"] == 2
    assert seen(client, sold["id"])["booked_count"] == 3
    assert book(client, second, sold["id"], seats=2).status_code == 201
    assert seen(client, sold["id"])["available_slots"] == 0


def test_more_seats_than_the_event_allows_per_booking(client: FlaskClient) -> None:
    small = event(client, capacity=50, max_seats_per_booking=2)
    (token,) = customers(client, 1)
    problem = f.assert_problem(book(client, token, small["id"], seats=3), 422, "too_many_seats")
    assert problem["max_seats_per_booking"] == 2
    assert seen(client, small["id"])["max_seats_per_booking"] == 2


def test_seats_of_a_booking_go_down_at_once_and_up_like_a_booking(client: FlaskClient) -> None:
    sold = event(client, capacity=4)
    first, second = customers(client, 2)
    booking = book(client, first, sold["id"], seats=3).get_json()
    url = f"{API}/bookings/{booking['id']}"
    fewer = client.patch(url, json={"seats": 1}, headers=f.auth(first))
    assert fewer.status_code == 200 and fewer.get_json()["seats"] == 1
    assert seen(client, sold["id"])["available_slots"] == 3
    assert book(client, second, sold["id"], seats=2).status_code == 201
    problem = f.assert_problem(
        client.patch(url, json={"seats": 3}, headers=f.auth(first)), 409, "event_full"
    )
    assert problem["available_slots"] == 1
    assert client.patch(url, json={"seats": 2}, headers=f.auth(first)).get_json()["seats"] == 2
    assert seen(client, sold["id"])["booked_count"] == 4
    actions = [e["action"] for e in f.history(client, first, entity_type="booking")]
    assert actions.count("seats") == 2


def test_one_active_booking_per_customer_and_event(client: FlaskClient) -> None:
    open_event = event(client, capacity=10)
    (token,) = customers(client, 1)
    assert book(client, token, open_event["id"], seats=2).status_code == 201
    f.assert_problem(book(client, token, open_event["id"]), 409, "already_booked")


# --- holds -------------------------------------------------------------------------------------


def test_a_hold_counts_at_once_and_confirms_into_a_booking(client: FlaskClient) -> None:
    sold = event(client, capacity=3)
    (token,) = customers(client, 1)
    made = hold(client, token, sold["id"], seats=2)
    assert made.status_code == 201
    held = made.get_json()
    assert held["status"] == "held" and held["seats"] == 2 and made.headers["Location"]
    assert seen(client, sold["id"])["held_count"] == 2
    assert seen(client, sold["id"])["available_slots"] == 1
    confirmed = client.post(f"{API}/holds/{held['id']}/confirm", headers=f.auth(token))
    assert confirmed.status_code == 201, confirmed.get_json()
    assert confirmed.get_json()["seats"] == 2
    assert confirmed.headers["Location"].endswith(f"/bookings/{confirmed.get_json()['id']}")
    after = seen(client, sold["id"])
    assert (after["booked_count"], after["held_count"]) == (2, 0)
    again = client.post(f"{API}/holds/{held['id']}/confirm", headers=f.auth(token))
    f.assert_problem(again, 409, "hold_not_held")


def test_confirming_adds_to_the_active_booking_within_the_limit(client: FlaskClient) -> None:
    sold = event(client, capacity=20, max_seats_per_booking=4)
    (token,) = customers(client, 1)
    booking = book(client, token, sold["id"], seats=2).get_json()
    held = hold(client, token, sold["id"], seats=2).get_json()
    confirmed = client.post(f"{API}/holds/{held['id']}/confirm", headers=f.auth(token))
    assert confirmed.get_json()["id"] == booking["id"]
    assert confirmed.get_json()["seats"] == 4
    f.assert_problem(hold(client, token, sold["id"], seats=1), 422, "too_many_seats")


def test_one_live_hold_per_customer_and_event(client: FlaskClient) -> None:
    roomy = event(client, capacity=10)
    (token,) = customers(client, 1)
    assert hold(client, token, roomy["id"]).status_code == 201
    f.assert_problem(hold(client, token, roomy["id"]), 409, "hold_exists")


def test_a_released_hold_gives_its_seats_back_once(client: FlaskClient) -> None:
    sold = event(client, capacity=2)
    (token,) = customers(client, 1)
    held = hold(client, token, sold["id"], seats=2).get_json()
    url = f"{API}/holds/{held['id']}"
    assert client.delete(url, headers=f.auth(token)).status_code == 204
    assert seen(client, sold["id"])["available_slots"] == 2
    f.assert_problem(client.delete(url, headers=f.auth(token)), 409, "hold_not_held")
    assert client.get(url, headers=f.auth(token)).get_json()["status"] == "released"


def test_an_expired_hold_shows_as_free_at_once_and_comes_back_exactly_once(
    client: FlaskClient,
) -> None:
    sold = event(client, capacity=2)
    first, second = customers(client, 2)
    held = hold(client, first, sold["id"], seats=2).get_json()
    lapse(held["id"])
    # No sweep has run: reads leave the lapsed hold out all the same.
    shown = seen(client, sold["id"])
    assert (shown["held_count"], shown["available_slots"]) == (0, 2)
    # The next booking reclaims it under the lock, then takes the seats.
    assert book(client, second, sold["id"], seats=2).status_code == 201
    late = client.post(f"{API}/holds/{held['id']}/confirm", headers=f.auth(first))
    f.assert_problem(late, 409, "hold_expired")
    assert holds.expire_lapsed(event_id=sold["id"]) == 0  # nothing left to expire
    after = seen(client, sold["id"])
    assert (after["booked_count"], after["held_count"]) == (2, 0)
    actions = [e["action"] for e in f.history(client, first, entity_type="hold")]
    assert actions.count("expire") == 1


def test_a_hold_on_a_sold_out_event_is_refused_without_waiting_for_the_lock(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    sold = event(client, capacity=1)
    first, second = customers(client, 2)
    assert book(client, first, sold["id"]).status_code == 201
    # The event's lock is busy (a long batch, a queue of confirms): a refusal needs no lock.
    busy = redis_lock.Lock(redis_conn, lock_name(sold["id"]), expire=30)
    assert busy.acquire(blocking=False)
    try:
        problem = f.assert_problem(hold(client, second, sold["id"]), 409, "event_full")
    finally:
        busy.release()
    assert problem["available_slots"] == 0
    assert f.count_rows("holds", event_id=sold["id"]) == 0


def test_confirming_a_lapsed_hold_expires_it_and_says_so(client: FlaskClient) -> None:
    sold = event(client, capacity=2)
    (token,) = customers(client, 1)
    held = hold(client, token, sold["id"]).get_json()
    lapse(held["id"])
    f.assert_problem(
        client.post(f"{API}/holds/{held['id']}/confirm", headers=f.auth(token)),
        409,
        "hold_expired",
    )
    assert (
        client.get(f"{API}/holds/{held['id']}", headers=f.auth(token)).get_json()["status"]
        == "expired"
    )


def test_holds_are_their_customers_own(client: FlaskClient) -> None:
    roomy = event(client, capacity=10)
    owner, stranger = customers(client, 2)
    held = hold(client, owner, roomy["id"]).get_json()
    assert [h["id"] for h in client.get(f"{API}/holds", headers=f.auth(owner)).get_json()] == [
        held["id"]
    ]
    assert client.get(f"{API}/holds", headers=f.auth(stranger)).get_json() == []
    for method, path in (
        ("GET", f"/holds/{held['id']}"),
        ("DELETE", f"/holds/{held['id']}"),
        ("POST", f"/holds/{held['id']}/confirm"),
    ):
        answer = client.open(f"{API}{path}", method=method, headers=f.auth(stranger))
        f.assert_problem(answer, 404, "hold_not_found")


# --- the waitlist -----------------------------------------------------------------------------


def sold_out(client: FlaskClient, capacity: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An event whose seats are all booked, one seat per booking; the bookings' owners."""
    full = event(client, capacity=capacity)
    owners = []
    for _ in range(capacity):
        owner = f.customer(client)
        owners.append(
            {"token": owner["token"], **book(client, owner["token"], full["id"]).get_json()}
        )
    return full, owners


def cancel(client: FlaskClient, owner: dict[str, Any]) -> None:
    answer = client.post(f"{API}/bookings/{owner['id']}/cancel", headers=f.auth(owner["token"]))
    assert answer.status_code == 200


def entry(client: FlaskClient, token: str, entry_id: int) -> dict[str, Any]:
    return client.get(f"{API}/waitlist/{entry_id}", headers=f.auth(token)).get_json()


def test_joining_while_seats_are_free_is_refused(client: FlaskClient) -> None:
    roomy = event(client, capacity=3)
    (token,) = customers(client, 1)
    problem = f.assert_problem(join(client, token, roomy["id"], seats=2), 409, "seats_available")
    assert problem["available_slots"] == 3


def test_freed_seats_go_to_the_waitlist_in_order_not_to_newcomers(client: FlaskClient) -> None:
    full, owners = sold_out(client, 2)
    first, second, newcomer = customers(client, 3)
    joined = [join(client, token, full["id"]).get_json() for token in (first, second)]
    assert [e["position"] for e in joined] == [1, 2]
    assert seen(client, full["id"])["waitlist_length"] == 2

    cancel(client, owners[0])
    offered = entry(client, first, joined[0]["id"])
    assert offered["status"] == "offered" and offered["offer"]["hold_id"]
    assert entry(client, second, joined[1]["id"])["status"] == "waiting"
    # The seat is the waitlist's: a newcomer is refused while anyone waits.
    problem = f.assert_problem(book(client, newcomer, full["id"]), 409, "event_full")
    assert problem["available_slots"] == 0
    f.assert_problem(hold(client, newcomer, full["id"]), 409, "event_full")

    confirmed = client.post(
        f"{API}/holds/{offered['offer']['hold_id']}/confirm", headers=f.auth(first)
    )
    assert confirmed.status_code == 201
    assert entry(client, first, joined[0]["id"])["status"] == "converted"
    kinds = [e["action"] for e in f.history(client, first)]
    assert {"join", "offer", "confirm"} <= set(kinds)


def test_a_declined_or_expired_offer_passes_the_seats_on(client: FlaskClient) -> None:
    full, owners = sold_out(client, 1)
    first, second, third = customers(client, 3)
    joined = [join(client, token, full["id"]).get_json() for token in (first, second, third)]
    cancel(client, owners[0])
    offer = entry(client, first, joined[0]["id"])["offer"]
    # Declined: the next entry gets it.
    assert (
        client.delete(f"{API}/holds/{offer['hold_id']}", headers=f.auth(first)).status_code == 204
    )
    assert entry(client, first, joined[0]["id"])["status"] == "left"
    second_offer = entry(client, second, joined[1]["id"])["offer"]
    assert second_offer is not None
    # Expired: the one after.
    lapse(second_offer["hold_id"])
    assert holds.expire_lapsed(event_id=full["id"]) == 1
    assert entry(client, second, joined[1]["id"])["status"] == "expired"
    assert entry(client, third, joined[2]["id"])["offer"] is not None
    assert seen(client, full["id"])["held_count"] == 1


def test_first_fit_with_a_bound_on_passing_an_entry_over(client: FlaskClient) -> None:
    full, owners = sold_out(client, 2 + MAX_PASSES + 1)
    big, *small = customers(client, MAX_PASSES + 2)
    big_entry = join(client, big, full["id"], seats=2).get_json()
    small_entries = [join(client, token, full["id"]).get_json() for token in small]
    # Seats come free one at a time: the 2-seat entry does not fit, the 1-seat ones behind it
    # are served, each passing it over, until it has been passed over MAX_PASSES times.
    for n in range(MAX_PASSES):
        cancel(client, owners[n])
        assert entry(client, small[n], small_entries[n]["id"])["status"] == "offered"
    cancel(client, owners[MAX_PASSES])
    # The next free seat waits for the big entry, though a small one would fit.
    assert entry(client, small[MAX_PASSES], small_entries[MAX_PASSES]["id"])["status"] == "waiting"
    assert entry(client, big, big_entry["id"])["status"] == "waiting"
    cancel(client, owners[MAX_PASSES + 1])
    assert entry(client, big, big_entry["id"])["status"] == "offered"


def test_leaving_the_waitlist_and_its_offer(client: FlaskClient) -> None:
    full, owners = sold_out(client, 1)
    first, second = customers(client, 2)
    joined = [join(client, token, full["id"]).get_json() for token in (first, second)]
    cancel(client, owners[0])
    assert (
        client.delete(f"{API}/waitlist/{joined[0]['id']}", headers=f.auth(first)).status_code == 204
    )
    assert entry(client, second, joined[1]["id"])["status"] == "offered"
    f.assert_problem(join(client, second, full["id"]), 409, "already_waiting")


def test_more_capacity_goes_to_the_waitlist(client: FlaskClient) -> None:
    full, _ = sold_out(client, 1)
    (waiting,) = customers(client, 1)
    joined = join(client, waiting, full["id"], seats=2).get_json()
    organizer_token = None
    with db.read_transaction() as session:
        organizer_id = session.scalar(
            text("SELECT organizer_id FROM events WHERE id = :id"), {"id": full["id"]}
        )
    organizer_token = _token_of(client, organizer_id)
    raised = client.patch(
        f"{API}/events/{full['id']}", json={"capacity": 3}, headers=f.auth(organizer_token)
    )
    assert raised.status_code == 200
    assert entry(client, waiting, joined["id"])["status"] == "offered"
    assert seen(client, full["id"])["held_count"] == 2


def test_the_organizer_sees_the_waitlist_others_do_not(client: FlaskClient) -> None:
    organizer = f.organizer(client)
    full = f.create_event(client, organizer["token"], capacity=1)
    owner = f.customer(client)
    assert book(client, owner["token"], full["id"]).status_code == 201
    (waiting,) = customers(client, 1)
    join(client, waiting, full["id"])
    listed = client.get(f"{API}/events/{full['id']}/waitlist", headers=f.auth(organizer["token"]))
    assert [e["position"] for e in listed.get_json()] == [1]
    other = f.organizer(client)
    f.assert_problem(
        client.get(f"{API}/events/{full['id']}/waitlist", headers=f.auth(other["token"])),
        403,
        "forbidden",
    )


def _token_of(client: FlaskClient, user_id: int) -> str:
    """Sign an existing user in (their factory password) and return the token."""
    with db.read_transaction() as session:
        username = session.scalar(
            text("SELECT username FROM users WHERE id = :id"), {"id": user_id}
        )
    answer = client.post(f"{API}/auth/login", json={"username": username, "password": f.PASSWORD})
    return answer.get_json()["token"]
