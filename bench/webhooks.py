"""Webhooks' cost and speed: S1 with and without one subscribed endpoint, and the relay's
deliveries per second to a local receiver.

    python -m bench webhooks [--rounds 3] [--capacity 3000] [--clients 64] [--messages 3000]

S1 is bench/run.py's sell-out (wrk, bench/lua/booking.lua, one hot event, a new customer per
request) through two gunicorn instances, three ways, in turn, each way first once in three
rounds so that drift on a shared machine hits all alike:

- without: no endpoint;
- outbox: one endpoint of the event's organizer subscribed to every type, the relays paused
  (this process holds their lease in Redis): the cost of writing the messages in the sale's
  statement;
- delivering: the same with the relays running, delivering to a loopback receiver while the
  sale runs (what production sees, on the same two cores).

The rate is the database's (first to last booking). Then the ledger's statement alone,
without and with the endpoint, per call on one connection; then the relay alone: ``--messages``
messages written to the outbox over 50 events at once, timed from the first delivery to the
last, as the receiver counts them.

BENCH_DATABASE_URL and BENCH_REDIS_URL choose where (bench/settings.py); the database is
recreated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from sqlalchemy import Engine, text

from bench import db
from bench.cluster import Cluster
from bench.load import run_wrk
from bench.settings import BENCH_DATABASE_URL, BENCH_REDIS_URL
from booking_service.services import ledger
from booking_service.services.outbox import EVENT_TYPES
from booking_service.services.relay import LEASE_KEY
from booking_service.services.webhooks import new_secret

CUSTOMERS = 20_000


class CountingReceiver:
    """A loopback HTTP receiver answering 204 at once, counting what it gets."""

    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the http.server API
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(204)
                self.end_headers()
                now = time.monotonic()
                with receiver._lock:
                    receiver.count += 1
                    receiver.first = receiver.first or now
                    receiver.last = now

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.count, self.first, self.last = 0, None, None


def subscribe(engine: Engine, url: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO webhook_endpoints (organizer_id, url, event_types, secret) "
                "VALUES (:organizer, :url, :types, :secret)"
            ),
            {
                "organizer": db.ORGANIZER_ID,
                "url": url,
                "types": list(EVENT_TYPES),
                "secret": new_secret(),
            },
        )


def unsubscribe(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM webhook_endpoints"))


def pending(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(
                text("SELECT count(*) FROM webhook_messages WHERE status = 'pending'")
            )
        )


def wait_drained(engine: Engine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pending(engine) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pending(engine):
        raise RuntimeError(f"outbox not drained within {timeout:g}s")


def s1(engine: Engine, cluster: Cluster, *, capacity: int, clients: int) -> dict[str, Any]:
    [event] = db.create_events(engine, count=1, capacity=capacity, title="S1 webhooks")
    since = db.clock(engine)
    result = run_wrk(
        "booking.lua",
        ports=cluster.ports,
        connections=clients,
        duration=120,
        env={
            "event_id": event,
            "stop_on_full": 1,
            "customer_first": 1,
            "customer_count": CUSTOMERS,
        },
        stop_when=lambda: db.booked(engine, event) >= capacity,
    )
    rate = db.booking_rate(engine, event, event, since=since)
    counts = db.event_counts(engine, event)
    if counts["booked_count"] != capacity:
        raise RuntimeError(f"not sold out: {counts}")
    with engine.connect() as connection:
        written = connection.scalar(
            text("SELECT count(*) FROM webhook_messages WHERE event_id = :e"), {"e": event}
        )
    return {
        "bookings_per_second": round(rate.per_second or 0.0, 1),
        "p99_ms": result.latency_ms.get("p99"),
        "messages": int(written or 0),
        "event_id": event,
    }


def relay_rate(engine: Engine, receiver: CountingReceiver, messages: int) -> dict[str, Any]:
    """Write ``messages`` messages over 50 events at once; time the relay delivering them."""
    events = db.create_events(engine, count=50, capacity=10, title="relay")
    receiver.reset()
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO webhook_messages (endpoint_id, event_id, type, data)
                SELECT (SELECT min(id) FROM webhook_endpoints), :first + n % 50,
                       'event.updated', to_jsonb(e)
                  FROM generate_series(0, :count - 1) AS n
                  JOIN events e ON e.id = :first + n % 50
                """
            ),
            {"first": events[0], "count": messages},
        )
    started = time.monotonic()
    wait_drained(engine, timeout=600)
    elapsed = time.monotonic() - started
    span = (receiver.last or 0) - (receiver.first or 0)
    return {
        "messages": messages,
        "received": receiver.count,
        "seconds": round(elapsed, 2),
        "deliveries_per_second": round((receiver.count - 1) / span, 1) if span > 0 else None,
    }


