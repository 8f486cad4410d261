"""The waiting room through the API: settings, join, poll, leave, the gate, pacing, sold out.

Real PostgreSQL and Redis. The in-process app runs no pacer thread: each test runs the
pacer's rounds itself, and moves time by rewriting Redis state where an admission must lapse.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from booking_service.locking import LockStats
from booking_service.ops.scrape_gauges import ScrapeState, ScrapeTimeCollector, hot_queues
from booking_service.services import waitroom
from booking_service.services.pacer import Controller, pacer
from tests import factories as f

API = f.API


@pytest.fixture(autouse=True)
def brief_fresh_admissions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Seats count as about to be taken for 0.2 s after an admission, not 5: tests move fast.
    monkeypatch.setattr(pacer, "fresh_seconds", 0.2)


def queue_event(client: FlaskClient, org: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"waiting_room": True, "admit_per_minute": 600, "capacity": 10, **fields}
    return f.create_event(client, org["token"], **body)


def join(client: FlaskClient, token: str, event_id: int) -> Any:
    return client.post(f"{API}/events/{event_id}/queue", headers=f.auth(token))


def poll(client: FlaskClient, token: str, event_id: int) -> Any:
    return client.get(f"{API}/events/{event_id}/queue", headers=f.auth(token))


def hold(client: FlaskClient, token: str, event_id: int, seats: int = 1) -> Any:
    return client.post(
        f"{API}/events/{event_id}/holds", json={"seats": seats}, headers=f.auth(token)
    )


def book(client: FlaskClient, token: str, event_id: int, seats: int = 1) -> Any:
    return client.post(
        f"{API}/bookings", json={"event_id": event_id, "seats": seats}, headers=f.auth(token)
    )


def pace_until_admitted(client: FlaskClient, token: str, event_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pacer.pace_once()
        entry = poll(client, token, event_id).get_json()
        if entry["state"] == "admitted":
            return entry
        time.sleep(0.05)
    raise AssertionError(f"not admitted: {entry}")


def test_settings_are_created_shown_and_changed(client: FlaskClient, org: dict[str, Any]):
    starts = f.in_hours(2)
    event = queue_event(client, org, sale_starts_at=f.iso(starts), admission_minutes=5)
    assert event["waiting_room"] is True
    assert event["admit_per_minute"] == 600
    assert event["admission_minutes"] == 5
    assert datetime.fromisoformat(event["sale_starts_at"]) == starts.replace(microsecond=0) or (
        abs(datetime.fromisoformat(event["sale_starts_at"]) - starts) < timedelta(seconds=1)
    )
    changed = client.patch(
        f"{API}/events/{event['id']}",
        json={"admit_per_minute": None, "waiting_room": False},
        headers=f.auth(org["token"]),
    )
    assert changed.status_code == 200
    assert changed.get_json()["admit_per_minute"] is None
    assert changed.get_json()["waiting_room"] is False
    plain = f.create_event(client, org["token"])
    assert plain["waiting_room"] is False and plain["admission_minutes"] == 10
    assert plain["sale_starts_at"] is None and plain["admit_per_minute"] is None
    late = client.patch(
        f"{API}/events/{event['id']}",
        json={"sale_starts_at": event["start_time"]},
        headers=f.auth(org["token"]),
    )
    f.assert_problem(late, 422, "validation_error")


def test_sale_not_started_refuses_holds_and_bookings(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event = f.create_event(client, org["token"], sale_starts_at=f.iso(f.in_hours(1)))
    f.assert_problem(hold(client, cust["token"], event["id"]), 409, "sale_not_started")
    problem = f.assert_problem(book(client, cust["token"], event["id"]), 409, "sale_not_started")
    assert problem["sale_starts_at"]
    # Moved into the past: on sale at once, through every worker (the change counter).
    soon = datetime.now(UTC) - timedelta(seconds=1)
    moved = client.patch(
        f"{API}/events/{event['id']}",
        json={"sale_starts_at": f.iso(soon)},
        headers=f.auth(org["token"]),
    )
    assert moved.status_code == 200
    assert book(client, cust["token"], event["id"]).status_code == 201


def test_join_poll_admit_hold_confirm(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    event = queue_event(client, org)
    first = join(client, cust["token"], event["id"])
    assert first.status_code == 201
    assert first.get_json()["state"] == "waiting"
    assert first.get_json()["position"] == 1
    assert int(first.headers["Retry-After"]) >= 1
    again = join(client, cust["token"], event["id"])
    assert again.status_code == 200
    assert again.get_json()["position"] == 1
    f.assert_problem(hold(client, cust["token"], event["id"]), 409, "queue_required")
    entry = pace_until_admitted(client, cust["token"], event["id"])
    assert entry["admitted_until"] and entry["position"] is None
    held = hold(client, cust["token"], event["id"])
    assert held.status_code == 201, held.get_json()
    confirmed = client.post(
        f"{API}/holds/{held.get_json()['id']}/confirm", headers=f.auth(cust["token"])
    )
    assert confirmed.status_code == 201


def test_queue_needs_a_waiting_room_and_an_entry(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any]
):
    plain = f.create_event(client, org["token"])
    f.assert_problem(join(client, cust["token"], plain["id"]), 409, "no_waiting_room")
    f.assert_problem(join(client, cust["token"], 10**9), 404, "event_not_found")
    event = queue_event(client, org)
    f.assert_problem(poll(client, cust["token"], event["id"]), 404, "queue_entry_not_found")
    left = client.delete(f"{API}/events/{event['id']}/queue", headers=f.auth(cust["token"]))
    f.assert_problem(left, 404, "queue_entry_not_found")


def test_another_customers_admission_and_a_lapsed_one_do_not_let_in(
    client: FlaskClient,
    org: dict[str, Any],
    cust: dict[str, Any],
    other_cust: dict[str, Any],
    redis_conn: redis.Redis,
):
    event = queue_event(client, org)
    join(client, cust["token"], event["id"])
    pace_until_admitted(client, cust["token"], event["id"])
    # Never joined: the other customer's admission is not theirs.
    f.assert_problem(hold(client, other_cust["token"], event["id"]), 409, "queue_required")
    f.assert_problem(book(client, other_cust["token"], event["id"]), 409, "queue_required")
    # The admission runs out: lapsed, refused, and a new join goes to the end.
    redis_conn.zadd(waitroom.admitted_key(event["id"]), {str(cust["user"]["id"]): 1})
    assert poll(client, cust["token"], event["id"]).get_json()["state"] == "lapsed"
    problem = f.assert_problem(book(client, cust["token"], event["id"]), 409, "queue_required")
    assert problem["state"] == "lapsed"
    join(client, other_cust["token"], event["id"])
    rejoined = join(client, cust["token"], event["id"])
    assert rejoined.status_code == 201
    assert rejoined.get_json()["position"] == 2


def test_cancel_and_release_need_no_admission(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], redis_conn: redis.Redis
):
    event = queue_event(client, org)
    join(client, cust["token"], event["id"])
    pace_until_admitted(client, cust["token"], event["id"])
    held = hold(client, cust["token"], event["id"]).get_json()
    booked = book(client, cust["token"], event["id"], seats=2)
    assert booked.status_code == 201
    redis_conn.delete(waitroom.admitted_key(event["id"]))  # admission gone
    headers = f.auth(cust["token"])
    assert client.delete(f"{API}/holds/{held['id']}", headers=headers).status_code == 204
    booking = booked.get_json()
    fewer = client.patch(f"{API}/bookings/{booking['id']}", json={"seats": 1}, headers=headers)
    assert fewer.status_code == 200
    more = client.patch(f"{API}/bookings/{booking['id']}", json={"seats": 3}, headers=headers)
    f.assert_problem(more, 409, "queue_required")
    cancelled = client.post(f"{API}/bookings/{booking['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200
    again = client.post(f"{API}/bookings/{booking['id']}/reactivate", headers=headers)
    f.assert_problem(again, 409, "queue_required")


def test_leaving_and_joining_again_goes_to_the_end(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], other_cust: dict[str, Any]
):
    event = queue_event(client, org, sale_starts_at=f.iso(f.in_hours(1)))
    join(client, cust["token"], event["id"])
    join(client, other_cust["token"], event["id"])
    headers = f.auth(cust["token"])
    assert client.delete(f"{API}/events/{event['id']}/queue", headers=headers).status_code == 204
    # Before the sale too: no second draw of a random place.
    rejoined = join(client, cust["token"], event["id"]).get_json()
    assert rejoined["position"] == 2


def test_sold_out_with_no_holds_then_seats_come_back(
    client: FlaskClient,
    org: dict[str, Any],
    cust: dict[str, Any],
    other_cust: dict[str, Any],
):
    event = queue_event(client, org, capacity=1)
    join(client, cust["token"], event["id"])
    entry = pace_until_admitted(client, cust["token"], event["id"])
    assert entry["state"] == "admitted"
    held = hold(client, cust["token"], event["id"]).get_json()
    join(client, other_cust["token"], event["id"])
    pacer.pace_once()
    # A live hold may lapse: still waiting, but nobody is admitted meanwhile.
    assert poll(client, other_cust["token"], event["id"]).get_json()["state"] == "waiting"
    client.post(f"{API}/holds/{held['id']}/confirm", headers=f.auth(cust["token"]))
    pacer.pace_once()
    sold_out = poll(client, other_cust["token"], event["id"]).get_json()
    assert sold_out["state"] == "sold_out"
    assert sold_out["waitlist"] == f"/api/v1/events/{event['id']}/waitlist"
    booking = client.get(f"{API}/bookings", headers=f.auth(cust["token"])).get_json()[0]
    client.post(f"{API}/bookings/{booking['id']}/cancel", headers=f.auth(cust["token"]))
    assert pace_until_admitted(client, other_cust["token"], event["id"])["state"] == "admitted"


def test_organizer_sees_the_queue_stats(
    client: FlaskClient, org: dict[str, Any], other_org: dict[str, Any], cust: dict[str, Any]
):
    event = queue_event(client, org, sale_starts_at=f.iso(f.in_hours(1)))
    join(client, cust["token"], event["id"])
    pacer.pace_once()
    stats = client.get(f"{API}/events/{event['id']}/queue/stats", headers=f.auth(org["token"]))
    assert stats.status_code == 200
    body = stats.get_json()
    assert body["depth"] == 1 and body["active"] == 0 and body["admitted"] == 0
    assert body["rate_per_minute"] == 600
    stranger = client.get(
        f"{API}/events/{event['id']}/queue/stats", headers=f.auth(other_org["token"])
    )
    f.assert_problem(stranger, 403, "forbidden")


def test_the_controller_cuts_on_long_waits_and_grows_on_short_ones():
    controller = Controller(rate=10.0, target_wait=0.05, max_rate=100.0)
    controller.update(LockStats(requests=0), 0.0, waiting=True)
    # 100 served a second with 1 queued: 10 ms of wait, far under the target: grows.
    controller.update(LockStats(requests=100, waiters=1), 1.0, waiting=True)
    assert controller.rate > 10.0
    grown = controller.rate
    # 100 a second with 50 queued on a lock busy 95% of the time (9.5 ms holds): 500 ms by
    # Little's law, 180 ms as the busy share bounds it; far over: cut about in half.
    busy = LockStats(requests=200, waiters=50, acquired=100, hold_us=950_000)
    controller.update(busy, 2.0, waiting=True)
    cut = controller.rate
    assert grown / 2 <= cut < grown * 0.6
    # A stale waiter on a quiet lock (1% busy) is no long wait: once the smoothed estimate
    # has come down, it grows again.
    for second in (3, 4):
        quiet = LockStats(requests=200 + 10 * second, waiters=1, acquired=100 + 10 * second,
                          hold_us=950_000 + 10_000 * second)  # fmt: skip
        controller.update(quiet, float(second), waiting=True)
    assert controller.rate > cut
    # Nobody waiting in the queue: no growth however idle the lock.
    idle = Controller(rate=10.0, target_wait=0.05, max_rate=100.0)
    idle.update(LockStats(requests=0), 0.0, waiting=False)
    idle.update(LockStats(requests=10), 1.0, waiting=False)
    assert idle.rate == 10.0


def test_queue_gauges_at_scrape_time(
    client: FlaskClient, org: dict[str, Any], cust: dict[str, Any], other_cust: dict[str, Any]
):
    event = queue_event(client, org, sale_starts_at=f.iso(f.in_hours(1)))
    for who in (cust, other_cust):
        join(client, who["token"], event["id"])
    pacer.pace_once()  # before the sale: admits nobody, records its rate (600 a minute)
    state = ScrapeState(dependencies={}, capacity=None, queues=hot_queues())
    samples = {
        (sample.name, sample.labels.get("event_id")): sample.value
        for family in ScrapeTimeCollector(lambda: state).collect()
        for sample in family.samples
    }
    key = str(event["id"])
    assert samples[("booking_waiting_room_depth", key)] == 2
    assert samples[("booking_waiting_room_active_shoppers", key)] == 0
    assert samples[("booking_waiting_room_admitted_per_minute", key)] == 0
    assert samples[("booking_waiting_room_eta_seconds", key)] == 0.2  # 2 at 10 a second


def test_no_more_admitted_than_there_are_free_seats(
    client: FlaskClient, org: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(pacer, "fresh_seconds", 60)
    event = queue_event(client, org, capacity=3, admit_per_minute=6000)
    customers = [f.customer(client) for _ in range(5)]
    for who in customers:
        join(client, who["token"], event["id"])
    for _ in range(5):
        pacer.pace_once()
        time.sleep(0.1)
    states = [poll(client, who["token"], event["id"]).get_json()["state"] for who in customers]
    assert states == ["admitted"] * 3 + ["waiting"] * 2


def test_admissions_lost_in_a_failover_still_count_against_the_rate(
    client: FlaskClient, org: dict[str, Any], redis_conn: redis.Redis
):
    """A promoted replica that missed the last admissions: the pacer sees the serving counter
    go back and starts the bucket empty, so the admissions the old primary made (and its
    customers may have used) plus the new ones stay within the rate in every window."""
    event = queue_event(client, org, admit_per_minute=600, capacity=100)  # 10 a second
    for _, token in f.insert_customers(40, prefix="lost-"):
        assert join(client, token, event["id"]).status_code == 201
    keys = [waitroom.queue_key(event["id"]), waitroom.admitted_key(event["id"])]
    keys.append(waitroom.meta_key(event["id"]))
    length = event["admission_minutes"] * 60

    def moments() -> set[tuple[bytes, float]]:
        entries = redis_conn.zrange(keys[1], 0, -1, withscores=True)
        return {(member, score / 1000 - length) for member, score in entries}

    seen: set[tuple[bytes, float]] = set()
    for _ in range(6):
        pacer.pace_once()
        seen |= moments()
        time.sleep(0.2)
    replica = {key: redis_conn.dump(key) for key in keys}  # what the replica has
    for _ in range(4):
        pacer.pace_once()
        seen |= moments()
        time.sleep(0.2)
    for key, value in replica.items():  # the failover: the replica's state
        redis_conn.restore(key, 0, value, replace=True)
    (after,) = pacer.pace_once()
    assert after.admitted.rolled_back and after.admitted.count == 0
    for _ in range(6):
        time.sleep(0.2)
        pacer.pace_once()
        seen |= moments()
    assert len(seen) > len(moments())  # some admissions were lost, and are counted
    ordered = sorted(moment for _, moment in seen)
    for i in range(len(ordered)):
        for j in range(i, len(ordered)):
            assert j - i + 1 <= 10 * (ordered[j] - ordered[i]) + 10 + 1e-6, (i, j)


def test_join_and_poll_are_rate_limited(
    app: Flask,
    client: FlaskClient,
    org: dict[str, Any],
    cust: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setitem(app.config, "RATE_LIMIT_QUEUE_POLL", "2/minute")
    monkeypatch.setitem(app.config, "RATE_LIMIT_QUEUE_JOIN", "1/minute")
    event = queue_event(client, org)
    assert join(client, cust["token"], event["id"]).status_code == 201
    f.assert_problem(join(client, cust["token"], event["id"]), 429, "rate_limited")
    assert poll(client, cust["token"], event["id"]).status_code == 200
    assert poll(client, cust["token"], event["id"]).status_code == 200
    limited = f.assert_problem(poll(client, cust["token"], event["id"]), 429, "rate_limited")
    assert limited["status"] == 429
