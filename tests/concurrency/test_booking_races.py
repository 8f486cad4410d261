"""Races over two gunicorn instances: the rows must never show an overbooking or a double booking.

Every request goes over real HTTP from its own OS process; the checks are on the database rows
afterwards (and, for the long runs, on snapshots sampled while the race is on).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from harness.load import Client, Outcome, RequestSpec, SqlSampler, fire, run_clients
from tests import factories
from tests.conftest import TEST_DATABASE_URL
from tests.factories import auth
from tests.support.instances import (
    API,
    SNAPSHOT_SQL,
    Cluster,
    booking_history_count,
    bookings_of,
    event_snapshot,
)

pytestmark = pytest.mark.slow

CHURN_SECONDS = 5.0
CAPACITY_RACE_SECONDS = 4.0
SAMPLE_INTERVAL = 0.05


def _book_spec(base_url: str, token: str, event_id: int, tag: str = "") -> RequestSpec:
    return RequestSpec(
        "POST",
        f"{base_url}{API}/bookings",
        headers=auth(token),
        json={"event_id": event_id},
        tag=tag,
    )


def _assert_consistent(snapshot: dict[str, Any], where: str) -> None:
    assert snapshot["booked_count"] <= snapshot["capacity"], f"overbooked {where}: {snapshot}"
    assert snapshot["booked_count"] == snapshot["active_rows"], f"counter drift {where}: {snapshot}"
    assert snapshot["duplicate_active"] == 0, f"double booking {where}: {snapshot}"


def _check_samples(samples: list[dict[str, Any]]) -> None:
    for n, sample in enumerate(samples):
        _assert_consistent(sample, f"in sample {n}")


def test_sixty_customers_race_for_ten_seats(cluster: Cluster, lock_redis: Any, client: FlaskClient):
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=10)
    customers = [factories.customer(client) for _ in range(60)]

    result = fire(
        [
            _book_spec(cluster.url(n), c["token"], event["id"], tag=str(c["user"]["id"]))
            for n, c in enumerate(customers)
        ],
        connect_path="/livez",
    )
    sent = [o.at for o in result.outcomes]
    print(f"\n[a] {result.summary()}; sends spread over {max(sent) - min(sent):.3f}s")

    assert result.answers() == Counter({(201, None): 10, (409, "event_full"): 50}), result.summary()
    snapshot = event_snapshot(event["id"])
    assert snapshot == {
        "capacity": 10,
        "booked_count": 10,
        "active_rows": 10,
        "booking_rows": 10,
        "duplicate_active": 0,
        "booked_seats": 10,
        "held_count": 0,
        "held_seats": 0,
        "waitlist_length": 0,
    }
    winners = {int(o.tag) for o in result.select(status=201)}
    assert {row["customer_id"] for row in bookings_of(event_id=event["id"])} == winners
    assert booking_history_count(event_id=event["id"]) == 10


def test_double_submit_books_once(cluster: Cluster, lock_redis: Any, client: FlaskClient):
    organizer = factories.organizer(client)
    # Capacity 3: a second seat is free, so only the one-active-booking rule can refuse.
    event = factories.create_event(client, organizer["token"], capacity=3)
    customer = factories.customer(client)

    result = fire(
        [_book_spec(cluster.url(n), customer["token"], event["id"]) for n in range(10)],
        connect_path="/livez",
    )
    print(f"\n[b] {result.summary()}")

    assert result.answers() == Counter({(201, None): 1, (409, "already_booked"): 9}), (
        result.summary()
    )
    snapshot = event_snapshot(event["id"])
    assert snapshot["booked_count"] == 1
    assert snapshot["active_rows"] == snapshot["booking_rows"] == 1
    assert booking_history_count(user_id=customer["user"]["id"]) == 1


# --- churn: book / cancel / reactivate on a nearly full event --------------------------------

CHURN_OK = {
    ("book", 201, None),
    ("cancel", 200, None),
    ("reactivate", 200, None),
}
CHURN_REFUSED = {"event_full", "already_booked"}


def _churn(client: Client) -> dict[int, str]:
    """One customer, sequentially: book, cancel, reactivate at random, alternating instances.

    The customer knows its own bookings exactly (it is their only writer), so every answer is
    predictable except event_full / already_booked; returns the final state it believes in.
    """
    p = client.params
    rng = random.Random(p["seed"])
    headers = auth(p["token"])
    mine: dict[int, str] = {}
    n = 0
    while client.since_start() < p["seconds"]:
        base = f"{p['urls'][n % len(p['urls'])]}{API}/bookings"
        n += 1
        active = [b for b, status in mine.items() if status == "active"]
        cancelled = [b for b, status in mine.items() if status == "cancelled"]
        roll = rng.random()
        if active and roll < 0.6:
            booking_id = active[0]
            response = client.request(
                "POST", f"{base}/{booking_id}/cancel", tag="cancel", headers=headers
            )
            if response is not None and response.status_code == 200:
                mine[booking_id] = "cancelled"
        elif cancelled and roll < 0.8:
            # With an active booking this must be refused (already_booked or event_full).
            booking_id = rng.choice(cancelled)
            response = client.request(
                "POST", f"{base}/{booking_id}/reactivate", tag="reactivate", headers=headers
            )
            if response is not None and response.status_code == 200:
                mine[booking_id] = "active"
        else:
            response = client.request(
                "POST", base, tag="book", headers=headers, json={"event_id": p["event_id"]}
            )
            if response is not None and response.status_code == 201:
                mine[response.json()["id"]] = "active"
    return mine


def _churners(
    cluster: Cluster, customers: list[dict[str, Any]], event_id: int, seconds: float
) -> list[dict[str, Any]]:
    return [
        {
            "token": c["token"],
            "event_id": event_id,
            # Each customer starts on a different instance and alternates from there.
            "urls": cluster.urls[n % 2 :] + cluster.urls[: n % 2],
            "seconds": seconds,
            "seed": n,
        }
        for n, c in enumerate(customers)
    ]


def _assert_churn_answers(outcomes: list[Outcome]) -> None:
    unexpected = [
        o
        for o in outcomes
        if (o.tag, o.status, o.code) not in CHURN_OK
        and not (o.status == 409 and o.code in CHURN_REFUSED)
    ]
    assert not unexpected, (
        f"unexpected answers: {Counter((o.tag, o.status, o.code) for o in unexpected)}"
    )


def _assert_clients_match_rows(
    customers: list[dict[str, Any]], beliefs: list[dict[int, str]], event_id: int
) -> None:
    """What each customer was told is exactly what the database holds."""
    rows = bookings_of(event_id=event_id)
    for customer, belief in zip(customers, beliefs, strict=True):
        held = {
            row["id"]: row["status"] for row in rows if row["customer_id"] == customer["user"]["id"]
        }
        assert held == belief, (
            f"customer {customer['user']['id']}: rows {held}, answers said {belief}"
        )


def test_churn_keeps_counter_and_rows_in_step(
    cluster: Cluster, lock_redis: Any, client: FlaskClient
):
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=5)
    customers = [factories.customer(client) for _ in range(15)]

    with SqlSampler(
        TEST_DATABASE_URL, SNAPSHOT_SQL, {"event_id": event["id"]}, interval=SAMPLE_INTERVAL
    ) as sampler:
        result = run_clients(_churn, _churners(cluster, customers, event["id"], CHURN_SECONDS))
    final = event_snapshot(event["id"])
    booked = Counter(s["booked_count"] for s in sampler.samples)
    by_kind = Counter((o.tag, o.status, o.code) for o in result.outcomes)
    print(
        f"\n[c] {result.summary()}\n[c] {len(sampler.samples)} samples, booked_count seen "
        f"{dict(sorted(booked.items()))}; by kind {dict(by_kind)}; final {final}"
    )

    assert not [o for o in result.outcomes if o.status >= 500 or o.status == 0], cluster.logs()
    _assert_churn_answers(result.outcomes)
    assert len(sampler.samples) >= 20, "the sampler hardly ran"
    _check_samples(sampler.samples)
    _assert_consistent(final, "at the end")
    _assert_clients_match_rows(customers, result.returns, event["id"])
    # The race really happened: the event was full while people kept trying, and every kind of
    # change went through many times.
    assert booked[5] > 0, "the event was never sampled full"
    assert by_kind[("book", 409, "event_full")] + by_kind[("reactivate", 409, "event_full")] > 0
    for kind in CHURN_OK:
        assert by_kind[kind] >= 5, f"too few {kind}: {by_kind}"


# --- capacity edits racing with bookings ------------------------------------------------------

CAPACITIES = (2, 3, 4, 5, 6, 7, 8)


def _organizer(client: Client) -> dict[str, Any]:
    """Move the capacity around; after each refusal read the event back.

    The organizer is the only writer of capacity, so a refused edit must leave exactly the
    capacity of the last accepted one.
    """
    p = client.params
    rng = random.Random(p["seed"])
    headers = auth(p["token"])
    current = p["capacity"]
    accepted: list[int] = []
    refused: list[dict[str, int]] = []
    n = 0
    while client.since_start() < p["seconds"]:
        url = f"{p['urls'][n % len(p['urls'])]}{API}/events/{p['event_id']}"
        n += 1
        # Alternate down and up, so that both refusals and accepted decreases happen.
        down = [c for c in CAPACITIES if c < current]
        up = [c for c in CAPACITIES if c > current]
        wanted = rng.choice(down if (n % 2 and down) or not up else up)
        response = client.request(
            "PATCH", url, tag="patch", headers=headers, json={"capacity": wanted}
        )
        if response is None:
            continue
        if response.status_code == 200:
            assert response.json()["capacity"] == wanted, response.json()
            current = wanted
            accepted.append(wanted)
        elif response.status_code == 409:
            check = client.request("GET", url, tag="read-back")
            assert check is not None and check.status_code == 200
            refused.append(
                {"wanted": wanted, "expected": current, "seen": check.json()["capacity"]}
            )
    return {"accepted": accepted, "refused": refused}


def _capacity_history(event_id: int) -> list[tuple[int, int]]:
    with db.transaction() as session:
        rows = session.execute(
            text(
                "SELECT details FROM history_entries WHERE entity_type = 'event' "
                "AND action = 'update' AND entity_id = :id ORDER BY id"
            ),
            {"id": event_id},
        ).scalars()
        return [(d["before"]["capacity"], d["after"]["capacity"]) for d in rows]


def test_capacity_edits_race_with_bookings(cluster: Cluster, lock_redis: Any, client: FlaskClient):
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=6)
    customers = [factories.customer(client) for _ in range(12)]
    params: list[Any] = [
        {
            "token": organizer["token"],
            "event_id": event["id"],
            "urls": cluster.urls,
            "seconds": CAPACITY_RACE_SECONDS,
            "seed": 99,
            "capacity": 6,
        }
    ]
    params += _churners(cluster, customers, event["id"], CAPACITY_RACE_SECONDS)

    def worker(client: Client) -> Any:
        return _organizer(client) if client.index == 0 else _churn(client)

    with SqlSampler(
        TEST_DATABASE_URL, SNAPSHOT_SQL, {"event_id": event["id"]}, interval=SAMPLE_INTERVAL
    ) as sampler:
        result = run_clients(worker, params)
    final = event_snapshot(event["id"])
    edits = result.returns[0]
    patches = result.answers("patch")
    print(
        f"\n[d] {result.summary()}\n[d] {len(sampler.samples)} samples; patches {dict(patches)}; "
        f"capacities accepted {edits['accepted']}; final {final}"
    )

    assert not [o for o in result.outcomes if o.status >= 500 or o.status == 0], cluster.logs()
    assert set(patches) <= {(200, None), (409, "capacity_below_bookings")}, patches
    customer_outcomes = [o for o in result.outcomes if o.worker != 0]
    _assert_churn_answers(customer_outcomes)
    assert len(sampler.samples) >= 20, "the sampler hardly ran"
    _check_samples(sampler.samples)
    _assert_consistent(final, "at the end")
    _assert_clients_match_rows(customers, result.returns[1:], event["id"])

    # A refused edit changed nothing: read back right after, and in the audit trail, where the
    # accepted edits form an unbroken chain (before of each = after of the previous).
    for refusal in edits["refused"]:
        assert refusal["seen"] == refusal["expected"], refusal
    chain = _capacity_history(event["id"])
    assert [after for _, after in chain] == edits["accepted"]
    assert [before for before, _ in chain] == [6, *edits["accepted"][:-1]]
    assert final["capacity"] == (edits["accepted"] or [6])[-1]
    # Both outcomes really happened, including decreases accepted in the middle of the race.
    assert patches[(409, "capacity_below_bookings")] > 0, patches
    assert any(after < before for before, after in chain), chain
