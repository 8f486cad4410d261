"""Three gunicorn instances (2 workers x 8 threads each) on the test database, in three set-ups.

- ``direct``: straight to PostgreSQL, locks in a private Redis;
- ``pgbouncer``: through a real PgBouncer in transaction pooling, so consecutive transactions
  of one pooled connection run on different server sessions;
- ``redis-cluster``: locks, statistics and rate limits in a real Redis Cluster (3 primaries,
  3 replicas), every multi-key command in one slot.

Each set-up is started once for the tier; every test still gets empty tables (``clean_state``)
and an empty lock Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from flask import Flask

from harness.instances import AppInstance, running
from harness.pgbouncer import PgBouncer
from harness.redis_cluster import RedisClusterGroup
from harness.redis_servers import RedisServer
from tests.conftest import TEST_DATABASE_URL
from tests.support.instances import Cluster, instance_env

# Lock holds are milliseconds; a generous wait keeps a loaded 2-core machine from turning
# contention into 503s, so any 5xx in these tests is a real failure.
LOCK_WAIT_SECONDS = 5
SETUPS = ("direct", "pgbouncer", "redis-cluster")
# Three, so that a hot event's batches span instances as well as workers (the seat ledger).
INSTANCES = 3
OPS_TOKEN = "concurrency-tier-ops-token"
# Low enough for test_shared_state.py to reach; nothing else here signs in through the
# instances (the other tests' users come from the in-process client).
LOGIN_LIMIT = 4


@pytest.fixture(scope="package", params=SETUPS)
def cluster(app: Flask, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # ``app`` first: it recreates the schema the instances are about to use.
    settings: dict[str, Any] = {
        "LOCK_WAIT_SECONDS": LOCK_WAIT_SECONDS,
        "OPS_TOKEN": OPS_TOKEN,
        "RATE_LIMIT_LOGIN": f"{LOGIN_LIMIT}/minute",
    }
    with ExitStack() as stack:
        if request.param == "redis-cluster":
            lock_redis: RedisServer | RedisClusterGroup = stack.enter_context(RedisClusterGroup())
            settings["REDIS_CLUSTER_NODES"] = lock_redis.nodes
        else:
            lock_redis = stack.enter_context(RedisServer())
            settings["REDIS_URL"] = lock_redis.url
        if request.param == "pgbouncer":
            pooler = stack.enter_context(PgBouncer(default_pool_size=10))
            settings["DATABASE_URL"] = pooler.url(TEST_DATABASE_URL.rsplit("/", 1)[1])
        env = instance_env(**settings)
        instances = [
            AppInstance(env, workers=2, threads=8, name=f"conc-{request.param}-{n}")
            for n in range(INSTANCES)
        ]
        with running(instances):
            yield Cluster(instances, lock_redis)


@pytest.fixture
def lock_redis(cluster: Cluster) -> Any:
    client = cluster.redis.client()
    client.flushdb()
    return client
