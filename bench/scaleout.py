"""Scale-out measurement: N instances at the README defaults book hot events all at once,
straight to PostgreSQL or through one PgBouncer; what do clients get, how many sessions?

The procedure: recreate the bench database (BENCH_DATABASE_URL) and seed customers with
tokens; flush the bench Redis (BENCH_REDIS_URL); start N gunicorn instances with the README
defaults (2 workers x 8 threads, a pool of 8 + 2 connections per worker, so up to 20
connections per instance), cold; create a few hot events with room for every booking; then
start one wrk per instance, all at once, each booking the hot events with customers of its
own (every request a new customer). Meanwhile pg_stat_activity is sampled every 100 ms for
the service's sessions and, through PgBouncer, SHOW CLIENTS / SHOW POOLS for its client
connections. Afterwards the answers are counted by HTTP status and problem code (503
``db_unavailable`` in particular) and the reconciliation queries must find nothing.

Prints, on standard output, a Markdown table (header and one row):

    | instances | bookings created | 503 db_unavailable | other non-2xx | PostgreSQL sessions peak |

where bookings created counts the rows in the database (the 201s, plus requests still in
flight when wrk stopped counting), and, on standard error, the answers by code, socket
errors, PgBouncer's peaks and the server's ``max_connections``. Exit status 1 if an
invariant was broken, else 0: 503s are what is being measured, not a failure of the script.

Straight to PostgreSQL, N instances may take every session ``max_connections`` allows, and
other users of that server are refused meanwhile. On a shared server, ``--connection-limit``
runs the instances as a temporary role allowed that many sessions instead (dropped after).
The PgBouncer is private (a free loopback port), in transaction pooling with a pool of 20
server connections, as deploy/k8s/base/pgbouncer.ini. Needs wrk, and pgbouncer for
``--via-pgbouncer``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field

import redis
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from bench import db
from bench.cluster import Cluster, deployed_pgbouncer
from bench.load import LoadResult, require_tool, run_wrk
from bench.settings import BENCH_DATABASE_URL, BENCH_REDIS_URL, FULL, log
from harness.database import limited_role
from harness.pgbouncer import PgBouncer, PoolSampler

# README defaults: WEB_CONCURRENCY x GUNICORN_THREADS, pool = threads, overflow 2.
WORKERS = 2
THREADS = 8
SERVER_POOL = FULL.scaleout_server_pool  # as deploy/k8s/base/pgbouncer.ini
ROOMY = 10_000_000  # no hot event sells out: every answer is about the path, not the seats
DB_UNAVAILABLE = "503 db_unavailable"
HEADER = (
    "| instances | bookings created | 503 db_unavailable | other non-2xx "
    "| PostgreSQL sessions peak |\n|---|---|---|---|---|"
)


@dataclass
class Outcome:
    """What the run measured, summed over every wrk."""

    instances: int
    via_pgbouncer: bool
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    socket_errors: Counter[str] = field(default_factory=Counter)
    bookings_in_database: int = 0  # "bookings created": 201s plus those in flight at the end
    sessions_peak: int = 0
    server_sessions_peak: int = 0
    pgbouncer_clients_peak: int | None = None
    pgbouncer_waiting_peak: int | None = None
    pgbouncer_servers_peak: int | None = None
    violations: list[str] = field(default_factory=list)
    wrapped: int = 0  # wrk processes that ran out of fresh customers

    def add(self, result: LoadResult) -> None:
        self.statuses.update(result.statuses)
        self.codes.update(result.codes)
        self.socket_errors.update({k: v for k, v in result.socket_errors.items() if v})

    @property
    def answered_201(self) -> int:
        return self.statuses.get("201", 0)

    @property
    def db_unavailable(self) -> int:
        return self.codes.get(DB_UNAVAILABLE, 0)

    @property
    def other_non_2xx(self) -> int:
        non_2xx = sum(n for status, n in self.statuses.items() if not status.startswith("2"))
        return non_2xx - self.db_unavailable

    def row(self) -> str:
        route = "via PgBouncer" if self.via_pgbouncer else "direct"
        return (
            f"| {self.instances} {route} | {self.bookings_in_database} | {self.db_unavailable} "
            f"| {self.other_non_2xx} | {self.sessions_peak} |"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instances", type=int, default=12, help="gunicorn instances")
    parser.add_argument(
        "--via-pgbouncer", action="store_true", help="instances connect through one PgBouncer"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the load")
    parser.add_argument(
        "--connections",
        type=int,
        default=WORKERS * THREADS,
        help="wrk connections per instance (default: one per gunicorn thread)",
    )
    parser.add_argument("--events", type=int, default=4, help="hot events booked by everyone")
    parser.add_argument("--customers", type=int, default=100_000, help="seeded customers")
    parser.add_argument(
        "--connection-limit",
        type=int,
        default=None,
        help="run the instances as a temporary role allowed this many sessions",
    )


def measure(args: argparse.Namespace, engine: Engine, database_user: str) -> Outcome:
    url = make_url(BENCH_DATABASE_URL)
    database = url.database or "postgres"
    outcome = Outcome(args.instances, args.via_pgbouncer)
    with ExitStack() as stack:
        user = database_user
        if args.connection_limit is not None:
            role = f"booking_scaleout_{os.getpid()}"  # roles are server-wide: one per run
            user = stack.enter_context(limited_role(role, args.connection_limit, database))
        pgbouncer: PgBouncer | None = None
        if args.via_pgbouncer:
            pgbouncer = stack.enter_context(deployed_pgbouncer(url, user, SERVER_POOL))
            database_url = pgbouncer.url(database, user)
        else:
            database_url = url.set(username=user).render_as_string(hide_password=False)
        cluster = Cluster(
            {"DATABASE_URL": database_url, "REDIS_URL": BENCH_REDIS_URL, "LOG_LEVEL": "WARNING"},
            workers=WORKERS,
            threads=THREADS,
            # At most connections / workers keep-alive connections per worker: wrk's
            # connections spread over both workers of an instance, as behind a balancer.
            clients=args.connections * args.instances,
            count=args.instances,
            name="scaleout",
            start_timeout=120.0,
        )
        stack.callback(cluster.stop)
        log(f"starting {args.instances} instances x {WORKERS} workers x {THREADS} threads")
        started = time.monotonic()
        cluster.start()
        log(
            f"all {args.instances} instances answer /livez after {time.monotonic() - started:.1f} s"
        )

        events = db.create_events(engine, count=args.events, capacity=ROOMY, title="scale-out")
        block = args.customers // args.instances
        pool_sampler = PoolSampler(pgbouncer, database, user) if pgbouncer else None

        def one_wrk(index: int) -> LoadResult:
            return run_wrk(
                "booking.lua",
                ports=[cluster.ports[index]],
                connections=args.connections,
                duration=args.seconds,
                env={
                    "event_id": events[index % len(events)],
                    "customer_first": 1 + index * block,
                    "customer_count": block,
                },
            )

        log(
            f"{args.instances} wrk x {args.connections} connections for {args.seconds:g} s, "
            f"{len(events)} hot events, {block:,} customers per wrk"
        )
        # All at once: a fleet that scales out, or restarts, does not warm up politely.
        with (
            db.ActivitySampler(engine, BENCH_REDIS_URL) as sessions,
            pool_sampler or nullcontext(),
            ThreadPoolExecutor(max_workers=args.instances) as pool,
        ):
            results = list(pool.map(one_wrk, range(args.instances)))
        for result in results:
            outcome.add(result)
            outcome.wrapped += result.requests > block
        outcome.sessions_peak = sessions.peak("db_connections")
        outcome.server_sessions_peak = sessions.peak("server_sessions")
        if pool_sampler is not None:
            outcome.pgbouncer_clients_peak = pool_sampler.peak_clients
            outcome.pgbouncer_waiting_peak = pool_sampler.peak_waiting
            outcome.pgbouncer_servers_peak = pool_sampler.peak_servers
    with engine.connect() as connection:
        outcome.bookings_in_database = int(
            connection.scalar(
                text("SELECT count(*) FROM bookings WHERE event_id BETWEEN :first AND :last"),
                {"first": events[0], "last": events[-1]},
            )
        )
    outcome.violations = db.check_invariants(engine)
    return outcome


def report(outcome: Outcome, max_connections: str) -> None:
    log(f"answers by code: {dict(sorted(outcome.codes.items())) or 'none but 2xx'}")
    log(f"statuses: {dict(sorted(outcome.statuses.items()))}")
    if outcome.socket_errors:
        log(f"socket errors and timeouts (no HTTP answer): {dict(outcome.socket_errors)}")
    # wrk stops counting at the deadline; requests in flight then still book, unseen.
    log(
        f"bookings created (rows in the database): {outcome.bookings_in_database}, of which "
        f"{outcome.answered_201} answered 201 before wrk stopped counting"
    )
    log(
        f"PostgreSQL sessions peak: {outcome.sessions_peak} of the service, "
        f"{outcome.server_sessions_peak} on the whole server (max_connections {max_connections})"
    )
    if outcome.via_pgbouncer:
        log(
            f"PgBouncer peaks: {outcome.pgbouncer_clients_peak} client connections, "
            f"{outcome.pgbouncer_waiting_peak} waiting, "
            f"{outcome.pgbouncer_servers_peak} server connections (pool {SERVER_POOL})"
        )
    if outcome.wrapped:
        log(
            f"{outcome.wrapped} wrk ran out of fresh customers and reused some "
            "(409 already_booked); raise --customers"
        )
    log(f"invariant violations: {len(outcome.violations)}")
    for violation in outcome.violations:
        log(f"  {violation}")
    print(HEADER)
    print(outcome.row())


def main(args: argparse.Namespace) -> int:
    if args.instances < 1 or args.connections < 1 or args.events < 1:
        args.parser.error("--instances, --connections and --events must be at least 1")
    if args.customers < args.instances:
        args.parser.error("--customers must be at least --instances")
    require_tool("wrk")
    log(f"database {BENCH_DATABASE_URL}: recreating, seeding {args.customers:,} customers")
    engine = db.recreate(BENCH_DATABASE_URL)
    try:
        db.seed_accounts(engine, args.customers)
        redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
        with engine.connect() as connection:
            max_connections = str(connection.scalar(text("SHOW max_connections")))
        user = make_url(BENCH_DATABASE_URL).username or "postgres"
        outcome = measure(args, engine, user)
        report(outcome, max_connections)
    finally:
        engine.dispose()
    return 1 if outcome.violations else 0
