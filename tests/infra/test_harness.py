"""The real-process harness itself: PgBouncer, roles with a connection limit, Redis Cluster.

Each test also pins down a behaviour of the real pooler or cluster that the service has to
live with: what transaction pooling does to session state, what a pooler refuses at login,
which multi-key scripts a cluster runs, and how a cluster client sees a failover.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from booking_service import migrate
from harness.database import limited_role, superuser_connection
from harness.pgbouncer import PgBouncer
from harness.redis_cluster import RedisClusterGroup

pytestmark = pytest.mark.slow

# Our own database: the pooler checks need no schema and must not disturb the suite's.
HARNESS_DATABASE = "booking_harness_test"


@pytest.fixture(scope="module")
def harness_database() -> str:
    migrate.ensure_database(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{HARNESS_DATABASE}")
    return HARNESS_DATABASE


def backend_pid(connection: psycopg2.extensions.connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
        assert row is not None
        return int(row[0])


# --- PgBouncer ------------------------------------------------------------------------------


def test_transaction_pooling_moves_a_client_between_server_sessions(harness_database: str):
    with PgBouncer(default_pool_size=2) as pgbouncer:
        first, other = pgbouncer.connect(harness_database), pgbouncer.connect(harness_database)
        try:
            before = backend_pid(first)
            first.commit()  # its server session goes back to the pool, the only one there
            held = backend_pid(other)  # other's open transaction now holds that session
            after = backend_pid(first)  # so first's next transaction needs a second one
            assert held == before
            assert after != before
            servers = pgbouncer.show("SERVERS")
            assert {server["remote_pid"] for server in servers} == {before, after}, servers
        finally:
            first.close()
            other.close()


def test_prepared_statement_is_lost_when_the_server_session_changes(harness_database: str):
    """Why the service must not PREPARE once per client connection behind a pooler."""
    with PgBouncer(default_pool_size=2) as pgbouncer:
        first, other = pgbouncer.connect(harness_database), pgbouncer.connect(harness_database)
        try:
            with first.cursor() as cursor:
                cursor.execute("PREPARE seats (int) AS SELECT $1 + 1")
                cursor.execute("EXECUTE seats (1)")  # fine within the same transaction
                assert cursor.fetchone() == (2,)
            first.commit()
            backend_pid(other)  # takes the session that knows "seats"
            with (
                first.cursor() as cursor,
                pytest.raises(psycopg2.errors.InvalidSqlStatementName) as error,
            ):
                cursor.execute("EXECUTE seats (1)")
            assert 'prepared statement "seats" does not exist' in str(error.value)
        finally:
            first.close()
            other.close()


def test_startup_options_are_refused(harness_database: str):
    """libpq's ``options`` (how the service set statement_timeout per session) is refused."""
    with PgBouncer() as pgbouncer:
        with pytest.raises(psycopg2.OperationalError) as error:
            pgbouncer.connect(harness_database, options="-c statement_timeout=1000")
        assert "unsupported startup parameter: options" in str(error.value)
        # The same login without it works, through the SQLAlchemy URL the service would use.
        engine = create_engine(pgbouncer.url(harness_database))
        try:
            with engine.connect() as connection:
                assert connection.scalar(text("SELECT current_database()")) == harness_database
        finally:
            engine.dispose()


def test_set_local_statement_timeout_works_through_the_pooler(harness_database: str):
    with PgBouncer() as pgbouncer:
        engine = create_engine(pgbouncer.url(harness_database), pool_size=1, max_overflow=0)
        try:
            with engine.connect() as connection:
                transaction = connection.begin()
                connection.execute(text("SET LOCAL statement_timeout = 200"))
                started = time.monotonic()
                with pytest.raises(OperationalError, match="canceling statement due to statement"):
                    connection.execute(text("SELECT pg_sleep(3)"))
                assert time.monotonic() - started < 2
                transaction.rollback()
                # LOCAL ends with the transaction: the server session goes back to the pool
                # without it, whoever gets that session next.
                assert connection.scalar(text("SHOW statement_timeout")) == "0"
        finally:
            engine.dispose()


def test_restart_drops_clients_and_serves_new_ones_on_the_same_port(harness_database: str):
    with PgBouncer() as pgbouncer:
        port = pgbouncer.port
        old = pgbouncer.connect(harness_database)
        backend_pid(old)
        old.commit()
        pgbouncer.restart()
        assert pgbouncer.port == port
        with pytest.raises(psycopg2.OperationalError):
            backend_pid(old)
        old.close()
        new = pgbouncer.connect(harness_database)
        try:
            assert backend_pid(new) > 0
        finally:
            new.close()