def statement_cost(engine: Engine, *, intents: int, rounds: int) -> dict[str, Any]:
    """The ledger's statement alone, one booking per call on one connection, without and with
    the endpoint in turn: microseconds per call (no HTTP, no Redis, no relay)."""
    per_call: dict[str, list[float]] = {"without": [], "with": []}
    customer = 1
    for round_ in range(rounds):
        for way in ("without", "with") if round_ % 2 == 0 else ("with", "without"):
            unsubscribe(engine)
            if way == "with":
                subscribe(engine, "http://127.0.0.1:9/unused")
            [event] = db.create_events(engine, count=1, capacity=intents, title="statement")
            with engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                started = time.perf_counter()
                for _ in range(intents):
                    book = ledger.intent(
                        "book", customer_id=db.CUSTOMER_ID_OFFSET + customer, seats=1
                    )
                    ledger.apply(connection, event, [{**book, "unqueued": True}])
                    customer = customer % CUSTOMERS + 1
                elapsed = time.perf_counter() - started
            per_call[way].append(round(elapsed / intents * 1e6, 1))
    unsubscribe(engine)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM webhook_messages"))
    medians = {way: statistics.median(values) for way, values in per_call.items()}
    return {
        "microseconds_per_call": per_call,
        "median": medians,
        "calls_per_second_ratio": round(medians["without"] / medians["with"], 3),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="S1 runs each way")
    parser.add_argument("--capacity", type=int, default=3000, help="S1's seats")
    parser.add_argument("--clients", type=int, default=64, help="wrk connections")
    parser.add_argument("--messages", type=int, default=3000, help="messages for the relay")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")


def main(args: argparse.Namespace) -> int:

    engine = db.recreate(BENCH_DATABASE_URL)
    db.seed_accounts(engine, CUSTOMERS)
    redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
    receiver = CountingReceiver()
    env = {
        "DATABASE_URL": BENCH_DATABASE_URL,
        "REDIS_URL": BENCH_REDIS_URL,
        "LOG_LEVEL": "WARNING",
        "METRICS_ENABLED": "true",
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
    }
    cluster = Cluster(env, workers=args.workers, threads=8, clients=args.clients)
    ways = ("without", "outbox", "delivering")
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in ways}
    lease = redis.Redis.from_url(BENCH_REDIS_URL)
    try:
        cluster.start()
        s1(engine, cluster, capacity=500, clients=args.clients)  # warm-up
        for round_ in range(args.rounds):
            for way in ways[round_ % 3 :] + ways[: round_ % 3]:  # each way goes first once
                unsubscribe(engine)
                if way != "without":
                    subscribe(engine, receiver.url)
                if way == "outbox":  # the relays wait: this process holds their lease
                    lease.set(LEASE_KEY, "bench", px=600_000)
                run = s1(engine, cluster, capacity=args.capacity, clients=args.clients)
                lease.delete(LEASE_KEY)
                if way != "without":
                    wait_drained(engine, timeout=300)  # before the next run, not during it
                runs[way].append(run)
                print(json.dumps({"way": way, **run}), flush=True)
        statement = statement_cost(engine, intents=2000, rounds=4)
        print(json.dumps({"statement": statement}), flush=True)
        unsubscribe(engine)
        subscribe(engine, receiver.url)
        relay = relay_rate(engine, receiver, args.messages)
    finally:
        lease.delete(LEASE_KEY)
        cluster.stop()
        receiver.server.shutdown()

    def ratios(way: str) -> list[float]:
        # Each round ran every way back to back: its ratio is the least disturbed by drift.
        return [
            round(w["bookings_per_second"] / wo["bookings_per_second"], 3)
            for w, wo in zip(runs[way], runs["without"], strict=True)
        ]

    summary = {
        "s1_bookings_per_second_median": {
            way: statistics.median(run["bookings_per_second"] for run in items)
            for way, items in runs.items()
        },
        "outbox_vs_without_per_round": ratios("outbox"),
        "delivering_vs_without_per_round": ratios("delivering"),
        "outbox_vs_without_median": statistics.median(ratios("outbox")),
        "delivering_vs_without_median": statistics.median(ratios("delivering")),
        "statement": statement,
        "relay": relay,
        "runs": runs,
    }
    print(json.dumps(summary, indent=2))
    return 0
