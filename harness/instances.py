"""Gunicorn instances of the service, as users run them, on free loopback ports.

``AppInstance`` is one instance (several workers); ``running`` starts several in parallel and
stops them all afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import requests

from harness.processes import PROJECT_ROOT, Managed, free_port, stop_process, wait_until


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


def start_all(instances: list[AppInstance]) -> None:
    """Start the instances in parallel: each takes about a second to import the app and bind."""
    if instances:
        with ThreadPoolExecutor(max_workers=len(instances)) as pool:
            list(pool.map(lambda instance: instance.start(), instances))


def stop_all(instances: list[AppInstance]) -> None:
    """Stop the instances in parallel: each graceful shutdown takes about a second."""
    if instances:
        with ThreadPoolExecutor(max_workers=len(instances)) as pool:
            list(pool.map(lambda instance: instance.stop(), instances))


@contextmanager
def running(instances: Iterable[AppInstance]) -> Iterator[list[AppInstance]]:
    """Start the instances in parallel; stop them all afterwards, in parallel too."""
    instances = list(instances)
    try:
        start_all(instances)
        yield instances
    finally:
        stop_all(instances)