def test_limited_role_is_capped_directly_but_not_behind_the_pooler(harness_database: str):
    name = f"booking_limited_{os.getpid()}"  # roles are cluster-wide: one per test run
    with limited_role(name, 2, harness_database) as role:
        direct = [
            psycopg2.connect(host="127.0.0.1", port=5432, dbname=harness_database, user=role)
            for _ in range(2)
        ]
        try:
            with pytest.raises(psycopg2.OperationalError) as error:
                psycopg2.connect(host="127.0.0.1", port=5432, dbname=harness_database, user=role)
            assert f'too many connections for role "{role}"' in str(error.value)
        finally:
            for connection in direct:
                connection.close()
        wait_for_no_sessions(role)

        clients = 20
        with PgBouncer(default_pool_size=2, roles=(role,)) as pgbouncer:
            # Every client connected at once, then each runs a transaction that takes a while.
            barrier = threading.Barrier(clients)
            users: list[str] = []
            failures: list[BaseException] = []

            def client() -> None:
                try:
                    connection = pgbouncer.connect(harness_database, user=role)
                    try:
                        barrier.wait(timeout=10)
                        with connection.cursor() as cursor:
                            cursor.execute("SELECT current_user FROM pg_sleep(0.05)")
                            row = cursor.fetchone()
                        connection.commit()
                        assert row is not None
                        users.append(row[0])
                    finally:
                        connection.close()
                except BaseException as exc:  # reported below
                    failures.append(exc)

            threads = [threading.Thread(target=client) for _ in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert not failures, f"{failures[:3]}\n{pgbouncer.log()[-3000:]}"
            assert users == [role] * clients
            servers = [s for s in pgbouncer.show("SERVERS") if s["user"] == role]
            assert len(servers) <= 2, servers


def wait_for_no_sessions(role: str, timeout: float = 5) -> None:
    """Closed sessions leave PostgreSQL a moment after the client hangs up."""
    deadline = time.monotonic() + timeout
    connection = superuser_connection()
    try:
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))
                row = cursor.fetchone()
                if row is not None and row[0] == 0:
                    return
                time.sleep(0.05)
    finally:
        connection.close()
    raise TimeoutError(f"sessions of {role} still open after {timeout}s")


# --- Redis Cluster --------------------------------------------------------------------------
# One cluster for the tests below, in file order: the graceful failover, then the kill.

TAG = "{42}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterGroup]:
    with RedisClusterGroup() as group:
        yield group


@pytest.fixture
def cluster_client(cluster: RedisClusterGroup) -> Iterator[RedisCluster]:
    client = cluster.client()
    yield client
    client.close()


def test_cluster_comes_up(cluster: RedisClusterGroup, cluster_client: RedisCluster):
    assert cluster.nodes == ",".join(f"127.0.0.1:{port}" for port in cluster.ports)
    roles = sorted(cluster.role(port) for port in cluster.ports)
    assert roles == ["master"] * 3 + ["slave"] * 3
    for port in cluster.ports:
        assert cluster.node(port).cluster("INFO")["cluster_state"] == "ok"
    assert cluster_client.set("harness:up", "1")
    assert cluster_client.get("harness:up") == "1"


def test_hash_tag_decides_the_slot(cluster: RedisClusterGroup, cluster_client: RedisCluster):
    expected = key_slot(b"42")  # CRC16 of what is inside the braces, modulo 16384
    for key in (TAG, f"event:{TAG}:lock", f"event:{TAG}:seats"):
        assert cluster.keyslot(key) == expected
    cluster_client.set(f"event:{TAG}:lock", "holder")
    owner = cluster.primary_for(f"event:{TAG}:lock")
    assert cluster.node(owner).cluster("COUNTKEYSINSLOT", expected) == 1


SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('SET', KEYS[2], ARGV[1])"


def test_script_keys_must_share_a_slot(cluster: RedisClusterGroup, cluster_client: RedisCluster):
    apart = ("event:1:lock", "event:2:seats")
    assert cluster.keyslot(apart[0]) != cluster.keyslot(apart[1])
    # The server refuses it (asked directly, so no client-side check gets in the way) with
    # "CROSSSLOT Keys in request don't hash to the same slot"; redis-py raises the error
    # class of the code and keeps the rest as the message...
    node = cluster.node(cluster.primary_for(apart[0]))
    with pytest.raises(ClusterCrossSlotError, match="don't hash to the same slot"):
        node.eval(SCRIPT, 2, *apart, "x")
    # ...and redis-py's cluster client refuses it before sending anything.
    with pytest.raises(redis.RedisClusterException, match="same key slot"):
        cluster_client.eval(SCRIPT, 2, *apart, "x")
    together = (f"event:{TAG}:lock", f"event:{TAG}:seats")
    assert cluster_client.eval(SCRIPT, 2, *together, "x") == "OK"
    assert cluster_client.get(together[1]) == "x"


def test_graceful_failover_swaps_roles(cluster: RedisClusterGroup, cluster_client: RedisCluster):
    cluster_client.set(f"event:{TAG}:lock", "before")
    primary = cluster.primary_for(TAG)
    replica = cluster.replica_of(primary)
    cluster.failover(replica)
    cluster.wait_for_ok(10, key=TAG)
    assert cluster.role(replica) == "master"
    assert cluster.role(primary) == "slave"
    assert cluster.primary_for(TAG) == replica
    assert cluster.replica_of(replica) == primary
    # The client follows the MOVED answer by itself; a manual failover loses no write.
    assert cluster_client.get(f"event:{TAG}:lock") == "before"
    assert cluster_client.set(f"event:{TAG}:lock", "after")


def test_killed_primary_is_replaced(cluster: RedisClusterGroup, cluster_client: RedisCluster):
    cluster_client.set(f"event:{TAG}:lock", "before")
    primary = cluster.primary_for(TAG)
    replica = cluster.replica_of(primary)
    cluster.kill_primary(primary)
    # Until the replica is promoted (node timeout, then an election) commands for the slot
    # fail fast: the client's own retries all meet a refused connection.
    with pytest.raises(redis.ConnectionError):
        cluster_client.set(f"event:{TAG}:lock", "during")
    waited = cluster.wait_for_ok(10, key=TAG)
    assert waited < 10
    assert cluster.primary_for(TAG) == replica
    fresh = cluster.client()
    try:
        assert fresh.set(f"event:{TAG}:lock", "after")
    finally:
        fresh.close()
    # The old client refreshes its slot map on the connection error and carries on.
    assert cluster_client.set(f"event:{TAG}:lock", "after-old-client")
    # The dead node comes back as the replica of the one that took over.
    cluster.restart_node(primary)
    assert cluster.role(primary) == "slave"
    assert cluster.replica_of(replica) == primary
    cluster.wait_for_ok(10)
