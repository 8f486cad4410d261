"""Faults injected into a three-instance cluster under booking load (docs/architecture.md,
"Correctness model").

Three gunicorn instances (two workers each) share the test PostgreSQL and a Redis this module
starts. For each fault, customers keep booking, cancelling and reactivating on three small events
and one roomy probe event; the fault is injected mid-load; then ``fault_checks.evaluate``
checks rows, answers and recovery, and adds a row to the fault table printed at the end of the
run.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from harness.instances import AppInstance, running
from harness.pgbouncer import PgBouncer
from harness.redis_servers import RedisServer
from tests import factories
from tests.conftest import TEST_DATABASE_URL
from tests.faults.fault_checks import (
    FAULT_SETTINGS,
    LOCK_EXPIRE_SECONDS,
    LOCK_TAKING,
    Call,
    FaultCluster,
    FaultReport,
    FrozenHolder,
    LoadResult,
    Population,
    Stall,
    assert_clean,
    evaluate,
    freeze_lock_holder,
    load_driver,
    populate,
    register_table,
    running_load,
    terminate_app_backends,
    warm_up,
)
from tests.support.instances import instance_env

pytestmark = pytest.mark.slow

# How long the load keeps running after a fault ends; longer than every recovery bound.
OBSERVE_SECONDS = 6.0


@pytest.fixture(scope="module", params=["direct", "pgbouncer"])
def cluster(app: Flask, request: pytest.FixtureRequest) -> Iterator[FaultCluster]:
    """The instances talk to PostgreSQL directly, or through a PgBouncer in transaction mode."""
    # ``app`` first: it recreates the schema the instances are about to use.
    register_table(request.config)
    with ExitStack() as stack:
        lock_redis = stack.enter_context(RedisServer())
        settings = {"REDIS_URL": lock_redis.url, **FAULT_SETTINGS}
        pooler = None
        if request.param == "pgbouncer":
            pooler = stack.enter_context(PgBouncer(default_pool_size=10))
            settings["DATABASE_URL"] = pooler.url(TEST_DATABASE_URL.rsplit("/", 1)[1])
        env = instance_env(**settings)
        instances = [
            AppInstance(env, workers=2, threads=4, name=f"fault-{request.param}-{n}")
            for n in range(3)
        ]
        with running(instances):
            yield FaultCluster(instances, lock_redis, pgbouncer=pooler)


@pytest.fixture
def population(cluster: FaultCluster, client: FlaskClient) -> Population:
    """Fresh users and events (tables were emptied by ``clean_state``), a healthy cluster."""
    cluster.control().flushdb()
    cluster.wait_healthy()
    return populate(client)


def _answers(result: LoadResult, start: float, end: float) -> list[Call]:
    """Calls answered within the window."""
    return [c for c in result.calls if c.status is not None and start <= c.ended <= end]


def _check_exclusive(
    report: FaultReport, result: LoadResult, holder: FrozenHolder, event: int
) -> None:
    """Nobody may get the event's lock while the frozen holder's lease still runs."""
    lease_end = holder.frozen_at + holder.lease_left
    for call in result.calls:
        if (
            call.event_id == event
            and call.op in LOCK_TAKING
            and call.ok
            and call.started >= holder.frozen_at
            and call.ended < lease_end - 0.1  # clock slack
        ):
            report.violations.append(
                f"{call.op} on event {event} succeeded {lease_end - call.ended:.2f}s before the "
                "frozen holder's lease ran out"
            )


def test_worker_killed_while_holding_lock(cluster: FaultCluster, population: Population):
    """SIGKILL a worker inside its critical section: others book again once the lease expires."""
    driver = load_driver(cluster, population)
    with running_load(driver):
        warm_up(driver)
        holder, attempts = freeze_lock_holder(cluster, population.probe_event)
        os.kill(holder.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(LOCK_EXPIRE_SECONDS + OBSERVE_SECONDS)
    result = driver.stop()
    cluster.wait_healthy()  # gunicorn replaced the worker

    report = evaluate(
        cluster.fault("SIGKILL of a lock holder"),
        result,
        recovered_from=killed_at,
        # The lease has to run out first; then one lock wait and scheduling slack.
        recovery_bound=LOCK_EXPIRE_SECONDS + 3.0,
        recovery_events=[population.probe_event],
        stalls=[Stall(holder.instance, holder.frozen_at, killed_at)],
    )
    _check_exclusive(report, result, holder, population.probe_event)
    report.notes.append(
        f"holder {cluster.instances[holder.instance].name} pid {holder.pid} caught after "
        f"{attempts} attempt(s), {holder.lease_left:.2f}s of lease left"
    )
    assert_clean(report, cluster)


def test_lock_holder_paused_past_its_lease(cluster: FaultCluster, population: Population):
    """SIGSTOP a holder for longer than its lease, then SIGCONT.

    Others book the event once the lease has run out, the late holder's work cannot break the
    invariants (its session was ended, so its commit fails), and its lost lease is counted.
    """
    lost_before = [cluster.lock_lost_total(n) for n in range(len(cluster.instances))]
    driver = load_driver(cluster, population)
    with running_load(driver):
        warm_up(driver)
        holder, attempts = freeze_lock_holder(cluster, population.probe_event)
        try:
            paused_for = LOCK_EXPIRE_SECONDS + 2.0
            time.sleep(max(0.0, holder.frozen_at + paused_for - time.monotonic()))
        finally:
            os.kill(holder.pid, signal.SIGCONT)  # never leave a worker frozen
        resumed_at = time.monotonic()
        time.sleep(OBSERVE_SECONDS)
    result = driver.stop()

    report = evaluate(
        cluster.fault("SIGSTOP of a lock holder past its lease"),
        result,
        recovered_from=resumed_at,
        recovery_bound=3.0,
        recovery_events=[population.probe_event],
        # Requests the frozen worker had accepted could not be answered until SIGCONT.
        stalls=[Stall(holder.instance, holder.frozen_at, resumed_at)],
    )
    _check_exclusive(report, result, holder, population.probe_event)
    others = [
        call.ended - holder.frozen_at
        for call in result.calls
        if call.event_id == population.probe_event
        and call.op in LOCK_TAKING
        and call.ok
        and holder.frozen_at <= call.started
        and call.ended < resumed_at
    ]
    lost_after = cluster.lock_lost_total(holder.instance)
    report.notes.append(
        f"holder {cluster.instances[holder.instance].name} pid {holder.pid} caught after "
        f"{attempts} attempt(s), paused {resumed_at - holder.frozen_at:.2f}s; other workers "
        f"booked the event {len(others)} time(s) meanwhile"
        + (f", first after {min(others):.2f}s" if others else "")
        + f"; booking_lock_lost_total {lost_before[holder.instance]:g} -> {lost_after:g}"
    )
    if lost_after < lost_before[holder.instance] + 1:
        report.violations.append("the late holder's lost lease was not counted")
    if not others:
        # Its lease ran out and PostgreSQL ended its idle transaction (releasing the event's
        # row lock): nothing may keep the others waiting for the frozen holder.
        report.violations.append("nobody else booked the event while its holder was frozen")
    assert_clean(report, cluster)


def test_redis_stopped_and_restarted(
    cluster: FaultCluster, population: Population, client: FlaskClient
):
    """Redis goes away for 3 s: bookings fail closed with 503, cancels go on, then recovery."""
    # A booking outside the load (the in-process app locks on the suite's other Redis), to
    # cancel through the cluster while its Redis is down: freeing a seat needs no lock.
    organizer, customer = factories.organizer(client), factories.customer(client)
    aside = factories.create_event(client, organizer["token"], capacity=1)["id"]
    booking = factories.book(client, customer["token"], aside).get_json()["id"]

    driver = load_driver(cluster, population)
    with running_load(driver):
        warm_up(driver)
        assert cluster.redis is not None
        cluster.redis.stop()
        stopped_at = time.monotonic()
        try:
            time.sleep(1.0)
            cancel = requests.post(
                f"{cluster.urls[0]}{factories.API}/bookings/{booking}/cancel",
                headers=factories.auth(customer["token"]),
                timeout=10,
            )
            time.sleep(2.0)
        finally:
            restarting_at = time.monotonic()
            cluster.redis.start()  # same port, empty: every lease is gone
        restarted_at = time.monotonic()  # it answers PING
        time.sleep(OBSERVE_SECONDS)
    result = driver.stop()

    report = evaluate(
        cluster.fault("Redis stopped and restarted"),
        result,
        recovered_from=restarted_at,
        recovery_bound=5.0,
    )
    during = _answers(result, stopped_at + 0.2, restarting_at)
    refused = [c for c in during if c.status == 503 and c.code == "lock_unavailable"]
    report.notes.append(
        f"during the outage: {len(refused)} lock_unavailable; a cancel answered "
        f"{cancel.status_code}"
    )
    if not refused:
        report.violations.append(
            "no booking was refused with lock_unavailable while Redis was down"
        )
    if cancel.status_code != 200 or factories.booking_status(booking) != "cancelled":
        report.violations.append(
            f"a cancel (no lock needed) failed while Redis was down: {cancel.status_code}"
        )
    if any(c.op in LOCK_TAKING and c.ok and c.started > stopped_at + 0.2 for c in during):
        report.violations.append("a booking succeeded without the lock while Redis was down")
    assert_clean(report, cluster)


def test_redis_paused_longer_than_lock_wait(cluster: FaultCluster, population: Population):
    """CLIENT PAUSE for 3 s (lock wait 1 s): bounded 503s, no stuck requests, then recovery.

    A request that meets the pause waits for Redis up to its socket timeout (and the client's
    one retry), then answers 503 or goes on once Redis is back; which of the two depends on
    where in the pause it started, so the proof that the pause bit is that nothing was
    answered during it but 503s, and that requests were refused or held up by it."""
    pause_seconds = 3.0
    driver = load_driver(cluster, population)
    with running_load(driver):
        warm_up(driver)
        cluster.control().execute_command("CLIENT", "PAUSE", int(pause_seconds * 1000), "ALL")
        paused_at = time.monotonic()
        time.sleep(pause_seconds)
        unpaused_at = time.monotonic()
        time.sleep(OBSERVE_SECONDS)
    result = driver.stop()

    report = evaluate(
        cluster.fault("Redis paused (CLIENT PAUSE) 3s"),
        result,
        recovered_from=unpaused_at,
        # Leases taken by commands that ran only after their client gave up must expire.
        recovery_bound=LOCK_EXPIRE_SECONDS + 3.0,
    )
    during = _answers(result, paused_at, unpaused_at + 1.0)
    refused = [c for c in during if c.status == 503]
    # Answered while Redis was still paused, other than refused: only a request that never
    # needed Redis could be, and every one needs it for its session.
    slipped = [c for c in _answers(result, paused_at + 0.1, unpaused_at - 0.1) if c.status != 503]
    held_up = [c for c in result.calls if c.started < unpaused_at < c.ended and c.elapsed >= 1.0]
    report.notes.append(
        f"during the pause: {len(refused)} answered 503, {len(held_up)} held up until it ended"
    )
    if slipped:
        report.violations.append(f"{len(slipped)} request(s) answered while Redis was paused")
    if not refused and not held_up:
        report.violations.append("no request was refused or held up while Redis was paused")
    assert_clean(report, cluster)


def test_postgres_backends_terminated(cluster: FaultCluster, population: Population):
    """pg_terminate_backend on every app connection, ten times a second for 3 s."""
    driver = load_driver(cluster, population)
    terminated = 0
    with running_load(driver):
        warm_up(driver)
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            terminated += terminate_app_backends(TEST_DATABASE_URL)
            time.sleep(0.1)
        ended = time.monotonic()
        time.sleep(OBSERVE_SECONDS)
    result = driver.stop()

    report = evaluate(
        cluster.fault("PostgreSQL backends terminated"),
        result,
        recovered_from=ended,
        recovery_bound=3.0,
    )
    during = _answers(result, started, ended + 0.5)
    refused = [c for c in during if c.status == 503 and c.code == "db_unavailable"]
    report.notes.append(
        f"{terminated} backends terminated; {len(refused)} requests answered db_unavailable"
    )
    if not terminated:
        report.violations.append("no app backend was found to terminate")
    assert_clean(report, cluster)


@pytest.mark.parametrize("cluster", ["pgbouncer"], indirect=True)
def test_pgbouncer_restarted(cluster: FaultCluster, population: Population):
    """Restart the pooler under load: every app connection to it drops at once."""
    assert cluster.pgbouncer is not None
    driver = load_driver(cluster, population)
    with running_load(driver):
        warm_up(driver)
        started = time.monotonic()
        cluster.pgbouncer.restart()
        ended = time.monotonic()
        time.sleep(OBSERVE_SECONDS)
    result = driver.stop()

    report = evaluate(
        "PgBouncer restarted",
        result,
        recovered_from=ended,
        # The first request on each dead pooled connection fails; the pool then replaces
        # every connection of that generation.
        recovery_bound=3.0,
    )
    during = _answers(result, started, ended + 1.0)
    refused = [c for c in during if c.status == 503 and c.code == "db_unavailable"]
    report.notes.append(
        f"down for {ended - started:.2f}s; {len(refused)} requests answered db_unavailable"
    )
    assert_clean(report, cluster)
