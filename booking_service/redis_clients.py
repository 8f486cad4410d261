"""The Redis client of the locks, rate limits, sessions and snapshots: one server, a primary
found through Sentinel, or a Redis Cluster; and ``round_trip``, the pipelining the hot path uses.

Created once per process and configured by ``create_app``; nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from booking_service.config import parse_host_ports

# A plain, Sentinel-managed or cluster client; they share the commands the service uses.
RedisConnection = redis.Redis | RedisCluster
# What "Redis did not answer" looks like: a cluster client raises some of its own errors (a
# slot without a live primary during a failover) outside redis-py's RedisError hierarchy.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)


class RedisClient:
    """The shared Redis client of the event locks, lock statistics and the live lock view.

    One of three deployments: a single server (REDIS_URL), a primary found through Sentinel
    (REDIS_SENTINELS), or a Redis Cluster (REDIS_CLUSTER_NODES), whose keys the service keeps
    in one slot wherever one command or script touches several (docs/architecture.md,
    "Scaling out: PgBouncer and Redis Cluster").
    """

    def __init__(self) -> None:
        self.client: RedisConnection | None = None

    def configure(self, config: dict[str, Any]) -> None:
        socket_timeout = config["REDIS_SOCKET_TIMEOUT_SECONDS"]
        options: dict[str, Any] = {
            "socket_connect_timeout": socket_timeout,
            # BLPOP waits up to the lock wait; the socket must outlast it.
            "socket_timeout": config["LOCK_WAIT_SECONDS"] + socket_timeout,
            # One immediate retry covers a pooled connection that died with a Redis restart
            # (or a failover: through Sentinel or the cluster's slot map the retry reaches the
            # new primary); the client's default exponential backoff would hold requests for
            # seconds.
            "retry": Retry(NoBackoff(), 1),
        }
        if config.get("REDIS_PASSWORD"):
            options["password"] = config["REDIS_PASSWORD"]
        if config.get("REDIS_CLUSTER_NODES"):
            nodes = parse_host_ports("REDIS_CLUSTER_NODES", config["REDIS_CLUSTER_NODES"])
            self.client = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in nodes], **options
            )
            return
        options["retry_on_timeout"] = False
        if not config.get("REDIS_SENTINELS"):
            self.client = redis.Redis.from_url(config["REDIS_URL"], **options)
            return
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
        }
        if config.get("REDIS_SENTINEL_PASSWORD"):
            sentinel_kwargs["password"] = config["REDIS_SENTINEL_PASSWORD"]
        sentinel = Sentinel(
            parse_host_ports("REDIS_SENTINELS", config["REDIS_SENTINELS"]),
            sentinel_kwargs=sentinel_kwargs,
        )
        # The pool asks the sentinels for the current primary whenever it opens a connection.
        self.client = sentinel.master_for(
            config["REDIS_SENTINEL_SERVICE"], db=config["REDIS_DB"], **options
        )

    def get(self) -> RedisConnection:
        if self.client is None:
            raise RuntimeError("Redis used before configure()")
        return self.client


def round_trip(client: RedisConnection, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write and read their raw replies: a pipeline without
    transaction.

    redis-py's Pipeline object, retry wrapper and reply callbacks cost about as much
    CPU as the round trip itself; the admission of every booking request makes one, so
    on a single server or through Sentinel this talks to a pooled connection directly.
    A cluster client routes each key to its node through a Pipeline. Replies come
    unconverted (GET bytes, INCR and TTL integers). A connection that fails to answer is
    retried once on a fresh one, as the client's own retry does after a Redis restart.
    """
    if isinstance(client, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()
    try:
        return _send_and_read(client.connection_pool, commands)
    except redis.ConnectionError:
        # A pooled connection that died with a Redis restart: once more, on a fresh one.
        return _send_and_read(client.connection_pool, commands)


def _send_and_read(pool: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    connection = pool.get_connection()
    try:
        connection.send_packed_command(connection.pack_commands(commands))
        return [connection.read_response() for _ in commands]
    except BaseException:
        connection.disconnect()  # replies may be left unread: never reuse it
        raise
    finally:
        pool.release(connection)


redis_client = RedisClient()
