"""/metrics of real gunicorn instances: values move as they must, summed over every worker.

Each instance keeps its counters for the whole module, so every check is on the difference
between a scrape before and a scrape after a known action.
"""

from __future__ import annotations

import random
import re
import shutil
import string
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import redis_lock
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from booking_service.database import db
from booking_service.locking import lock_name
from harness.instances import AppInstance
from harness.processes import free_port, wait_until
from harness.redis_servers import RedisServer
from tests import factories
from tests.factories import API, auth
from tests.support.instances import instance_env

pytestmark = pytest.mark.slow

TOKEN = "metrics-test-token"
# The contract's names (docs/architecture.md, "Observability"), as on the exposition's TYPE lines.
CONTRACT_METRICS = {
    "booking_lock_wait_seconds": "histogram",
    "booking_lock_hold_seconds": "histogram",
    "booking_lock_acquisitions_total": "counter",
    "booking_lock_lost_total": "counter",
    "booking_lock_waiters": "gauge",
    "bookings_total": "counter",
    "booking_request_seconds": "histogram",
    "http_requests_total": "counter",
    "http_request_duration_seconds": "histogram",
}
LOCK_OUTCOMES = ("acquired", "timeout", "error")
BOOKING_RESULTS = (
    "created",
    "event_full",
    "already_booked",
    "rejected",
    "lock_timeout",
    "unavailable",
)
# A path segment that is a number: an endpoint label built from the raw path, not the route.
RAW_ID = re.compile(r"/\d+(/|$)")
SPREAD_BATCH = 12
SPREAD_MAX_ROUNDS = 5


class Scrape:
    """One /metrics answer, parsed."""

    def __init__(self, body: str) -> None:
        self.text = body
        self.families = list(text_string_to_metric_families(body))
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in self.families
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a labelled series not created yet."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def types(self) -> dict[str, str]:
        return dict(re.findall(r"^# TYPE (\S+) (\S+)$", self.text, flags=re.MULTILINE))


