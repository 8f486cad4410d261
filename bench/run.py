"""The scenario table: baselines, scenarios S1-S7, invariant checks, table, JSON and chart.

Everything is reported as a ratio against baselines measured in the same run on the same
machine, because absolute numbers on a shared 2-core box say little:

- pgbench ceiling: the service's own booking transaction (the ledger's statement) on one hot event,
  straight against PostgreSQL with the same number of clients;
- livez ceiling: GET /livez through the same two gunicorn instances;
- S6 (only when asked for): S1's sell-out through 2 instances straight to PostgreSQL against
  the same through 12 instances sharing one PgBouncer in transaction pooling;
- S7: the hot event's seats held and confirmed at once, customer after customer, as confirmed
  bookings/s against S1's bookings/s (two requests and two lock holds per seat instead of one).

Exit status: 0 when every scenario ran and no invariant was broken; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from bench import db, report
from bench.cluster import INSTANCES, Cluster, deployed_pgbouncer, metrics_delta
from bench.load import LoadResult, require_tool, run_pgbench, run_wrk
from bench.profile import Profiler
from bench.settings import (
    BENCH_DATABASE_URL,
    BENCH_REDIS_URL,
    DEFAULT_SCENARIOS,
    FULL,
    RESULTS_DIR,
    SCENARIOS,
    SMOKE,
    TARGETS,
    Sizes,
    log,
)
from harness.pgbouncer import PgBouncer, PoolSampler

ROOT = Path(__file__).resolve().parent.parent  # the repository: its commit goes in the JSON
# Room for every S1/S3/S4/S5 booking of a run: an event that sells out mid-measurement
# would turn a throughput number into a rejection number.
ROOMY = 10_000_000


@dataclass
class Row:
    """One line of the results table: a baseline or a scenario (S6 has two sides)."""

    key: str  # e.g. "S1", "B1/pgbench", "S6/direct"
    scenario: str  # B1, B2, S1..S7
    title: str
    metric: str  # what ``value`` counts
    value: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    ratio: float | None = None  # value ÷ its baseline
    ratio_to: str | None = None  # which baseline
    violations: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None  # the scenario itself crashed


def unexpected(result: LoadResult, *expected: str) -> dict[str, int]:
    """Non-2xx answers and socket errors, minus the ones the scenario provokes on purpose."""
    return {code: n for code, n in result.errors().items() if code not in expected}


class Bench:
    """Holds the database, the instances and the rows of one run."""

    def __init__(self, sizes: Sizes, args: argparse.Namespace) -> None:
        self.sizes = sizes
        self.args = args
        self.engine: Engine = db.connect(BENCH_DATABASE_URL)
        self.cluster = Cluster(
            self.instance_env(BENCH_DATABASE_URL),
            workers=sizes.workers,
            threads=sizes.threads,
            clients=sizes.clients,
        )
        self.rows: list[Row] = []
        self.sold_out_event: int | None = None  # S1's event, for S2's storm
        self.profile: dict[str, Any] | None = None

    # --- plumbing ------------------------------------------------------------------------

    @staticmethod
    def instance_env(database_url: str) -> dict[str, str]:
        return {
            "DATABASE_URL": database_url,
            "REDIS_URL": BENCH_REDIS_URL,
            "LOG_LEVEL": "WARNING",
            # Same as production: metrics on, access log off (gunicorn's default).
            "METRICS_ENABLED": "true",
        }

    def measure(self, row: Row, body: Callable[[Row], None]) -> Row:
        """Run one baseline or scenario, then check the invariants whatever happened."""
        log(f"{row.key}: {row.title}")
        started = time.monotonic()
        cpu_before = self.cluster.worker_cpu() if self.cluster.instances else {}
        try:
            body(row)
        except Exception as error:  # report it, keep the rest of the run
            row.failed = f"{type(error).__name__}: {error}"
            traceback.print_exc()
            if self.cluster.instances:
                print(self.cluster.logs_tail(), file=sys.stderr)
        if cpu_before:
            # Keep-alive connections stay with the worker that accepted them: this shows
            # whether every worker really took a share of the load.
            cpu_after = self.cluster.worker_cpu()
            row.details["worker_cpu_seconds"] = sorted(
                (
                    round(cpu_after[pid] - cpu_before[pid], 1)
                    for pid in cpu_before
                    if pid in cpu_after
                ),
                reverse=True,
            )
        row.violations += db.check_invariants(self.engine)
        row.details["seconds"] = round(time.monotonic() - started, 1)
        self.rows.append(row)
        log(
            f"{row.key}: {row.metric}={_fmt(row.value)} p99={_fmt(row.p99_ms)} ms "
            f"errors={row.errors or '-'} violations={len(row.violations)}"
            + (f" FAILED {row.failed}" if row.failed else "")
        )
        return row

    def wrk(self, script: str, **kwargs: Any) -> LoadResult:
        return run_wrk(script, ports=self.cluster.ports, **kwargs)

    def customers(self, first: int = 1, count: int | None = None) -> dict[str, int]:
        return {
            "customer_first": first,
            "customer_count": count if count is not None else self.sizes.customers - first + 1,
        }

    def warm_up(self, cluster: Cluster | None = None, clients: int | None = None) -> None:
        """Open every worker's database pool and Redis connection before measuring."""
        [event] = db.create_events(self.engine, count=1, capacity=ROOMY, title="warm-up")
        run_wrk(
            "mixed.lua",
            ports=(cluster or self.cluster).ports,
            connections=clients or self.sizes.clients,
            duration=self.sizes.warmup,
            env={"first_event": event, "events": 1, **self.customers()},
        )

    def start_cluster(self) -> None:
        log(f"starting {INSTANCES} gunicorn instances")
        redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
        self.cluster.start()
        self.warm_up()

    # --- baselines -----------------------------------------------------------------------

    def pgbench_ceiling(self, row: Row) -> None:
        [event] = db.create_events(self.engine, count=1, capacity=ROOMY, title="pgbench")
        since = db.clock(self.engine)
        result = run_pgbench(
            database_url=BENCH_DATABASE_URL,
            clients=self.sizes.clients,
            duration=self.sizes.duration,
            event_id=event,
            first_customer_id=db.CUSTOMER_ID_OFFSET + 1,
            customers=self.sizes.customers,
        )
        rate = db.booking_rate(self.engine, event, event, since=since)
        row.value = rate.per_second
        row.p50_ms, row.p99_ms = result.latency_ms.get("p50"), result.latency_ms.get("p99")
        row.errors = result.errors()
        row.details.update(load=result.as_dict(), bookings=rate.bookings, event_id=event)
        if result.socket_errors.get("aborted_clients"):
            raise RuntimeError(f"pgbench aborted clients: {result.socket_errors}")

    def livez_ceiling(self, row: Row) -> None:
        result = self.wrk("livez.lua", connections=self.sizes.clients, duration=self.sizes.duration)
        row.value = result.rps
        row.p50_ms, row.p99_ms = result.latency_ms.get("p50"), result.latency_ms.get("p99")
        row.errors = unexpected(result)
        row.details["load"] = result.as_dict()

    # --- scenarios -----------------------------------------------------------------------

    def s1_sellout(self, row: Row) -> None:
        capacity = self.sizes.sellout_capacity
        [event] = db.create_events(self.engine, count=1, capacity=capacity, title="S1")
        before = self.cluster.metrics()
        since = db.clock(self.engine)
        profilers: list[Profiler] = []
        if self.args.profile:
            out = self.args.out / f"py-spy-S1-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
            pids = self.cluster.worker_pids()
            profilers = [
                Profiler(pids, seconds=10, out_dir=out, gil=gil).__enter__()
                for gil in (False, True)
            ]
        with db.ActivitySampler(self.engine, BENCH_REDIS_URL) as activity:
            result = self.wrk(
                "booking.lua",
                connections=self.sizes.clients,
                duration=self.sizes.sellout_timeout,
                env={"event_id": event, "stop_on_full": 1, **self.customers()},
                stop_when=lambda: db.booked(self.engine, event) >= capacity,
            )
        for profiler in profilers:
            profiler.__exit__(None, None, None)
        if profilers:
            self.profile = {("gil" if p.gil else "wall"): p.summary() for p in profilers}
        rate = db.booking_rate(self.engine, event, event, since=since)
        counts = db.event_counts(self.engine, event)
        row.value = rate.per_second
        row.p50_ms, row.p99_ms = result.latency_ms.get("p50"), result.latency_ms.get("p99")
        # The last few requests of each connection meet the sold-out event: expected.
        row.errors = unexpected(result, "409 event_full")
        row.details.update(
            load=result.as_dict(),
            event=counts,
            created_201=result.count(201),
            where_requests_wait=activity.summary(),
            service_metrics=metrics_delta(before, self.cluster.metrics()),
        )
        if counts["booked_count"] != capacity:
            raise RuntimeError(f"not sold out within {self.sizes.sellout_timeout:g}s: {counts}")
        if result.count(201) > capacity:
            row.violations.append(f"{result.count(201)} bookings answered 201, capacity {capacity}")
        self.sold_out_event = event

    def s2_storm(self, row: Row) -> None:
        event = self.sold_out_event
        if event is None:  # S1 not selected: sell an event out directly
            [event] = db.create_events(
                self.engine, count=1, capacity=self.sizes.sellout_capacity, title="S2"
            )
            db.fill_event(self.engine, event, first_customer=1)
        before = db.event_counts(self.engine, event)
        # The storm is the rush's customers retrying: signed in, their sessions already in
        # the cache. A warm-up pass (not measured) is each one's first refusal.
        env = {"event_id": event, **self.customers(count=self.sizes.storm_customers)}
        connections = self.sizes.clients
        self.wrk("booking.lua", connections=connections, duration=self.sizes.warmup, env=env)
        result = self.wrk(
            "booking.lua", connections=connections, duration=self.sizes.duration, env=env
        )
        after = db.event_counts(self.engine, event)
        row.value = result.codes.get("409 event_full", 0) / result.duration_s
        row.p50_ms, row.p99_ms = result.latency_ms.get("p50"), result.latency_ms.get("p99")
        row.errors = unexpected(result, "409 event_full")
        row.details.update(load=result.as_dict(), event=after)
        if after != before or result.count(201):
            row.violations.append(f"sold-out event changed: {before} -> {after}")

    def s3_spread(self, row: Row) -> None:
        events = db.create_events(
            self.engine,
            count=self.sizes.spread_events,
            capacity=self.sizes.spread_capacity,
            title="S3",
        )
        before = self.cluster.metrics()
        since = db.clock(self.engine)
        with db.ActivitySampler(self.engine, BENCH_REDIS_URL) as activity:
            result = self.wrk(
                "spread.lua",
                connections=self.sizes.clients,
                duration=self.sizes.duration,
                env={"first_event": events[0], "events": len(events), **self.customers()},
            )
        rate = db.booking_rate(self.engine, events[0], events[-1], since=since)
        row.value = rate.per_second
        row.p50_ms, row.p99_ms = result.latency_ms.get("p50"), result.latency_ms.get("p99")
        row.errors = unexpected(result)
        row.details.update(
            load=result.as_dict(),
            bookings=rate.bookings,
            created_201=result.count(201),
            where_requests_wait=activity.summary(),
            service_metrics=metrics_delta(before, self.cluster.metrics()),
        )

    def s4_mixed(self, row: Row) -> None:
        events = db.create_events(
            self.engine,
            count=self.sizes.spread_events,
            capacity=self.sizes.spread_capacity,
            title="S4",
        )
        since = db.clock(self.engine)
        result = self.wrk(
            "mixed.lua",
            connections=self.sizes.clients,
            duration=self.sizes.duration,
            env={"first_event": events[0], "events": len(events), **self.customers()},
        )
        row.value = result.rps
        row.p50_ms, row.p99_ms = result.latency_ms.get("p50"), result.latency_ms.get("p99")
        row.errors = unexpected(result)
        rate = db.booking_rate(self.engine, events[0], events[-1], since=since)
        row.details.update(
            load=result.as_dict(),
            bookings_per_s=rate.per_second,
            reads_per_s=(result.requests - result.count(201)) / result.duration_s,
        )

    def s7_hold_confirm(self, row: Row) -> None:
        """S7: the hot event's seats held and at once confirmed, customer after customer."""
        [event] = db.create_events(self.engine, count=1, capacity=ROOMY, title="S7")
        since = db.clock(self.engine)
        with db.ActivitySampler(self.engine, BENCH_REDIS_URL) as activity:
            result = self.wrk(
                "hold_confirm.lua",
                connections=self.sizes.clients,
                duration=self.sizes.duration,
                env={"event_id": event, **self.customers()},
            )
        rate = db.booking_rate(self.engine, event, event, since=since)
        row.value = rate.per_second
        row.p50_ms, row.p99_ms = result.latency_ms.get("p50"), result.latency_ms.get("p99")
        row.errors = unexpected(result)
        counts = db.event_counts(self.engine, event)
        row.details.update(
            load=result.as_dict(),
            confirmed=rate.bookings,
            holds_created=result.count(201) - rate.bookings,
            event=counts,
            where_requests_wait=activity.summary(),
        )

    def s5_growth(self, row: Row) -> None:
        sizes = self.sizes
        # Customers 1..hot_rows hold the seeded hot-event bookings; the HTTP measurements use
        # the next half of the pool and the pgbench ones the last half, so nobody collides.
        free = sizes.customers - sizes.growth_hot_rows
        per_repeat = free // 2 // sizes.growth_repeats
        db_first = sizes.growth_hot_rows + free // 2 + 1
        db_transactions = min(sizes.growth_db_transactions, free // 2 - 1)

        def once(event: int, label: str, repeat: int) -> tuple[float, LoadResult]:
            # Each repeat books the same event, so it needs customers of its own.
            first = sizes.growth_hot_rows + 1 + repeat * per_repeat
            since = db.clock(self.engine)
            result = self.wrk(
                "booking.lua",
                connections=sizes.growth_clients,
                duration=sizes.growth_duration,
                env={"event_id": event, **self.customers(first, per_repeat)},
            )
            rate = db.booking_rate(self.engine, event, event, since=since)
            if not rate.per_second:
                raise RuntimeError(f"S5 {label}: no bookings measured ({result.errors()})")
            return rate.per_second, result

        def cost(event: int, label: str) -> dict[str, Any]:
            # Interference from elsewhere on the machine only ever slows a run down, so the
            # fastest of the repeats is the best estimate of the booking's own cost.
            runs = [once(event, label, repeat) for repeat in range(sizes.growth_repeats)]
            per_second, result = max(runs, key=lambda run: run[0])
            database_only = self.pgbench_cost(event, db_first, db_transactions)
            measured = {
                "ms_per_booking": round(1000 / per_second, 4),
                "bookings_per_s": round(per_second, 2),
                "repeats_bookings_per_s": [round(run[0], 2) for run in runs],
                "p50_ms": result.latency_ms.get("p50"),
                "p99_ms": result.latency_ms.get("p99"),
                "errors": unexpected(result),
                "pgbench_1_client_mean_ms": database_only,
                "rows_in_database": db.count_bookings(self.engine),
            }
            log(f"S5 {label}: {measured}")
            return measured

        db.empty_bookings(self.engine)
        [empty_event] = db.create_events(self.engine, count=1, capacity=ROOMY, title="S5 empty")
        at_zero = cost(empty_event, "empty table")
        [hot] = db.create_events(self.engine, count=1, capacity=ROOMY, title="S5 hot")
        log(f"S5: seeding {sizes.growth_rows:,} bookings, {sizes.growth_hot_rows:,} on event {hot}")
        seeded_in = db.seed_growth(
            self.engine, rows=sizes.growth_rows, hot_rows=sizes.growth_hot_rows, hot_event=hot
        )
        on_hot = cost(hot, f"hot event ({sizes.growth_hot_rows:,} bookings)")
        [fresh] = db.create_events(self.engine, count=1, capacity=ROOMY, title="S5 fresh")
        on_fresh = cost(fresh, "fresh event, full table")
        row.value = on_hot["ms_per_booking"] / at_zero["ms_per_booking"]
        row.p50_ms, row.p99_ms = on_hot["p50_ms"], on_hot["p99_ms"]
        row.errors = on_hot["errors"]
        row.details.update(
            empty=at_zero,
            hot=on_hot,
            fresh=on_fresh,
            fresh_vs_empty=round(on_fresh["ms_per_booking"] / at_zero["ms_per_booking"], 3),
            db_only_hot_vs_empty=_ratio(
                on_hot["pgbench_1_client_mean_ms"], at_zero["pgbench_1_client_mean_ms"]
            ),
            seeded_rows=sizes.growth_rows,
            seeding_seconds=round(seeded_in, 1),
        )

    def s6_clients(self) -> int:
        """S1's client count, rounded to a multiple of both sides' instance counts: wrk runs a
        thread per instance, each with the same number of connections, on either side."""
        step = math.lcm(INSTANCES, self.sizes.scaleout_instances)
        return max(step, self.sizes.clients - self.sizes.clients % step)

    def s6_scale_out(self) -> None:
        """S6: S1's sell-out through 2 instances straight to PostgreSQL, then through 12
        instances sharing one PgBouncer; both sides with the same clients, one after the other.
        """
        sizes = self.sizes
        clients = self.s6_clients()

        def direct(workers: int) -> Cluster:
            return Cluster(
                self.instance_env(BENCH_DATABASE_URL),
                workers=workers,
                threads=sizes.threads,
                clients=clients,
                name="s6-direct",
            )

        self.measure(
            Row("S6/direct", "S6",
                f"hot sell-out, {INSTANCES} instances straight to PostgreSQL", "bookings/s"),
            lambda row: self.s6_side(row, direct, [sizes.workers], clients),
        )  # fmt: skip
        self.measure(
            Row("S6/pgbouncer", "S6",
                f"hot sell-out, {sizes.scaleout_instances} instances via one PgBouncer",
                "bookings/s"),
            lambda row: self.s6_via_pgbouncer(row, clients),
        )  # fmt: skip

    def s6_via_pgbouncer(self, row: Row, clients: int) -> None:
        sizes = self.sizes
        url = make_url(BENCH_DATABASE_URL)
        database, user = url.database or "postgres", url.username or "postgres"
        with deployed_pgbouncer(url, user, sizes.scaleout_server_pool) as pgbouncer:

            def pooled(workers: int) -> Cluster:
                return Cluster(
                    self.instance_env(pgbouncer.url(database, user)),
                    workers=workers,
                    threads=sizes.scaleout_threads,
                    clients=clients,
                    count=sizes.scaleout_instances,
                    name="s6-pgbouncer",
                    start_timeout=sizes.scaleout_start_timeout,
                )

            # README defaults first; fewer workers only if those do not boot in time.
            workers = list(dict.fromkeys([sizes.scaleout_workers, sizes.scaleout_fallback_workers]))
            self.s6_side(row, pooled, workers, clients, (pgbouncer, database, user))

    def s6_boot(self, row: Row, build: Callable[[int], Cluster], workers: list[int]) -> Cluster:
        """Start the instances with the first worker count that boots in time."""
        for attempt, count in enumerate(workers):
            cluster = build(count)
            log(
                f"{row.key}: starting {cluster.count} instances x {count} workers x "
                f"{cluster.threads} threads"
            )
            booted = time.monotonic()
            try:
                cluster.start()
            except TimeoutError:
                cluster.stop()
                if attempt + 1 == len(workers):
                    raise
                row.details["boot_fallback"] = (
                    f"{cluster.count} instances x {count} workers did not boot within "
                    f"{cluster.start_timeout:g} s; ran {workers[attempt + 1]} worker(s) x "
                    f"{cluster.threads} threads per instance instead"
                )
                log(f"{row.key}: {row.details['boot_fallback']}")
                continue
            row.details["start_seconds"] = round(time.monotonic() - booted, 1)
            return cluster
        raise ValueError("no worker count to start with")

    def s6_side(
        self,
        row: Row,
        build: Callable[[int], Cluster],
        workers: list[int],
        clients: int,
        pooler: tuple[PgBouncer, str, str] | None = None,
    ) -> None:
        sizes = self.sizes
        capacity = sizes.sellout_capacity
        redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
        cluster = self.s6_boot(row, build, workers)
        row.title += f", {cluster.workers}x{cluster.threads} each"
        try:
            self.warm_up(cluster, clients)
            [event] = db.create_events(self.engine, count=1, capacity=capacity, title=row.key)
            cpu_before = cluster.worker_cpu()
            metrics_before = cluster.metrics()
            since = db.clock(self.engine)
            pool_sampler = PoolSampler(*pooler) if pooler else nullcontext()
            with db.ActivitySampler(self.engine, BENCH_REDIS_URL) as activity, pool_sampler:
                result = run_wrk(
                    "booking.lua",
                    ports=cluster.ports,
                    connections=clients,
                    duration=sizes.sellout_timeout,
                    env={"event_id": event, "stop_on_full": 1, **self.customers()},
                    stop_when=lambda: db.booked(self.engine, event) >= capacity,
                )
            cpu_after = cluster.worker_cpu()
            service_metrics = metrics_delta(metrics_before, cluster.metrics())
        except Exception:
            print(cluster.logs_tail(), file=sys.stderr)  # gone with the instances otherwise
            raise
        finally:
            cluster.stop()
        rate = db.booking_rate(self.engine, event, event, since=since)
        counts = db.event_counts(self.engine, event)
        waits = activity.summary()
        row.value = rate.per_second
        row.p50_ms, row.p99_ms = result.latency_ms.get("p50"), result.latency_ms.get("p99")
        row.errors = unexpected(result, "409 event_full")
        row.details.update(
            instances=cluster.count,
            workers_per_instance=cluster.workers,
            threads_per_worker=cluster.threads,
            clients=clients,
            load=result.as_dict(),
            event=counts,
            created_201=result.count(201),
            server_errors_5xx=sum(n for s, n in result.statuses.items() if s.startswith("5")),
            postgres_sessions_peak=waits.get("db_connections_max"),
            where_requests_wait=waits,
            service_metrics=service_metrics,
            worker_cpu_seconds=sorted(
                (
                    round(cpu_after[pid] - cpu_before[pid], 1)
                    for pid in cpu_before
                    if pid in cpu_after
                ),
                reverse=True,
            ),
        )
        if isinstance(pool_sampler, PoolSampler):
            row.details["pgbouncer"] = {
                "server_pool": sizes.scaleout_server_pool,
                "peak_client_connections": pool_sampler.peak_clients,
                "peak_waiting_clients": pool_sampler.peak_waiting,
                "peak_server_connections": pool_sampler.peak_servers,
                "samples": len(pool_sampler.samples),
                "error": pool_sampler.error,
            }
        if counts["booked_count"] != capacity:
            raise RuntimeError(f"not sold out within {sizes.sellout_timeout:g}s: {counts}")
        if result.count(201) > capacity:
            row.violations.append(f"{result.count(201)} bookings answered 201, capacity {capacity}")

    def pgbench_cost(self, event: int, first: int, transactions: int) -> float | None:
        """Mean latency of the ledger's statement from one pgbench client: the database's share."""
        result = run_pgbench(
            database_url=BENCH_DATABASE_URL,
            clients=1,
            duration=self.sizes.growth_duration,
            transactions=transactions,
            event_id=event,
            first_customer_id=db.CUSTOMER_ID_OFFSET + first,
            customers=transactions + 1,
        )
        return result.latency_ms.get("mean")

    # --- the run -------------------------------------------------------------------------

    def run(self, scenarios: list[str]) -> None:
        # S6 brings its own instances and compares them with each other: no baseline needed.
        if [s for s in scenarios if s != "S6"]:
            self.run_two_instances(scenarios)
        if "S6" in scenarios:
            self.s6_scale_out()
        self.compute_ratios()

    def run_two_instances(self, scenarios: list[str]) -> None:
        """The baselines and S1-S5 and S7 on the two instances."""
        self.measure(
            Row("B1/pgbench", "B1", "pgbench ceiling (the ledger's statement, hot event)",
                "bookings/s"),
            self.pgbench_ceiling,
        )  # fmt: skip
        sizes = self.sizes
        # In this order; S5 last: it leaves the big table behind.
        steps = [
            (Row("B2/livez", "B2", "livez ceiling (GET /livez)", "requests/s"), self.livez_ceiling),
            (Row("S1", "S1", "hot sell-out", "bookings/s"), self.s1_sellout),
            (Row("S2", "S2", "sold-out storm", "rejections/s"), self.s2_storm),
            (Row("S3", "S3", "many events", "bookings/s"), self.s3_spread),
            (Row("S7", "S7", "hold → confirm, hot event", "confirmed/s"), self.s7_hold_confirm),
            (Row("S4", "S4", "mixed 90% reads", "requests/s"), self.s4_mixed),
            (Row("S5", "S5", f"growth 0 → {sizes.growth_rows:,} rows", "cost ratio"),
             self.s5_growth),
        ]  # fmt: skip
        self.start_cluster()
        try:
            for row, body in steps:
                if row.scenario == "B2" or row.scenario in scenarios:
                    self.measure(row, body)
        finally:
            self.cluster.stop()

    def compute_ratios(self) -> None:
        by_key = {row.key: row for row in self.rows}
        pg = by_key.get("B1/pgbench")
        livez = by_key.get("B2/livez")
        for row in self.rows:
            if row.scenario in ("S1", "S3") and pg:
                row.ratio, row.ratio_to = _ratio(row.value, pg.value), "pgbench"
            if row.scenario in ("S2", "S4") and livez:
                row.ratio, row.ratio_to = _ratio(row.value, livez.value), "livez"
            s1 = by_key.get("S1")
            if row.scenario == "S7":
                row.ratio, row.ratio_to = _ratio(row.value, s1.value if s1 else None), "S1"
            if row.scenario == "S3":
                row.details["vs_S1"] = _ratio(row.value, s1.value if s1 else None)
        direct, pooled = by_key.get("S6/direct"), by_key.get("S6/pgbouncer")
        if direct and pooled:
            pooled.ratio, pooled.ratio_to = _ratio(pooled.value, direct.value), "S6/direct"


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 3)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def targets(rows: list[Row]) -> list[dict[str, Any]]:
    """The issue's targets, evaluated against the run's rows."""
    by_key = {row.key: row for row in rows}
    s1, s2, s5, s7 = (by_key.get(key) for key in ("S1", "S2", "S5", "S7"))
    s6 = by_key.get("S6/pgbouncer")
    values = {
        "S1_vs_pgbench": s1.ratio if s1 else None,
        "S1_p99_ms": s1.p99_ms if s1 else None,
        "S2_vs_livez": s2.ratio if s2 else None,
        "S5_growth": s5.value if s5 else None,
        "S6_pgbouncer_vs_direct": s6.ratio if s6 else None,
        "S7_vs_S1": s7.ratio if s7 else None,
    }
    out = []
    for name, target in TARGETS.items():
        value = values[name]
        out.append(
            {
                "id": name,
                "name": target.name,
                "value": None if value is None else round(value, 3),
                "target": target.describe(),
                "grade": target.grade(value),
            }
        )
    return out


