"""Redis primary killed under Sentinel, a replica promoted, in the middle of booking load.

Replication is asynchronous, so leases written to the old primary just before it died may be
missing on the new one: for a moment two requests may both believe they hold an event's lock.
PostgreSQL still arbitrates (docs/architecture.md, "Correctness model"), which is what the row
checks verify.
"""

from __future__ import annotations

import time

import pytest
from flask import Flask
from flask.testing import FlaskClient

from harness.instances import AppInstance, running
from harness.redis_servers import RedisSentinelGroup
from tests.faults.fault_checks import (
    FAULT_SETTINGS,
    LOCK_TAKING,
    FaultCluster,
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

DOWN_AFTER_MS = 1000
# Sentinels notice the dead primary (down-after), agree, elect and promote (about a second or
# two on loopback); then each worker's next connection asks the sentinels for the new primary.
RECOVERY_BOUND_SECONDS = DOWN_AFTER_MS / 1000 + 9.0
OBSERVE_SECONDS = 6.0


def test_redis_primary_killed_and_replica_promoted(
    app: Flask, client: FlaskClient, request: pytest.FixtureRequest
):
    # ``app`` first: it recreates the schema the instances are about to use.
    register_table(request.config)
    with RedisSentinelGroup(sentinels=3, down_after_ms=DOWN_AFTER_MS) as group:
        env = instance_env(
            REDIS_SENTINELS=group.sentinel_addresses,
            REDIS_SENTINEL_SERVICE=group.service,
            **FAULT_SETTINGS,
        )
        instances = [AppInstance(env, workers=2, threads=4, name=f"sentinel-{n}") for n in range(3)]
        with running(instances):
            cluster = FaultCluster(instances, sentinels=group)
            cluster.wait_healthy()
            driver = load_driver(cluster, populate(client))
            with running_load(driver):
                warm_up(driver)
                old_primary = group.primary_address()
                group.kill_primary()
                killed_at = time.monotonic()
                group.wait_for_failover(timeout=30)
                promoted_at = time.monotonic()
                time.sleep(OBSERVE_SECONDS)
            result = driver.stop()
            report = evaluate(
                "Redis primary killed, Sentinel failover",
                result,
                recovered_from=killed_at,
                recovery_bound=RECOVERY_BOUND_SECONDS,
            )
            report.notes.append(
                f"primary {old_primary} killed; replica 127.0.0.1:{group.replica_port} promoted "
                f"after {promoted_at - killed_at:.2f}s"
            )
            refused = [
                c for c in result.calls if killed_at <= c.started <= promoted_at and c.status == 503
            ]
            booked_after = [
                c for c in result.calls if c.op in LOCK_TAKING and c.ok and c.started >= promoted_at
            ]
            report.notes.append(
                f"{len(refused)} answered 503 during the failover; "
                f"{len(booked_after)} bookings/reactivations after it"
            )
            if not refused:
                report.violations.append("nothing was refused while there was no primary")
            assert_clean(report, cluster)
