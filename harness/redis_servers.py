"""Private Redis servers: a single instance, and a primary with a replica under Sentinel.

Used by the tests that need a Redis of their own (to stop, kill or fail over) and by the
benchmark's metrics-overhead measurement.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import redis

from harness.processes import Managed, ProcessGroup, free_port, wait_until


def pings(port: int) -> bool:
    """Whether the Redis on ``port`` answers PING within half a second."""
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


class RedisServer(Managed):
    """A private redis-server process on a free loopback port (nothing persisted)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="booking-redis-")

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir,
                "--logfile", os.path.join(self._dir, "redis.log"),
            ]
        )  # fmt: skip
        wait_until(self.ping, timeout=10, what=f"redis on {self.port}")
        return self

    def ping(self) -> bool:
        return pings(self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


class RedisSentinelGroup(ProcessGroup):
    """A Redis primary, one replica and sentinels watching them, all on free loopback ports.

    Sentinels run as ``redis-server <conf> --sentinel`` (the binary of Debian's redis-server
    package); short down-after and failover timeouts make a failover take a few seconds.
    """

    def __init__(
        self,
        *,
        sentinels: int = 1,
        service: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        super().__init__("booking-sentinel-")

    @property
    def sentinel_addresses(self) -> str:
        """The sentinels as REDIS_SENTINELS wants them: ``host:port,host:port``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def _spawn(self, name: str, args: list[str]) -> None:
        workdir = self._dir / name
        workdir.mkdir(exist_ok=True)
        self._processes[name] = subprocess.Popen(
            ["redis-server", *args, "--dir", str(workdir), "--logfile", str(workdir / "log")]
        )

    def _server_args(self, port: int) -> list[str]:
        return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    def start(self) -> RedisSentinelGroup:
        self._spawn("primary", self._server_args(self.primary_port))
        wait_until(lambda: pings(self.primary_port), timeout=10, what="sentinel primary")
        replica_of = ["--replicaof", "127.0.0.1", str(self.primary_port)]
        self._spawn("replica", [*self._server_args(self.replica_port), *replica_of])
        wait_until(self._replica_in_sync, timeout=20, what="replica in sync")
        for n, port in enumerate(self.sentinel_ports):
            conf = self._dir / f"sentinel-{n}.conf"  # sentinels rewrite it: must be writable
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} "
                f"{len(self.sentinel_ports) // 2 + 1}\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            self._spawn(f"sentinel-{n}", [str(conf), "--sentinel"])
        wait_until(self._sentinels_ready, timeout=30, what="sentinels seeing the replica")
        return self

    def _replica_in_sync(self) -> bool:
        try:
            info = redis.Redis(port=self.replica_port, socket_timeout=0.5).info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for port in self.sentinel_ports:
            try:
                client = redis.Redis(port=port, socket_timeout=0.5, decode_responses=True)
                replicas = client.execute_command("SENTINEL", "REPLICAS", self.service)
                peers = client.execute_command("SENTINEL", "SENTINELS", self.service)
            except redis.RedisError:
                return False
            if not replicas or len(peers) < len(self.sentinel_ports) - 1:
                return False
        return True

    def primary_address(self) -> tuple[str, int] | None:
        """The primary as the first answering sentinel reports it."""
        for port in self.sentinel_ports:
            try:
                client = redis.Redis(port=port, socket_timeout=0.5, decode_responses=True)
                host, primary_port = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                )
                return host, int(primary_port)
            except (redis.RedisError, TypeError, ValueError):
                continue
        return None

    def kill_primary(self) -> None:
        """SIGKILL the primary: no goodbye to clients, replicas or sentinels."""
        process = self._processes.pop("primary")
        process.kill()
        process.wait(timeout=10)

    def wait_for_failover(self, *, timeout: float) -> None:
        """Wait until the sentinels name the replica as primary and it accepts writes."""

        def promoted() -> bool:
            if self.primary_address() != ("127.0.0.1", self.replica_port):
                return False
            try:
                info = redis.Redis(port=self.replica_port, socket_timeout=0.5).info("replication")
            except redis.RedisError:
                return False
            return info.get("role") == "master"

        wait_until(promoted, timeout=timeout, interval=0.2, what="sentinel failover")

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port)