def machine() -> dict[str, Any]:
    def version(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "?"

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
    except OSError:
        commit = "?"
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
        "wrk": version(["wrk", "-v"]),
        "pgbench": version(["pgbench", "--version"]),
        "commit": commit,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness")
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help="comma-separated subset of S1..S7 (default all but S6, which starts 14 instances "
        "and a PgBouncer)",
    )
    parser.add_argument(
        "--s6-instances",
        type=int,
        help="S6: instances behind PgBouncer (default: the run's size, 12)",
    )
    parser.add_argument(
        "--s6-workers",
        type=int,
        help="S6: gunicorn workers per instance behind PgBouncer (default: the run's size)",
    )
    parser.add_argument(
        "--out",
        default=RESULTS_DIR,
        type=Path,
        help="directory for the JSON document and the chart (default: bench/results)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the workers during S1 (pip install py-spy)"
    )


def _subset(
    parser: argparse.ArgumentParser, raw: str, allowed: tuple[str, ...], what: str
) -> list[str]:
    chosen = [item.strip() for item in raw.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        parser.error(f"unknown {what}: {', '.join(unknown) or '(none)'}; use {','.join(allowed)}")
    return [item for item in allowed if item in chosen]


def main(args: argparse.Namespace) -> int:
    args.scenarios = _subset(args.parser, args.scenarios, SCENARIOS, "scenario")
    sizes = SMOKE if args.smoke else FULL
    if args.s6_instances:
        # Booting them all at once on 2 cores takes longer the more there are.
        sizes = replace(
            sizes,
            scaleout_instances=args.s6_instances,
            scaleout_start_timeout=max(sizes.scaleout_start_timeout, 3.0 * args.s6_instances),
        )
    if args.s6_workers:
        sizes = replace(sizes, scaleout_workers=args.s6_workers)
    require_tool("wrk")
    require_tool("pgbench")
    started_at = datetime.now(UTC)
    wall = time.monotonic()
    mode = "smoke" if args.smoke else "full"
    log(f"{mode} run: scenarios {args.scenarios}")
    log(f"database {BENCH_DATABASE_URL}: recreating, seeding {sizes.customers:,} customers")
    engine = db.recreate(BENCH_DATABASE_URL)
    db.seed_accounts(engine, sizes.customers)
    engine.dispose()

    bench = Bench(sizes, args)
    try:
        bench.run(args.scenarios)
    finally:
        bench.cluster.stop()
    rows = bench.rows
    result = {
        "started_at": started_at.isoformat(),
        "seconds": round(time.monotonic() - wall, 1),
        "mode": "smoke" if args.smoke else "full",
        "scenarios": args.scenarios,
        "sizes": sizes.as_dict(),
        "machine": machine(),
        "rows": [asdict(row) for row in rows],
        "targets": targets(rows),
        "invariant_violations": sum(len(row.violations) for row in rows),
        "failed": [row.key for row in rows if row.failed],
        "profile": bench.profile,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if args.smoke else "")
    json_path = args.out / f"{stamp}.json"
    png_path = args.out / f"{stamp}.png"
    result["chart"] = report.chart(result, png_path)
    json_path.write_text(json.dumps(result, indent=2, default=str))
    print(report.table(result))
    print(f"\nJSON: {json_path}\nchart: {result['chart'] or 'not drawn (matplotlib missing)'}")
    ok = not result["invariant_violations"] and not result["failed"]
    return 0 if ok else 1
