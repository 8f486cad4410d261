"""A real Redis Cluster: three primaries and three replicas, each its own redis-server process.

Every node binds to 127.0.0.1 on a free port, with its cluster bus on a second free port (the
default bus port, port + 10000, may be past 65535 for an ephemeral port), keeps nothing on disk
and logs to a temporary directory. Stop it as a context manager.

The concurrency and fault tests run the service's locks, statistics and rate limits on it.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from harness.processes import ProcessGroup, free_port, wait_until
from harness.redis_servers import pings

CLUSTER_SLOTS = 16384


class RedisClusterGroup(ProcessGroup):
    """Six redis-server processes joined by ``redis-cli --cluster create`` (one replica each)."""

    def __init__(self, *, primaries: int = 3, node_timeout_ms: int = 1000) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.ports = [free_port() for _ in range(primaries * 2)]
        self._bus_ports = {port: free_port() for port in self.ports}
        super().__init__("booking-redis-cluster-")

    @property
    def nodes(self) -> str:
        """Every node as REDIS_CLUSTER_NODES wants them: ``host:port,host:port``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def _spawn(self, port: int) -> None:
        workdir = self._dir / str(port)
        workdir.mkdir(exist_ok=True)
        self._processes[port] = subprocess.Popen(
            [
                "redis-server",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-port", str(self._bus_ports[port]),
                # Kept across restart_node(): the node comes back knowing the cluster.
                "--cluster-config-file", str(workdir / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--save", "",
                "--appendonly", "no",
                # A primary otherwise waits 5 s for more replicas before a full sync.
                "--repl-diskless-sync-delay", "0",
                "--dir", str(workdir),
                "--logfile", str(workdir / "log"),
            ]
        )  # fmt: skip

    def start(self) -> RedisClusterGroup:
        for port in self.ports:
            self._spawn(port)
        for port in self.ports:
            wait_until(lambda port=port: pings(port), timeout=10, what=f"redis node {port}")
        create = subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        (self._dir / "create.log").write_text(create.stdout + create.stderr)
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{self.logs()}")
        wait_until(self._formed, timeout=30, interval=0.1, what="redis cluster formed")
        return self

    def _formed(self) -> bool:
        """Every node sees the whole cluster ok and every replica has its primary's data."""
        try:
            for port in self.ports:
                client = _client(port)
                info = client.cluster("INFO")
                if info.get("cluster_state") != "ok":
                    return False
                if int(info.get("cluster_known_nodes", 0)) != len(self.ports):
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
        except redis.RedisError:
            return False
        return True

    def alive(self, port: int) -> bool:
        process = self._processes.get(port)
        return process is not None and process.poll() is None

    def live_ports(self) -> list[int]:
        return [port for port in self.ports if self.alive(port)]

    def client(self, **kwargs: Any) -> RedisCluster:
        """A redis-py cluster client knowing every live node (keyword arguments go to it)."""
        startup = [ClusterNode("127.0.0.1", port) for port in self.live_ports()]
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", 2)
        kwargs.setdefault("socket_connect_timeout", 2)
        return RedisCluster(startup_nodes=startup, **kwargs)

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (no redirections followed)."""
        return _client(port)

    def keyslot(self, key: str) -> int:
        return int(_client(self.live_ports()[0]).cluster("KEYSLOT", key))

    def slot_owner(self, slot: int, *, via: int | None = None) -> int:
        """Port of the primary serving ``slot`` as node ``via`` (any live node) sees it."""
        for start, end, primary in self.slot_map(via or self.live_ports()[0]):
            if start <= slot <= end:
                return primary
        raise LookupError(f"slot {slot} is not covered")

    def primary_for(self, key: str) -> int:
        return self.slot_owner(self.keyslot(key))

    def role(self, port: int) -> str:
        """``master`` or ``slave``, as the node itself says."""
        return str(_client(port).info("replication")["role"])

    def replica_of(self, primary_port: int) -> int:
        """Port of a live replica of the primary on ``primary_port``."""
        for port in self.live_ports():
            if port == primary_port:
                continue
            try:
                info = _client(port).info("replication")
            except redis.RedisError:
                continue
            if info["role"] == "slave" and int(info["master_port"]) == primary_port:
                return port
        raise LookupError(f"no live replica of {primary_port}")

    def kill_primary(self, port: int) -> None:
        """SIGKILL a node: no goodbye to clients or to the other nodes."""
        process = self._processes[port]
        process.kill()
        process.wait(timeout=10)

    def failover(self, replica_port: int, *, timeout: float = 10) -> None:
        """Graceful manual failover: the replica catches up with its primary and takes over.

        Returns once the two nodes say they swapped roles and the old primary, now a replica,
        is in sync again (so it could take over in turn).
        """
        old_primary = int(_client(replica_port).info("replication")["master_port"])
        _client(replica_port).cluster("FAILOVER")

        def swapped() -> bool:
            try:
                replication = _client(old_primary).info("replication")
                return (
                    self.role(replica_port) == "master"
                    and replication["role"] == "slave"
                    and replication["master_link_status"] == "up"
                )
            except redis.RedisError:
                return False

        wait_until(swapped, timeout=timeout, interval=0.1, what=f"failover to {replica_port}")

    def wait_for_ok(self, timeout: float = 15, *, key: str | None = None) -> float:
        """Wait until every live node says ``cluster_state:ok`` and sees every slot (or only
        ``key``'s) served by a live node that calls itself primary; return the seconds waited.

        Right after a kill the others still believe in the dead primary for a node timeout,
        so ``cluster_state:ok`` alone is not enough.
        """
        started = time.monotonic()
        slot = None if key is None else self.keyslot(key)
        wait_until(
            lambda: self._served(slot), timeout=timeout, interval=0.1, what="redis cluster ok"
        )
        return time.monotonic() - started

    def _served(self, slot: int | None) -> bool:
        try:
            for port in self.live_ports():
                client = _client(port)
                if client.cluster("INFO").get("cluster_state") != "ok":
                    return False
                for start, end, owner in self.slot_map(port):
                    if slot is not None and not start <= slot <= end:
                        continue
                    if not self.alive(owner) or self.role(owner) != "master":
                        return False
        except redis.RedisError:
            return False
        return True

    def slot_map(self, port: int) -> list[tuple[int, int, int]]:
        """``(first slot, last slot, primary port)`` ranges as the node on ``port`` sees them."""
        ranges = _client(port).execute_command("CLUSTER SLOTS")
        return sorted((int(start), int(end), int(primary[1])) for start, end, primary, *_ in ranges)

    def restart_node(self, port: int, *, timeout: float = 15) -> None:
        """Start a stopped or killed node again on its port with its nodes.conf: it rejoins,
        as a replica of whoever took over its slots. Returns once it agrees with the others
        on who serves which slot and, as a replica, is in sync."""
        if self.alive(port):
            raise RuntimeError(f"node {port} is running")
        self._spawn(port)

        def rejoined() -> bool:
            others = [other for other in self.live_ports() if other != port]
            try:
                client = _client(port)
                if client.cluster("INFO").get("cluster_state") != "ok":
                    return False
                # Until gossip reaches it, it still believes in the slots it had when it died.
                slots = self.slot_map(port)
                if any(self.slot_map(other) != slots for other in others):
                    return False
                replication = client.info("replication")
            except redis.RedisError:
                return False
            if any(primary == port for _, _, primary in slots):
                return replication["role"] == "master"
            return replication["role"] == "slave" and replication["master_link_status"] == "up"

        wait_until(rejoined, timeout=timeout, interval=0.1, what=f"node {port} rejoined")

    def logs(self) -> str:
        create = self._dir / "create.log"
        created = create.read_text(errors="replace") if create.exists() else ""
        return f"--- redis-cli --cluster create\n{created}\n{super().logs()}"


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
