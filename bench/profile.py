"""Optional py-spy sampling of one gunicorn worker during a scenario (``--profile``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    """py-spy from the virtualenv (pip install py-spy) or the PATH, if installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """``py-spy record`` of several processes at once for ``seconds``, merged into top functions.

    All workers, not one: keep-alive connections stick to the worker that accepted them, so
    a single worker may have served little or nothing of the load.
    """

    def __init__(self, pids: list[int], seconds: float, out_dir: Path, *, gil: bool) -> None:
        self.pids = pids
        self.seconds = seconds
        self.out_dir = out_dir
        # gil: only the thread holding the GIL (CPU spent in Python); otherwise every thread
        # that is not idle, which includes waiting on sockets (where requests spend time).
        self.gil = gil
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def _out(self, pid: int) -> Path:
        return self.out_dir / f"py-spy-{'gil' if self.gil else 'wall'}-{pid}.txt"

    def __enter__(self) -> Profiler:
        binary = py_spy()
        if binary is None:
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for pid in self.pids:
            self.processes[pid] = subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid", str(pid),
                    "--duration", str(max(1, int(self.seconds))),
                    "--rate", "100",
                    "--format", "raw",
                    "--nonblocking",  # never pause the worker being measured
                    *(["--gil"] if self.gil else []),
                    "--output", str(self._out(pid)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes.values():
            try:
                process.wait(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                process.kill()

    def summary(self, top: int = 15) -> dict[str, Any]:
        """Top functions by self and by inclusive samples, over every profiled worker."""
        if not self.processes:
            return {"skipped": "py-spy is not installed (pip install py-spy)"}
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        per_worker: dict[int, int] = {}
        problems = []
        for pid, process in self.processes.items():
            out = self._out(pid)
            if not out.exists():
                error = process.stderr.read().decode() if process.stderr else ""
                problems.append(f"{pid}: {error.strip()[:300]}")
                continue
            per_worker[pid] = 0
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                samples = int(count)
                frames = stack.split(";")
                per_worker[pid] += samples
                own[frames[-1]] += samples
                for frame in set(frames):
                    inclusive[frame] += samples
        total = sum(per_worker.values())
        if not total:
            return {"skipped": f"py-spy recorded nothing: {problems}"}

        def share(counter: Counter[str], count: int) -> list[dict[str, Any]]:
            return [
                {"function": name, "percent": round(100 * n / total, 1)}
                for name, n in counter.most_common(count)
            ]

        return {
            "mode": "gil" if self.gil else "wall",
            "samples": total,
            "samples_per_worker": per_worker,
            "self": share(own, top),
            # Deeper: the service's own frames sit below a dozen framework frames.
            "inclusive": share(inclusive, top * 5),
            "folded_stacks": str(self.out_dir),
            "problems": problems,
        }
