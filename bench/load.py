"""Load generators: wrk (HTTP, Lua scripts in bench/lua) and pgbench (the database ceiling).

One wrk process drives both app instances: its Lua ``setup`` points thread i at instance
i mod 2, so the latency percentiles come from one histogram instead of being averaged across
processes. wrk is C with an event loop per thread; at these request rates it uses a small
fraction of a core, so it is not the bottleneck (the livez baseline shows its ceiling).
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.db import CUSTOMER_ID_OFFSET
from booking_service.services.ledger_sql import APPLY_INTENTS

LUA_DIR = Path(__file__).resolve().parent / "lua"
JSON_MARKER = "BENCH_JSON "
# Generous: a request waiting for an event lock may legitimately take up to LOCK_WAIT_SECONDS
# (5 s); wrk drops slower answers from its histogram and counts them as timeouts.
WRK_TIMEOUT = "10s"


class LoadError(RuntimeError):
    """A load generator failed or printed nothing usable."""


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LoadError(
            f"{name} is not installed (Debian: apt-get install "
            f"{'wrk' if name == 'wrk' else 'postgresql-client'}); `make bench` installs it"
        )
    return path


@dataclass
class LoadResult:
    """What one load run measured."""

    requests: int
    duration_s: float
    statuses: dict[str, int]  # HTTP status -> responses
    codes: dict[str, int]  # "409 event_full" -> responses (problem+json code of non-2xx)
    socket_errors: dict[str, int]  # connect / read / write / timeout
    latency_ms: dict[str, float]  # p50, p90, p99, p999, mean, max
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def count(self, status: int) -> int:
        return self.statuses.get(str(status), 0)

    def per_second(self, status: int) -> float:
        return self.count(status) / self.duration_s if self.duration_s > 0 else 0.0

    def errors(self) -> dict[str, int]:
        """Everything that is not a 2xx: by problem code, plus socket errors and timeouts."""
        out = dict(self.codes)
        out.update({f"socket {k}": v for k, v in self.socket_errors.items() if v})
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": round(self.rps, 2)}


def run_wrk(
    script: str,
    *,
    ports: list[int],
    connections: int,
    duration: float,
    env: dict[str, Any] | None = None,
    stop_when: Callable[[], bool] | None = None,
    poll_interval: float = 0.05,
) -> LoadResult:
    """Run bench/lua/<script> with one wrk thread per instance port.

    ``stop_when`` is polled while wrk runs; when it turns true wrk gets SIGINT, which makes it
    stop at once and still report (wrk's main thread otherwise sleeps the whole duration).
    """
    wrk = require_tool("wrk")
    threads = len(ports)
    connections = max(threads, connections - connections % threads)
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, math.ceil(duration))}s",
        f"--timeout={WRK_TIMEOUT}",
        "-s",
        str(LUA_DIR / script),
        f"http://127.0.0.1:{ports[0]}",
    ]
    lua_env = {
        "BENCH_LUA_DIR": str(LUA_DIR),
        "BENCH_PORTS": ",".join(str(port) for port in ports),
        "BENCH_THREADS": str(threads),
        "BENCH_CUSTOMER_ID_OFFSET": str(CUSTOMER_ID_OFFSET),
        **{f"BENCH_{key.upper()}": str(value) for key, value in (env or {}).items()},
    }
    process = subprocess.Popen(
        command,
        env={**os.environ, **lua_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cpu_before = _machine_cpu()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    stopped_early = False
    if stop_when is not None:
        while process.poll() is None:
            if stop_when():
                process.send_signal(signal.SIGINT)
                stopped_early = True
                break
            time.sleep(poll_interval)
    stdout, stderr = process.communicate(timeout=duration + 60)
    if process.returncode != 0:
        raise LoadError(f"wrk exited {process.returncode}: {stderr.strip() or stdout[-2000:]}")
    result = _parse_wrk(stdout, stopped_early)
    # wrk is the only child reaped in between, so the children's rusage delta is wrk's CPU.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    busy, total = (after - before for after, before in zip(_machine_cpu(), cpu_before, strict=True))
    if result.duration_s > 0:
        result.extra["wrk_cpu_percent_of_one_core"] = round(100 * wrk_cpu / result.duration_s, 1)
    if total > 0:
        result.extra["machine_cpu_busy_percent"] = round(100 * busy / total, 1)
    return result


def _machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat; (0, 0) where there is none."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _parse_wrk(stdout: str, stopped_early: bool) -> LoadResult:
    for line in stdout.splitlines():
        if line.startswith(JSON_MARKER):
            data = json.loads(line[len(JSON_MARKER) :])
            break
    else:
        raise LoadError(f"wrk printed no {JSON_MARKER.strip()} line:\n{stdout[-2000:]}")
    latency = {
        key: value / 1000.0 for key, value in data["latency_us"].items() if value is not None
    }
    return LoadResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        statuses={str(k): int(v) for k, v in data["statuses"].items()},
        codes={str(k): int(v) for k, v in data["codes"].items()},
        socket_errors={str(k): int(v) for k, v in data["errors"].items()},
        latency_ms=latency,
        extra={"stopped_early": stopped_early},
    )


# --- pgbench ---------------------------------------------------------------------------------


def pgbench_script() -> str:
    """The service's booking transaction as pgbench runs it: the seat ledger's statement with
    one booking intent, on its own, as an uncontended request applies it (unqueued).

    The service calls the stored function outside an explicit transaction (autocommit: the
    statement is the transaction); pgbench does the same with no BEGIN/COMMIT around it. The
    customer is a per-client counter (variables persist across a client's transactions), so
    every transaction books a distinct customer and never hits the one-active-booking index.
    """
    # One customer and one seat per transaction, as the service runs a request that queued
    # alone: the ceiling is the database's, for one booking per commit. pgbench's variables are
    # numbers, so the arrays are built here.
    return (
        "\\set n :n + 1\n"
        "\\set customer_id :first_customer_id + :client_id * :stride + (:n % :stride)\n"
        f"SELECT * FROM {APPLY_INTENTS.name}(:event_id, jsonb_build_array(jsonb_build_object("
        "'id', md5(random()::text), 'kind', 'book', "
        "'customer', CAST(:customer_id AS bigint), 'seats', 1, 'unqueued', true)), "
        "interval '600 seconds', interval '1800 seconds', 20);\n"
    )


def run_pgbench(
    *,
    database_url: str,
    clients: int,
    duration: float,
    event_id: int,
    first_customer_id: int,
    customers: int,
    transactions: int | None = None,
) -> LoadResult:
    """Run the booking transaction against one hot event; latencies from pgbench's log.

    ``transactions`` (per client) replaces ``duration`` when given.
    """
    require_tool("pgbench")
    url = make_url(database_url)
    stride = customers // clients
    workdir = Path(tempfile.mkdtemp(prefix="bench-pgbench-"))
    script = workdir / "take_seat.sql"
    script.write_text(pgbench_script())
    command = [
        "pgbench",
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={clients}",
        "--jobs=2",
        f"--transactions={transactions}"
        if transactions
        else f"--time={max(1, math.ceil(duration))}",
        f"--file={script}",
        "--define=n=0",
        f"--define=event_id={event_id}",
        f"--define=first_customer_id={first_customer_id}",
        f"--define=stride={stride}",
        "--log",
        f"--log-prefix={workdir / 'log'}",
        f"--host={url.host or '127.0.0.1'}",
        f"--port={url.port or 5432}",
        f"--username={url.username or 'postgres'}",
        url.database or "postgres",
    ]
    env = {**os.environ}
    if url.password:
        env["PGPASSWORD"] = url.password
    cpu_before = _machine_cpu()
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration + 120, check=False
    )
    busy, total = (after - before for after, before in zip(_machine_cpu(), cpu_before, strict=True))
    output = completed.stdout + completed.stderr
    if completed.returncode != 0 and "aborted" not in output:
        raise LoadError(f"pgbench exited {completed.returncode}:\n{output[-3000:]}")
    latencies = []
    for log in workdir.glob("log.*"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                latencies.append(int(parts[2]))
    latencies.sort()
    processed = _search_int(r"number of transactions actually processed: (\d+)", output)
    failed = _search_int(r"number of failed transactions: (\d+)", output)
    tps = _search_float(r"tps = ([\d.]+) \(without initial connection time\)", output)
    aborted = len(re.findall(r"client \d+ aborted", output))
    shutil.rmtree(workdir, ignore_errors=True)
    return LoadResult(
        requests=processed,
        duration_s=processed / tps if tps else float(duration),
        statuses={"committed": processed},
        codes={"failed": failed} if failed else {},
        socket_errors={"aborted_clients": aborted} if aborted else {},
        latency_ms=_percentiles_ms(latencies),
        extra={
            "tps_reported": tps,
            "stride_per_client": stride,
            "machine_cpu_busy_percent": round(100 * busy / total, 1) if total else None,
        },
    )


def _percentiles_ms(sorted_us: list[int]) -> dict[str, float]:
    if not sorted_us:
        return {}

    def at(fraction: float) -> float:
        index = min(len(sorted_us) - 1, max(0, math.ceil(fraction * len(sorted_us)) - 1))
        return sorted_us[index] / 1000.0

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "mean": sum(sorted_us) / len(sorted_us) / 1000.0,
        "max": sorted_us[-1] / 1000.0,
    }


def _search_int(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


def _search_float(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0
