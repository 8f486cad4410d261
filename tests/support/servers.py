"""Real servers for multi-process tests: private Redis instances and gunicorn app instances.

Everything binds to 127.0.0.1 on free ports, writes its log to a temporary directory and is
stopped by the caller (use them as context managers).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import requests

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Any, *, timeout: float, interval: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout}s waiting for {what or predicate}")


def stop_process(process: subprocess.Popen[bytes] | None, *, timeout: float = 10) -> None:
    """SIGTERM the process and wait for it; SIGKILL it if it takes longer than ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


class Managed:
    """A server as a context manager: started on entry (and stopped again if the start
    fails half-way), stopped on exit."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProcessGroup(Managed):
    """Server processes started together and stopped together, with their logs in one temp
    directory (``<dir>/<name>/log``); a context manager that stops them all on the way out."""

    def __init__(self, prefix: str) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix=prefix))
        self._processes: dict[Any, subprocess.Popen[bytes]] = {}

    def logs(self) -> str:
        parts = []
        for log in sorted(self._dir.glob("*/log")):
            parts.append(f"--- {log.parent.name}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self._processes.values():
            stop_process(process)
        self._processes.clear()


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
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


class AppInstance(Managed):
    """One gunicorn instance of the service (several workers) on a free loopback port."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        workers: int = 2,
        threads: int = 8,
        port: int | None = None,
        name: str = "app",
        start_timeout: float = 30.0,
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # Many instances booting at once on two cores take longer than one does.
        self.start_timeout = start_timeout
        self.workers = workers
        self.threads = threads
        self.name = name
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix=f"booking-{name}-")
        self.log_path = Path(self._dir) / "gunicorn.log"

    def start(self) -> AppInstance:
        env = {
            **os.environ,
            **self.env,
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(self.workers),
            "GUNICORN_THREADS": str(self.threads),
            "INSTANCE_NAME": self.name,
            "PROMETHEUS_MULTIPROC_DIR": str(Path(self._dir) / "metrics"),
            # Clients open their connections before a barrier that may take seconds on a
            # loaded machine; a connection the instance closed meanwhile would be reset.
            "GUNICORN_KEEPALIVE_SECONDS": self.env.get("GUNICORN_KEEPALIVE_SECONDS", "120"),
        }
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._live, timeout=self.start_timeout, what=f"{self.name} on {self.port}")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; log:\n{self.log()[-3000:]}") from None
        return self

    def _live(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited; log:\n{self.log()}")
        try:
            return requests.get(f"{self.base_url}/livez", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def worker_pids(self) -> list[int]:
        """Pids of the gunicorn workers (children of the master)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process, timeout=15)
        self.process = None


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
        wait_until(lambda: _pings(self.primary_port), timeout=10, what="sentinel primary")
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


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False
