"""What every bench subcommand shares (its database, its Redis, where it logs and writes
results) and the sizes and targets of a run: the full run and the short smoke run."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/booking_bench"
)
# Not 0 (demo), 8 or 15 (tests): the bench flushes this database before every run.
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
# JSON documents and charts of `run` (git ignores it).
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    """Progress, on standard error: standard output carries only the results."""
    print(f"==> {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Sizes:
    """How big and how long each part of a run is."""

    clients: int  # concurrent connections in S1-S4 and both baselines (pgbench clients too)
    duration: float  # seconds of every fixed-duration measurement
    warmup: float  # seconds of warm-up traffic after the instances start
    workers: int  # gunicorn workers per instance (two instances)
    threads: int  # gthread threads per worker
    customers: int  # pre-seeded customers with tokens
    sellout_capacity: int  # S1: seats of the hot event
    sellout_timeout: float  # S1: give up if not sold out by then
    storm_customers: int  # S2: signed-in customers retrying the sold-out event
    spread_events: int  # S3 and S4: events the load is spread over
    spread_capacity: int  # S3 and S4: seats per event (never sells out during a run)
    growth_rows: int  # S5: bookings in the database for the "large" measurement
    growth_hot_rows: int  # S5: of which on the one hot event
    growth_clients: int  # S5: connections while measuring the cost of a booking
    growth_duration: float  # S5: seconds per measurement
    growth_repeats: int  # S5: measurements per state; the cheapest counts (noise only adds)
    growth_db_transactions: int  # S5: pgbench transactions (1 client) per state
    scaleout_instances: int  # S6: instances sharing one PgBouncer (the other side: 2 direct)
    scaleout_workers: int  # S6: gunicorn workers per instance behind PgBouncer
    scaleout_fallback_workers: int  # S6: workers per instance if those did not boot in time
    scaleout_threads: int  # S6: gthread threads per worker behind PgBouncer
    scaleout_server_pool: int  # S6: PgBouncer's server connections (pool and database cap)
    scaleout_start_timeout: float  # S6: seconds the instances behind PgBouncer may take to boot

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# 2 cores: 2 instances x 2 workers = 4 processes, 2 per core, so one worker's GIL or I/O wait
# does not idle a core; 8 threads each give 64 handler threads, one per client.
FULL = Sizes(
    clients=64,
    duration=20.0,
    warmup=3.0,
    workers=2,
    threads=8,
    customers=200_000,
    sellout_capacity=5_000,
    sellout_timeout=180.0,
    # 64 connections at a few thousand refusals/s keep each of 4,096 customers under the
    # default RATE_LIMIT_BOOKINGS (60/minute), so S2 measures refusals, not 429s.
    storm_customers=4_096,
    spread_events=500,
    spread_capacity=100_000,
    growth_rows=1_000_000,
    growth_hot_rows=100_000,
    growth_clients=16,
    growth_duration=10.0,
    growth_repeats=2,
    growth_db_transactions=2_000,
    # README defaults. 24 workers booting at once on 2 cores took 27 s on the shared development
    # machine, and more than 30 s when it was busy; if they miss the timeout, S6 runs 1 worker
    # x 8 threads per instance instead (same threads per instance, half the processes) and
    # says so.
    scaleout_instances=12,
    scaleout_workers=2,
    scaleout_fallback_workers=1,
    scaleout_threads=8,
    scaleout_server_pool=20,  # as deploy/k8s/base/pgbouncer.ini
    scaleout_start_timeout=60.0,
)

# Checks that the harness works and the invariants hold; its numbers mean nothing.
SMOKE = Sizes(
    clients=8,
    duration=2.0,
    warmup=1.0,
    workers=1,
    threads=4,
    customers=4_000,
    sellout_capacity=200,
    sellout_timeout=30.0,
    storm_customers=400,
    spread_events=20,
    spread_capacity=10_000,
    growth_rows=10_000,
    growth_hot_rows=1_000,
    growth_clients=4,
    growth_duration=2.0,
    growth_repeats=1,
    growth_db_transactions=200,
    scaleout_instances=12,
    scaleout_workers=1,
    scaleout_fallback_workers=1,
    scaleout_threads=4,
    scaleout_server_pool=20,
    scaleout_start_timeout=60.0,
)

SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7")
# S6 starts 14 more instances and a PgBouncer: only when asked for (--scenarios S6).
DEFAULT_SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S7")


@dataclass(frozen=True)
class Target:
    """A target from the issue: ``value op goal`` is met; ``value op stretch`` is the stretch."""

    name: str
    goal: float
    stretch: float
    higher_is_better: bool

    def grade(self, value: float | None) -> str:
        if value is None:
            return "n/a"

        def meets(limit: float) -> bool:
            return value >= limit if self.higher_is_better else value <= limit

        if meets(self.stretch):
            return "stretch"
        return "met" if meets(self.goal) else "MISSED"

    def describe(self) -> str:
        op = "≥" if self.higher_is_better else "≤"
        return f"{op} {self.goal:g} ({op} {self.stretch:g})"


TARGETS = {
    # Issue 17: combining commits many bookings per transaction, which pgbench's one-row
    # transactions cannot.
    "S1_vs_pgbench": Target("S1 bookings/s ÷ pgbench ceiling", 1.5, 2.0, True),
    "S1_p99_ms": Target("S1 p99 ms (64 clients in the full run)", 100.0, 60.0, False),
    "S2_vs_livez": Target("S2 rejections/s ÷ livez rps", 0.5, 0.8, True),
    "S5_growth": Target("S5 cost at 1M rows ÷ cost at 0", 1.2, 1.05, False),
    "S6_pgbouncer_vs_direct": Target("S6 via PgBouncer ÷ 2 direct", 0.9, 1.0, True),
    "S7_vs_S1": Target("S7 confirmed/s ÷ S1 bookings/s", 0.8, 1.0, True),
}
