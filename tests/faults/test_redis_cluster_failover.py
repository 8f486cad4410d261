"""Redis Cluster: a primary fails (killed, or handed over by CLUSTER FAILOVER) under booking load.

Three instances keep booking, cancelling and reactivating on events whose keys spread over the
cluster's three primaries. While the primary that serves the busiest events' slot is gone,
requests on those events fail closed (503 with Retry-After); the others carry on. Replication
is asynchronous, so a lease written just before the kill may be missing on the promoted
replica, and PostgreSQL still arbitrates (docs/architecture.md, "Correctness model"): the row
checks verify it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from booking_service.locking import lock_key
from harness.instances import AppInstance, running
from harness.redis_cluster import RedisClusterGroup
from tests.faults.fault_checks import (
    FAULT_SETTINGS,
    LOCK_TAKING,
    Call,
    FaultCluster,
    FaultReport,
    Population,
    assert_clean,
    evaluate,
    load_driver,
    populate,
    register_table,
    running_load,
    warm_up,
)
from tests.support.instances import instance_env

pytestmark = pytest.mark.slow

NODE_TIMEOUT_MS = 1000
# The replicas notice the dead primary (node timeout), one is elected and takes the slots, and
# each client's next command on those slots follows the new slot map.
RECOVERY_BOUND_SECONDS = NODE_TIMEOUT_MS / 1000 + 9.0
OBSERVE_SECONDS = 6.0


@pytest.fixture(scope="module")
def redis_cluster(app: Flask, request: pytest.FixtureRequest) -> Iterator[RedisClusterGroup]:
    register_table(request.config)
    with RedisClusterGroup(node_timeout_ms=NODE_TIMEOUT_MS) as group:
        yield group


@pytest.fixture(scope="module")
def cluster(redis_cluster: RedisClusterGroup) -> Iterator[FaultCluster]:
    env = instance_env(REDIS_CLUSTER_NODES=redis_cluster.nodes, **FAULT_SETTINGS)
    instances = [AppInstance(env, workers=2, threads=4, name=f"cluster-{n}") for n in range(3)]
    with running(instances):
        yield FaultCluster(instances)


@pytest.fixture
def population(
    cluster: FaultCluster, redis_cluster: RedisClusterGroup, client: FlaskClient
) -> Population:
    redis_cluster.wait_for_ok(timeout=30)
    redis_cluster.client().flushdb()
    cluster.wait_healthy()
    return populate(client)


def _primary_of_the_busiest_events(group: RedisClusterGroup, population: Population) -> int:
    """The primary serving the slot of most of the load's events."""
    ports = [group.primary_for(lock_key(event)) for event in population.capacities]
    return max(set(ports), key=ports.count)


def _note_failover(
    report: FaultReport, calls: list[Call], *, since: float, until: float, what: str
) -> None:
    refused = [c for c in calls if since <= c.started <= until and c.status == 503]
    booked_after = [c for c in calls if c.op in LOCK_TAKING and c.ok and c.started >= until]
    report.notes.append(
        f"{what} after {until - since:.2f}s; {len(refused)} answered 503 meanwhile; "
        f"{len(booked_after)} bookings/reactivations after it"
    )


def test_primary_killed_and_replica_promoted(
    cluster: FaultCluster, redis_cluster: RedisClusterGroup, population: Population
):
    primary = _primary_of_the_busiest_events(redis_cluster, population)
    driver = load_driver(cluster, population)
    with running_load(driver):
        warm_up(driver)
        redis_cluster.kill_primary(primary)
        killed_at = time.monotonic()
        redis_cluster.wait_for_ok(timeout=30)
        recovered_at = time.monotonic()
        time.sleep(OBSERVE_SECONDS)
    result = driver.stop()

    report = evaluate(
        "Redis Cluster primary killed, replica promoted",
        result,
        recovered_from=killed_at,
        recovery_bound=RECOVERY_BOUND_SECONDS,
    )
    _note_failover(
        report,
        result.calls,
        since=killed_at,
        until=recovered_at,
        what=f"primary 127.0.0.1:{primary} killed; slots served again",
    )
    if not [c for c in result.calls if killed_at <= c.started <= recovered_at and c.status == 503]:
        report.violations.append("nothing was refused while the slots had no primary")
    assert_clean(report, cluster)
    redis_cluster.restart_node(primary)  # back as a replica, for the next test


def test_manual_failover_under_load(
    cluster: FaultCluster, redis_cluster: RedisClusterGroup, population: Population
):
    primary = _primary_of_the_busiest_events(redis_cluster, population)
    replica = redis_cluster.replica_of(primary)
    driver = load_driver(cluster, population)
    with running_load(driver):
        warm_up(driver)
        started = time.monotonic()
        redis_cluster.failover(replica)
        done = time.monotonic()
        time.sleep(OBSERVE_SECONDS)
    result = driver.stop()

    report = evaluate(
        "Redis Cluster manual failover (CLUSTER FAILOVER)",
        result,
        recovered_from=started,
        recovery_bound=RECOVERY_BOUND_SECONDS,
    )
    _note_failover(
        report,
        result.calls,
        since=started,
        until=done,
        what=f"replica 127.0.0.1:{replica} took over from 127.0.0.1:{primary}",
    )
    assert_clean(report, cluster)