def scrape(instance: AppInstance, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(f"{instance.base_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return Scrape(response.text)


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def post_booking(instance: AppInstance, token: str, event_id: int) -> requests.Response:
    # A fresh connection per request, so the kernel hands each one to whichever worker accepts.
    return requests.post(
        f"{instance.base_url}{API}/bookings",
        json={"event_id": event_id},
        headers={**auth(token), "Connection": "close"},
        timeout=30,
    )


def new_event(client: FlaskClient, *, capacity: int = 10) -> int:
    organizer = factories.organizer(client)
    return factories.create_event(client, organizer["token"], capacity=capacity)["id"]


def multiproc_dir(pid: int) -> Path:
    """The worker's PROMETHEUS_MULTIPROC_DIR, read from its environment in /proc."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        key, _, value = entry.partition(b"=")
        if key == b"PROMETHEUS_MULTIPROC_DIR":
            return Path(value.decode())
    raise AssertionError(f"worker {pid} has no PROMETHEUS_MULTIPROC_DIR")


def worker_value(pid: int, name: str, **labels: str) -> float:
    """What one worker alone has recorded: its own files, read apart from the others'."""
    files = sorted(multiproc_dir(pid).glob(f"*_{pid}.db"))
    assert files, f"worker {pid} wrote no metrics files"
    with tempfile.TemporaryDirectory() as alone:
        for path in files:
            shutil.copy(path, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=alone)
        return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def instance(app: Flask) -> Iterator[AppInstance]:
    """Two workers, no token; a 1 s lock wait so that a forced timeout is quick."""
    # ``app`` first: it recreates the schema the instance is about to use.
    with AppInstance(instance_env(LOCK_WAIT_SECONDS=1), workers=2, name="metrics") as started:
        yield started


@pytest.fixture(scope="module")
def secured_instance(app: Flask) -> Iterator[AppInstance]:
    """Two workers with METRICS_TOKEN; a long lock wait keeps a queued booking queued."""
    env = instance_env(METRICS_TOKEN=TOKEN, LOCK_WAIT_SECONDS=10)
    with AppInstance(env, workers=2, name="metrics-secured") as started:
        yield started


def test_every_design_metric_is_exposed_under_its_name_and_type(instance: AppInstance) -> None:
    result = scrape(instance)
    types = result.types()
    for name, kind in CONTRACT_METRICS.items():
        assert types.get(name) == kind, f"{name}: expected a {kind}, TYPE lines say {types}"
    # Every outcome and result is there from the start, so rate() and alerts see a 0, not nothing.
    for outcome in LOCK_OUTCOMES:
        assert result.has("booking_lock_acquisitions_total", outcome=outcome)
    for booking_result in BOOKING_RESULTS:
        assert result.has("bookings_total", result=booking_result)
    assert result.has("booking_lock_lost_total")
    assert result.has("booking_lock_waiters")


def test_no_histogram_has_a_per_event_label(instance: AppInstance, client: FlaskClient) -> None:
    event_id = new_event(client)
    assert post_booking(instance, factories.customer(client)["token"], event_id).status_code == 201
    histograms = [family for family in scrape(instance).families if family.type == "histogram"]
    assert {family.name for family in histograms} >= {
        "booking_lock_wait_seconds",
        "booking_lock_hold_seconds",
        "booking_request_seconds",
        "http_request_duration_seconds",
    }
    for family in histograms:
        for sample in family.samples:
            assert set(sample.labels) <= {"le", "method", "endpoint", "status"}, sample
            assert not RAW_ID.search(sample.labels.get("endpoint", "")), sample


def test_a_booking_adds_exactly_one_created(instance: AppInstance, client: FlaskClient) -> None:
    event_id = new_event(client)
    token = factories.customer(client)["token"]
    before = scrape(instance)

    assert post_booking(instance, token, event_id).status_code == 201

    after = scrape(instance)
    assert delta(before, after, "bookings_total", result="created") == 1
    for other in BOOKING_RESULTS[1:]:
        assert delta(before, after, "bookings_total", result=other) == 0, other
    assert delta(before, after, "booking_lock_acquisitions_total", outcome="acquired") == 1
    assert delta(before, after, "booking_lock_acquisitions_total", outcome="timeout") == 0
    assert delta(before, after, "booking_lock_wait_seconds_count") == 1
    assert delta(before, after, "booking_lock_hold_seconds_count") == 1
    assert delta(before, after, "booking_request_seconds_count") == 1
    assert after.value("booking_lock_waiters") == 0
    # An uncontended hold is milliseconds: the sub-10 ms buckets must be able to say so.
    assert delta(before, after, "booking_lock_hold_seconds_bucket", le="0.01") == 1
    # The live lock view's hottest event, exported as a gauge at scrape time.
    assert after.value("booking_hot_event_lock_requests", event_id=str(event_id)) == 1


def test_a_second_booking_of_the_same_event_counts_as_already_booked(
    instance: AppInstance, client: FlaskClient
) -> None:
    event_id = new_event(client)
    token = factories.customer(client)["token"]
    assert post_booking(instance, token, event_id).status_code == 201
    before = scrape(instance)

    response = post_booking(instance, token, event_id)

    assert response.status_code == 409
    after = scrape(instance)
    assert delta(before, after, "bookings_total", result="already_booked") == 1
    assert delta(before, after, "bookings_total", result="created") == 0


def test_a_forced_lock_timeout_adds_exactly_one_timeout(
    instance: AppInstance, client: FlaskClient, redis_conn: redis.Redis
) -> None:
    event_id = new_event(client)
    token = factories.customer(client)["token"]
    held = redis_lock.Lock(redis_conn, lock_name(event_id), expire=30)
    assert held.acquire(blocking=False)
    try:
        before = scrape(instance)
        response = post_booking(instance, token, event_id)
        after = scrape(instance)
    finally:
        held.release()

    assert response.status_code == 503
    assert response.json()["code"] == "lock_timeout"
    assert delta(before, after, "booking_lock_acquisitions_total", outcome="timeout") == 1
    assert delta(before, after, "booking_lock_acquisitions_total", outcome="acquired") == 0
    assert delta(before, after, "bookings_total", result="lock_timeout") == 1
    assert delta(before, after, "bookings_total", result="created") == 0
    assert delta(before, after, "booking_lock_hold_seconds_count") == 0
    # The 1 s wait lands between the 0.5 s and 2.5 s bounds: multi-second waits are resolved.
    assert delta(before, after, "booking_lock_wait_seconds_count") == 1
    assert delta(before, after, "booking_lock_wait_seconds_bucket", le="0.5") == 0
    assert delta(before, after, "booking_lock_wait_seconds_bucket", le="2.5") == 1
    assert delta(before, after, "booking_lock_wait_seconds_sum") >= 0.95
    assert after.value("booking_lock_waiters") == 0
    assert (
        delta(
            before,
            after,
            "http_requests_total",
            method="POST",
            endpoint="/api/v1/bookings",
            status="503",
        )
        == 1
    )


def test_a_booking_queued_on_a_held_lock_shows_as_one_waiter(
    secured_instance: AppInstance, client: FlaskClient, redis_conn: redis.Redis
) -> None:
    event_id = new_event(client)
    token = factories.customer(client)["token"]
    assert scrape(secured_instance, TOKEN).value("booking_lock_waiters") == 0
    held = redis_lock.Lock(redis_conn, lock_name(event_id), expire=30)
    assert held.acquire(blocking=False)
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            queued = pool.submit(post_booking, secured_instance, token, event_id)
            # Whichever worker queues it, the gauge is summed over both (livesum).
            wait_until(
                lambda: scrape(secured_instance, TOKEN).value("booking_lock_waiters") != 0,
                timeout=8,
                what="the queued booking to show in booking_lock_waiters",
            )
            assert scrape(secured_instance, TOKEN).value("booking_lock_waiters") == 1
        finally:
            held.release()
        response = queued.result(timeout=20)

    assert response.status_code == 201, response.text
    assert scrape(secured_instance, TOKEN).value("booking_lock_waiters") == 0


def test_counters_are_summed_over_every_worker(instance: AppInstance, client: FlaskClient) -> None:
    pids = instance.worker_pids()
    assert len(pids) == 2, pids
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    organizer = factories.organizer(client)
    before = scrape(instance)
    worker_before = {pid: worker_value(pid, "bookings_total", result="created") for pid in pids}

    sent = 0
    served: dict[int, float] = {}
    # Concurrent fresh connections land on both workers almost always; a few more rounds
    # make "all on one worker" vanishingly unlikely. N is whatever was sent in the end.
    for _ in range(SPREAD_MAX_ROUNDS):
        pairs = [
            (
                factories.customer(client)["token"],
                factories.create_event(client, organizer["token"])["id"],
            )
            for _ in range(SPREAD_BATCH)
        ]
        with ThreadPoolExecutor(max_workers=SPREAD_BATCH) as pool:
            statuses = list(pool.map(lambda pair: post_booking(instance, *pair).status_code, pairs))
        assert statuses == [201] * SPREAD_BATCH
        sent += SPREAD_BATCH
        served = {
            pid: worker_value(pid, "bookings_total", result="created") - worker_before[pid]
            for pid in pids
        }
        if all(served.values()):
            break

    assert all(served.values()), f"every booking went to one worker: {served}"
    assert sum(served.values()) == sent
    after = scrape(instance)
    # The scrape is answered by one worker, but reports the sum over both.
    assert delta(before, after, "bookings_total", result="created") == sent
    assert delta(before, after, "booking_lock_acquisitions_total", outcome="acquired") == sent
    assert delta(before, after, "booking_lock_hold_seconds_count") == sent
    assert delta(before, after, "booking_request_seconds_count") == sent
    assert (
        delta(
            before,
            after,
            "http_requests_total",
            method="POST",
            endpoint="/api/v1/bookings",
            status="201",
        )
        == sent
    )


def test_http_metrics_carry_the_route_and_the_status(
    instance: AppInstance, client: FlaskClient
) -> None:
    event_id = new_event(client)
    missing_id = 987654321
    before = scrape(instance)

    assert requests.get(f"{instance.base_url}{API}/events/{event_id}", timeout=10).ok
    assert (
        requests.get(f"{instance.base_url}{API}/events/{missing_id}", timeout=10).status_code == 404
    )
    assert (
        requests.get(f"{instance.base_url}/no/such/page/{missing_id}", timeout=10).status_code
        == 404
    )

    after = scrape(instance)
    route = {"method": "GET", "endpoint": "/api/v1/events/<event_id>"}
    assert delta(before, after, "http_requests_total", **route, status="200") == 1
    assert delta(before, after, "http_requests_total", **route, status="404") == 1
    assert delta(before, after, "http_request_duration_seconds_count", **route, status="200") == 1
    assert delta(before, after, "http_request_duration_seconds_count", **route, status="404") == 1
    unmatched = {"method": "GET", "endpoint": "unmatched", "status": "404"}
    assert delta(before, after, "http_requests_total", **unmatched) == 1
    for (name, labels), _ in after.samples.items():
        assert not RAW_ID.search(dict(labels).get("endpoint", "")), (name, labels)


def test_invented_methods_and_paths_add_a_bounded_number_of_series(
    instance: AppInstance,
) -> None:
    # Every label value is a series kept for the process's lifetime: none may come from what a
    # client can make up (methods, paths), or a client grows /metrics without bound.
    def series(result: Scrape) -> int:
        return sum(1 for name, _ in result.samples if name == "http_requests_total")

    before = scrape(instance)
    randomly = random.Random(12)
    with requests.Session() as session:
        for _ in range(60):
            invented = "".join(randomly.choices(string.ascii_uppercase, k=10))
            path = "".join(randomly.choices(string.ascii_lowercase, k=12))
            assert session.request(invented, f"{instance.base_url}/livez", timeout=10).status_code
            assert session.get(f"{instance.base_url}/{path}", timeout=10).status_code == 404
    after = scrape(instance)

    # At most: the invented methods on /livez (one shared method value, 405 unmatched) and the
    # unknown paths (GET unmatched 404), each maybe seen for the first time here.
    assert series(after) - series(before) <= 2, sorted(
        dict(labels)["method"] for name, labels in after.samples if name == "http_requests_total"
    )
    assert (
        after.value("http_requests_total", method="other", endpoint="unmatched", status="405") >= 60
    )


def test_capacity_and_readiness_gauges_are_read_at_scrape_time(
    instance: AppInstance, client: FlaskClient
) -> None:
    nearly_full = new_event(client, capacity=10)
    new_event(client, capacity=30)
    past_organizer = factories.organizer(client)
    factories.insert_event(
        organizer_id=past_organizer["user"]["id"],
        start=factories.in_hours(-3),
        end=factories.in_hours(-2),
        capacity=5,
    )
    with db.transaction() as session:
        # booked_count is what the gauges read; 9 of 10 is exactly the 90% threshold.
        session.execute(
            text("UPDATE events SET booked_count = 9 WHERE id = :id"), {"id": nearly_full}
        )

    result = scrape(instance)

    assert result.value("booking_upcoming_events") == 2
    assert result.value("booking_upcoming_events_near_capacity") == 1
    assert result.value("booking_upcoming_event_max_utilisation_ratio") == pytest.approx(0.9)
    assert result.value("booking_upcoming_booked_seats") == 9
    assert result.value("booking_upcoming_capacity_seats") == 40
    assert result.value("booking_ready") == 1
    assert result.value("booking_dependency_up", dependency="postgresql") == 1
    assert result.value("booking_dependency_up", dependency="redis") == 1


def test_scrape_time_gauges_name_the_unreachable_dependency(app: Flask) -> None:
    # Nothing listens on this port: PostgreSQL is "down" from the start.
    dead_database = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nowhere"
    with RedisServer() as lock_redis:
        env = instance_env(DATABASE_URL=dead_database, REDIS_URL=lock_redis.url)
        with AppInstance(env, workers=1, name="metrics-deps") as instance:
            result = scrape(instance)
            assert result.value("booking_ready") == 0
            assert result.value("booking_dependency_up", dependency="postgresql") == 0
            assert result.value("booking_dependency_up", dependency="redis") == 1
            # Without PostgreSQL there is no capacity to report: absent, not a false 0.
            assert not result.has("booking_upcoming_events")
            # The recorded metrics are still served.
            assert result.has("bookings_total", result="created")

            lock_redis.stop()
            result = scrape(instance)
            assert result.value("booking_ready") == 0
            assert result.value("booking_dependency_up", dependency="redis") == 0
            ready = requests.get(f"{instance.base_url}/readyz", timeout=15)
            assert ready.status_code == 503
            assert ready.json()["detail"] == "Unreachable: postgresql, redis"


def test_metrics_need_the_bearer_token_when_one_is_set(secured_instance: AppInstance) -> None:
    url = f"{secured_instance.base_url}/metrics"
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        response = requests.get(url, headers=headers, timeout=10)
        assert response.status_code == 401, headers
        assert response.headers["Content-Type"] == "application/problem+json"
        assert "booking_lock_wait_seconds" not in response.text

    result = scrape(secured_instance, TOKEN)
    assert result.types()["bookings_total"] == "counter"
    # The probes stay open: orchestrators and load balancers carry no token.
    assert requests.get(f"{secured_instance.base_url}/livez", timeout=10).status_code == 200
    assert requests.get(f"{secured_instance.base_url}/readyz", timeout=10).status_code == 200


def test_with_metrics_disabled_nothing_is_recorded_and_metrics_is_404(
    app: Flask, client: FlaskClient
) -> None:
    event_id = new_event(client)
    token = factories.customer(client)["token"]
    env = instance_env(METRICS_ENABLED="false")
    with AppInstance(env, workers=1, name="metrics-off") as off:
        assert requests.get(f"{off.base_url}/metrics", timeout=10).status_code == 404
        assert post_booking(off, token, event_id).status_code == 201
        (pid,) = off.worker_pids()
        assert worker_value(pid, "bookings_total", result="created") == 0
        assert worker_value(pid, "booking_lock_acquisitions_total", outcome="acquired") == 0
        assert worker_value(pid, "booking_lock_hold_seconds_count") == 0
        assert (
            worker_value(
                pid,
                "http_requests_total",
                method="POST",
                endpoint="/api/v1/bookings",
                status="201",
            )
            == 0
        )


def test_pool_gauges_are_reported_per_worker(instance: AppInstance, client: FlaskClient) -> None:
    event_id = new_event(client)
    for _ in range(4):
        assert post_booking(instance, factories.customer(client)["token"], event_id).ok
    after = scrape(instance)
    pids = {str(pid) for pid in instance.worker_pids()}
    for state in ("in_use", "idle", "waiting"):
        reported = {
            dict(labels)["pid"]
            for (name, labels) in after.samples
            if name == "booking_db_pool_connections" and ("state", state) in labels
        }
        assert reported == pids, (state, reported, pids)
    idle = sum(
        value
        for (name, labels), value in after.samples.items()
        if name == "booking_db_pool_connections" and ("state", "idle") in labels
    )
    assert idle >= 1  # the workers that served keep their connections
    for cause in ("connect_refused", "pool_timeout", "server_gone", "statement_timeout"):
        assert after.has("booking_db_unavailable_total", cause=cause)
