"""The benchmark's gunicorn instances (two unless asked) sharing PostgreSQL and Redis, their
metrics and CPU, and the PgBouncer the scale-out measurements put in front of PostgreSQL."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import requests
from sqlalchemy.engine import URL

from harness.instances import AppInstance, start_all, stop_all
from harness.pgbouncer import PgBouncer

# Families read from /metrics before and after a scenario; the difference is what it did.
METRIC_FAMILIES = (
    "booking_lock_wait_seconds_sum",
    "booking_lock_wait_seconds_count",
    "booking_lock_hold_seconds_sum",
    "booking_lock_hold_seconds_count",
    "booking_lock_acquisitions_total",
    "booking_lock_lost_total",
    "booking_seat_batch_size_sum",
    "booking_seat_batch_size_count",
    "bookings_total",
)
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)$")


INSTANCES = 2


def connections_per_worker(clients: int, workers: int) -> int:
    """The cap on keep-alive connections per worker that spreads ``clients`` over ``workers``.

    A gthread worker accepts connections as long as it has room for them (1000 by default), so
    wrk's connections, all opened at once, may land on one or two workers of four and leave
    the others idle for a whole run: a run-to-run split between two throughput levels. A load
    balancer would spread them; the cap does that here.
    """
    return -(-clients // workers)


class Cluster:
    """Instances on free loopback ports, started and stopped together."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        workers: int,
        threads: int,
        clients: int,
        count: int = INSTANCES,
        name: str = "bench",
        start_timeout: float = 30.0,
    ) -> None:
        self.env = {
            **env,
            "GUNICORN_WORKER_CONNECTIONS": str(connections_per_worker(clients, count * workers)),
        }
        self.workers = workers
        self.threads = threads
        self.count = count
        self.name = name
        self.start_timeout = start_timeout
        self.instances: list[AppInstance] = []

    @property
    def ports(self) -> list[int]:
        return [instance.port for instance in self.instances]

    def start(self) -> None:
        self.stop()
        self.instances = [
            AppInstance(
                self.env,
                workers=self.workers,
                threads=self.threads,
                name=f"{self.name}-{n}",
                start_timeout=self.start_timeout,
            )
            for n in range(self.count)
        ]
        start_all(self.instances)

    def stop(self) -> None:
        stop_all(self.instances)
        self.instances = []

    def worker_pids(self) -> list[int]:
        return [pid for instance in self.instances for pid in instance.worker_pids()]

    def worker_cpu(self) -> dict[int, float]:
        """CPU seconds (user + system) each gunicorn worker has used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        usage = {}
        for pid in self.worker_pids():
            try:
                # Fields after the parenthesised command name; utime and stime are 14 and 15.
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            usage[pid] = (int(fields[11]) + int(fields[12])) / ticks
        return usage

    def logs_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {i.name}\n{i.log()[-chars:]}" for i in self.instances)

    def metrics(self) -> dict[str, float]:
        """The service's booking and lock metrics summed over all instances."""
        totals: dict[str, float] = {}
        for instance in self.instances:
            try:
                body = requests.get(f"{instance.base_url}/metrics", timeout=5).text
            except requests.RequestException:
                continue
            for line in body.splitlines():
                match = _SAMPLE.match(line)
                if not match or match.group(1) not in METRIC_FAMILIES:
                    continue
                name = match.group(1) + (match.group(2) or "")
                totals[name] = totals.get(name, 0.0) + float(match.group(3))
        return totals

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def deployed_pgbouncer(url: URL, user: str, server_pool: int) -> PgBouncer:
    """A PgBouncer in front of ``url``'s server set up as deploy/k8s/base/pgbouncer.ini:
    transaction pooling, one pool of ``server_pool`` server connections (20 there), the same
    cap for the database, clients waiting at most 5 s."""
    return PgBouncer(
        default_pool_size=server_pool,
        max_db_connections=server_pool,
        server_host=url.host or "127.0.0.1",
        server_port=url.port or 5432,
        roles=(user,),
        settings={"query_wait_timeout": 5},
    )


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What happened between two scrapes, with the mean lock wait and hold in milliseconds."""
    delta = {
        name: round(value - before.get(name, 0.0), 6)
        for name, value in after.items()
        if value - before.get(name, 0.0)
    }
    out: dict[str, Any] = {"counters": delta}
    for kind in ("wait", "hold"):
        count = delta.get(f"booking_lock_{kind}_seconds_count", 0)
        total = delta.get(f"booking_lock_{kind}_seconds_sum", 0)
        if count:
            out[f"lock_{kind}_mean_ms"] = round(1000 * total / count, 3)
    # Bookings per lock hold (group commit): what one hold of a hot event's lock yields.
    batches = delta.get("booking_seat_batch_size_count", 0)
    if batches:
        out["seat_batch_mean"] = round(delta.get("booking_seat_batch_size_sum", 0) / batches, 2)
    return out
