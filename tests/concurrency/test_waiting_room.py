"""The waiting room's proofs on the tier's instances (directly, through PgBouncer, on a Redis
Cluster): the shuffle at the start, FIFO after it, the fixed rate in every window, nobody in
without their own live admission, sold out and back.

The pacer runs in the instances' workers (one at a time, by lease), so admissions here are
the service's own; the test reads what it did from the instances' Redis.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.services import waitroom
from tests import factories
from tests.factories import auth
from tests.support.instances import API, Cluster

pytestmark = pytest.mark.slow


def seed_customers(count: int) -> list[tuple[int, str]]:
    return factories.insert_customers(count, prefix="wr-")


def queue_event(client: FlaskClient, **fields: Any) -> dict[str, Any]:
    organizer = factories.organizer(client)
    return factories.create_event(client, organizer["token"], waiting_room=True, **fields)


def call(method: str, url: str, token: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, url, headers=auth(token), timeout=15, **kwargs)


def join(cluster: Cluster, n: int, token: str, event_id: int) -> requests.Response:
    return call("POST", f"{cluster.url(n)}{API}/events/{event_id}/queue", token)


def admitted_at(lock_redis: Any, event: dict[str, Any]) -> dict[int, float]:
    """Each admitted customer's admission moment (Redis' clock, seconds)."""
    length = event["admission_minutes"] * 60
    entries = lock_redis.zrange(waitroom.admitted_key(event["id"]), 0, -1, withscores=True)
    return {int(member): score / 1000 - length for member, score in entries}


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(values: list[float]) -> list[int]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0] * len(values)
        for rank, index in enumerate(order):
            out[index] = rank
        return out

    rx, ry, n = ranks(xs), ranks(ys), len(xs)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry, strict=True)) / (n * (n * n - 1))


def chi_square_critical(dof: int, z: float = 3.0902) -> float:
    """The chi-square quantile for p = 0.001 (z of 0.999), by Wilson and Hilferty."""
    k = 2 / (9 * dof)
    return dof * (1 - k + z * math.sqrt(k)) ** 3


def test_shuffle_at_the_start_then_fifo(
    cluster: Cluster, lock_redis: Any, client: FlaskClient
) -> None:
    pre, post = 1000, 60
    customers = seed_customers(pre + post)
    starts = datetime.now(UTC) + timedelta(seconds=12)
    event = queue_event(
        client, sale_starts_at=starts.isoformat(), admit_per_minute=60_000, capacity=5000
    )
    event_id = event["id"]

    # Before the start, from every instance at once; join order = order of the answers.
    order: list[int] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = pool.map(
            lambda item: (item[1][0], join(cluster, item[0], item[1][1], event_id)),
            enumerate(customers[:pre]),
        )
        for user_id, answer in answers:
            assert answer.status_code == 201, answer.text
            order.append(user_id)
    assert datetime.now(UTC) < starts, "the pre-queue took past the sale start"
    queued = lock_redis.zrange(waitroom.queue_key(event_id), 0, -1, withscores=True)
    assert len(queued) == pre
    scores = [score for _, score in queued]
    assert all(0 <= score < 1 for score in scores)
    # Uniformity of the shuffle: the random scores in 20 equal bins.
    bins = [0] * 20
    for score in scores:
        bins[int(score * 20)] += 1
    chi2 = sum((count - pre / 20) ** 2 / (pre / 20) for count in bins)
    assert chi2 < chi_square_critical(19), bins
    # Join order against admission order (the queue's order, which the pacer pops).
    place = {int(member): rank for rank, (member, _) in enumerate(queued)}
    rho = spearman([float(i) for i in range(pre)], [float(place[user]) for user in order])
    assert abs(rho) < 0.1, rho
    # Independence: deciles of join order against deciles of place, 10 x 10.
    table = [[0] * 10 for _ in range(10)]
    for joined, user in enumerate(order):
        table[joined * 10 // pre][place[user] * 10 // pre] += 1
    chi2 = sum((cell - pre / 100) ** 2 / (pre / 100) for row in table for cell in row)
    assert chi2 < chi_square_critical(81), table
    print(f"\nshuffle: rho={rho:+.4f} chi2(10x10)={chi2:.1f} scores chi2(20 bins) ok")

    # After the start: in order of joining, one at a time, across the instances.
    wait_for(lambda: datetime.now(UTC) >= starts, 30, "the sale start")
    later = customers[pre:]
    for n, (_, token) in enumerate(later):
        assert join(cluster, n, token, event_id).status_code == 201
    wait_for(lambda: len(admitted_at(lock_redis, event)) == pre + post, 30, "every admission")
    moments = admitted_at(lock_redis, event)
    assert max(moments[user] for user in order) <= min(moments[u] for u, _ in later)
    fifo = [moments[user] for user, _ in later]
    assert fifo == sorted(fifo), "admitted out of joining order"


def test_fixed_rate_never_exceeded_in_any_window(
    cluster: Cluster, lock_redis: Any, client: FlaskClient
) -> None:
    per_minute, count = 1200, 100  # 20 a second: about five seconds of admissions
    customers = seed_customers(count)
    starts = datetime.now(UTC) + timedelta(seconds=4)
    event = queue_event(
        client, sale_starts_at=starts.isoformat(), admit_per_minute=per_minute, capacity=1000
    )
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(
            pool.map(
                lambda item: join(cluster, item[0], item[1][1], event["id"]).status_code,
                enumerate(customers),
            )
        )
    assert codes == [201] * count
    wait_for(lambda: len(admitted_at(lock_redis, event)) == count, 30, "every admission")
    moments = sorted(admitted_at(lock_redis, event).values())
    rate, burst = per_minute / 60, max(1.0, per_minute / 60)
    worst = 0.0
    for i in range(len(moments)):
        for j in range(i, len(moments)):
            allowed = rate * (moments[j] - moments[i]) + burst
            worst = max(worst, (j - i + 1) / allowed)
            assert j - i + 1 <= allowed + 1e-6, (i, j, moments[i], moments[j])
    assert moments[0] >= starts.timestamp() - 0.001  # nobody before the sale
    print(f"\nfixed rate: {count} admissions, worst window at {worst:.0%} of rate x length + burst")


def test_no_hold_or_booking_without_ones_own_live_admission(
    cluster: Cluster, lock_redis: Any, client: FlaskClient
) -> None:
    customers = seed_customers(12)
    event = queue_event(client, admit_per_minute=60, capacity=50)
    event_id = event["id"]
    admitted_user, admitted_token = customers[0]
    assert join(cluster, 0, admitted_token, event_id).status_code == 201
    wait_for(lambda: admitted_user in admitted_at(lock_redis, event), 10, "the first admission")
    lapsed_user, lapsed_token = customers[1]
    waiting = customers[2:6]
    for n, (_, token) in enumerate(waiting):
        join(cluster, n, token, event_id)  # behind a rate of one a minute: they wait
    lock_redis.zadd(waitroom.admitted_key(event_id), {str(lapsed_user): 1})  # long lapsed
    strangers = customers[6:]
    attempts = []
    for n, (_, token) in enumerate([(0, lapsed_token), *waiting, *strangers] * 2):
        base = cluster.url(n)
        attempts.append(
            call("POST", f"{base}{API}/events/{event_id}/holds", token, json={"seats": 1})
        )
        attempts.append(call("POST", f"{base}{API}/bookings", token, json={"event_id": event_id}))
    codes = [(a.status_code, a.json().get("code")) for a in attempts]
    assert codes == [(409, "queue_required")] * len(attempts), codes
    # The one admitted customer gets in (the gate is not simply closed).
    held = call("POST", f"{cluster.url(1)}{API}/events/{event_id}/holds", admitted_token,
                json={"seats": 1})  # fmt: skip
    assert held.status_code == 201, held.text
    with db.transaction() as session:
        rows = session.scalar(
            text(
                "SELECT (SELECT count(*) FROM holds WHERE event_id = :e) "
                "+ (SELECT count(*) FROM bookings WHERE event_id = :e)"
            ),
            {"e": event_id},
        )
    assert rows == 1
    print(f"\n0 of {len(attempts)} attempts without an own live admission got in")


def test_sold_out_and_back(cluster: Cluster, lock_redis: Any, client: FlaskClient) -> None:
    (first, first_token), (second, second_token), (_, third_token) = seed_customers(3)
    event = queue_event(client, admit_per_minute=6000, capacity=1)
    event_id = event["id"]

    def state(token: str, n: int = 0) -> str:
        answer = call("GET", f"{cluster.url(n)}{API}/events/{event_id}/queue", token)
        return str(answer.json()["state"])

    join(cluster, 0, first_token, event_id)
    wait_for(lambda: state(first_token) == "admitted", 10, "the first admission")
    hold = call("POST", f"{cluster.url(1)}{API}/events/{event_id}/holds", first_token,
                json={"seats": 1}).json()  # fmt: skip
    join(cluster, 1, second_token, event_id)
    time.sleep(1)  # several pacer rounds: a live hold may lapse, so it waits
    assert state(second_token) == "waiting"
    # The hold lapses: its seat comes back (the sweeper) and the next one is admitted.
    with db.transaction() as session:
        session.execute(
            text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :h"),
            {"h": hold["id"]},
        )
    # Within the sweeper's round, plus the 5 s in which the first admission still counts as
    # a seat about to be taken.
    wait_for(lambda: state(second_token, 2) == "admitted", 20, "an admission after the lapse")
    booked = call("POST", f"{cluster.url(2)}{API}/bookings", second_token,
                  json={"event_id": event_id})  # fmt: skip
    assert booked.status_code == 201, booked.text
    join(cluster, 0, third_token, event_id)
    wait_for(lambda: state(third_token) == "sold_out", 10, "sold out")
    entry = call("GET", f"{cluster.url(1)}{API}/events/{event_id}/queue", third_token).json()
    assert entry["waitlist"] == f"/api/v1/events/{event_id}/waitlist"
    cancelled = call("POST", f"{cluster.url(0)}{API}/bookings/{booked.json()['id']}/cancel",
                     second_token)  # fmt: skip
    assert cancelled.status_code == 200
    wait_for(lambda: state(third_token, 1) == "admitted", 15, "admission after the cancel")
    assert first not in (second,)
