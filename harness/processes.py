"""Process plumbing shared by every server the harness starts: free ports, waiting, stopping.

Every server of the harness binds to 127.0.0.1 on a free port, writes its log to a temporary
directory and is stopped by the caller (use them as context managers).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
