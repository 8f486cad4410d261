"""Two gunicorn instances (2 workers x 8 threads each) on the test database and a private Redis.

Started once for the whole tier; every test still gets empty tables (``clean_state``) and an
empty lock Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from tests.support.instances import Cluster, instance_env, running
from tests.support.servers import AppInstance, RedisServer

# Lock holds are milliseconds; a generous wait keeps a loaded 2-core machine from turning
# contention into 503s, so any 5xx in these tests is a real failure.
LOCK_WAIT_SECONDS = 5


@pytest.fixture(scope="package")
def cluster(app: Flask) -> Iterator[Cluster]:
    # ``app`` first: it recreates the schema the instances are about to use.
    with RedisServer() as lock_redis:
        env = instance_env(REDIS_URL=lock_redis.url, LOCK_WAIT_SECONDS=LOCK_WAIT_SECONDS)
        instances = [AppInstance(env, workers=2, threads=8, name=f"conc-{n}") for n in range(2)]
        with running(instances):
            yield Cluster(instances, lock_redis)


@pytest.fixture
def lock_redis(cluster: Cluster) -> redis.Redis:
    client = cluster.redis.client()
    client.flushdb()
    return client
