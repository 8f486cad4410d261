"""What observability costs: booking throughput with METRICS_ENABLED=true against =false.

Two gunicorn instances run side by side on the bench database and the bench Redis, one
with metrics on and one with them off; wrk drives one at a time in interleaved rounds
(on, off, off, on, on, off, ...) so that drift (table growth, a busy neighbour) falls on both
sides alike. Two loads, each with every request a new customer (bench/lua):

- spread: bookings spread over many large events: CPU-bound, where per-request cost shows;
- hot: every booking on one large-capacity event: serialized by its lock.

Prints bookings/s (201s only) per round, then per load the ratio on/off of the totals (the
verdict) and the median ratio of back-to-back round pairs (a check on noise). The goal is
on/off >= 0.95; exit status 1 if a load misses it. Not part of the test suite.

Recreates the bench database (BENCH_DATABASE_URL) and flushes the bench Redis
(BENCH_REDIS_URL). Needs wrk (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

import redis

from bench import db
from bench.cluster import connections_per_worker
from bench.load import LoadResult, require_tool, run_wrk
from bench.settings import BENCH_DATABASE_URL, BENCH_REDIS_URL, log
from harness.instances import AppInstance, start_all, stop_all

GOAL = 0.95
SPREAD_EVENTS = 100
EVENT_CAPACITY = 1_000_000  # never sells out during a run
WARMUP_SECONDS = 2.0


@dataclass
class Side:
    """One instance and the rounds measured against it."""

    name: str
    instance: AppInstance
    rounds: dict[str, list[LoadResult]] = field(default_factory=dict)

    def round_rates(self, load: str) -> list[float]:
        return [result.count(201) / result.duration_s for result in self.rounds.get(load, [])]

    def bookings_per_second(self, load: str) -> float:
        results = self.rounds.get(load, [])
        seconds = sum(result.duration_s for result in results)
        return sum(result.count(201) for result in results) / seconds if seconds else 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=4, help="rounds per side and load")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per round")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")
    parser.add_argument("--threads", type=int, default=8, help="gthread threads per worker")
    parser.add_argument(
        "--loads", default="spread,hot", help="comma-separated: spread, hot (default both)"
    )
    parser.add_argument(
        "--customers-per-round",
        type=int,
        default=15_000,
        help="fresh customers per round (more than one round can book)",
    )


def interleaved(rounds: int) -> list[str]:
    """on, off, off, on, on, off, ...: each side gets as many early slots as late ones."""
    order: list[str] = []
    for n in range(rounds):
        order += ["on", "off"] if n % 2 == 0 else ["off", "on"]
    return order


def main(args: argparse.Namespace) -> int:
    loads = [load.strip() for load in args.loads.split(",") if load.strip()]
    unknown = set(loads) - {"spread", "hot"}
    if unknown or not loads:
        args.parser.error(f"unknown loads: {', '.join(sorted(unknown)) or '(none)'}")
    require_tool("wrk")
    slots = len(loads) * args.rounds * 2 + 2  # every round plus the two warm-ups
    customers = slots * args.customers_per_round

    log(f"database {BENCH_DATABASE_URL}: recreating, seeding {customers:,} customers, events")
    engine = db.recreate(BENCH_DATABASE_URL)
    db.seed_accounts(engine, customers)
    spread_events = db.create_events(
        engine, count=SPREAD_EVENTS, capacity=EVENT_CAPACITY, title="overhead spread"
    )
    (hot_event,) = db.create_events(engine, count=1, capacity=EVENT_CAPACITY, title="overhead hot")
    load_env = {
        "spread": {"FIRST_EVENT": spread_events[0], "EVENTS": SPREAD_EVENTS},
        "hot": {"EVENT_ID": hot_event},
    }
    scripts = {"spread": "spread.lua", "hot": "booking.lua"}
    next_customer = 1

    def drive(side: Side, load: str, seconds: float) -> LoadResult:
        nonlocal next_customer
        result = run_wrk(
            scripts[load],
            ports=[side.instance.port],
            connections=args.connections,
            duration=seconds,
            env={
                **load_env[load],
                "CUSTOMER_FIRST": next_customer,
                "CUSTOMER_COUNT": args.customers_per_round,
            },
        )
        next_customer += args.customers_per_round
        if result.count(201) == 0:
            raise RuntimeError(f"{side.name}/{load}: no booking succeeded: {result.statuses}")
        return result

    redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
    env = {
        "DATABASE_URL": BENCH_DATABASE_URL,
        "REDIS_URL": BENCH_REDIS_URL,
        "LOG_LEVEL": "WARNING",
        # Otherwise one worker may accept every wrk connection in one round and not in the
        # next: a two-level throughput that swamps the few per cent being measured.
        "GUNICORN_WORKER_CONNECTIONS": str(connections_per_worker(args.connections, args.workers)),
    }
    sides = {
        state: Side(
            state,
            AppInstance(
                {**env, "METRICS_ENABLED": "true" if state == "on" else "false"},
                workers=args.workers,
                threads=args.threads,
                name=f"overhead-{state}",
            ),
        )
        for state in ("on", "off")
    }
    instances = [side.instance for side in sides.values()]
    try:
        start_all(instances)
        log("warm-up (pools, imports, caches)")
        for side in sides.values():
            drive(side, "spread", WARMUP_SECONDS)
        log(
            f"{args.rounds} rounds x {args.duration:g}s per side and load, "
            f"{args.connections} connections, {args.workers} workers x {args.threads} threads"
        )
        for load in loads:
            for state in interleaved(args.rounds):
                side = sides[state]
                result = drive(side, load, args.duration)
                side.rounds.setdefault(load, []).append(result)
                others = {k: v for k, v in result.statuses.items() if k != "201"}
                log(
                    f"{load:6} metrics {state:3}: "
                    f"{result.count(201) / result.duration_s:8.1f} bookings/s  "
                    f"p99 {result.latency_ms.get('p99', float('nan')):6.1f} ms"
                    + (f"  other statuses {others}" if others else "")
                )
                time.sleep(0.5)
    finally:
        stop_all(instances)

    print("load    metrics on  metrics off  on/off  (median of per-round pairs)")
    missed = []
    for load in loads:
        on = sides["on"].bookings_per_second(load)
        off = sides["off"].bookings_per_second(load)
        ratio = on / off if off else 0.0
        # Round n of each side ran back to back: their ratio is immune to slow drift.
        pairs = zip(sides["on"].round_rates(load), sides["off"].round_rates(load), strict=True)
        paired = statistics.median(a / b for a, b in pairs if b) if off else 0.0
        verdict = "ok" if ratio >= GOAL else f"MISSED (goal {GOAL:.2f})"
        print(f"{load:6} {on:11.1f} {off:12.1f}  {ratio:6.3f}  ({paired:.3f})  {verdict}")
        if ratio < GOAL:
            missed.append(load)
    return 1 if missed else 0
