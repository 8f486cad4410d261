"""Benchmark S8, a rush on an event with the waiting room, side by side with the same rush
without it.

    python -m bench waiting-room [--customers 20000] [--capacity 2000]

Needs PostgreSQL and Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL; the database is recreated)
and starts two gunicorn instances itself. The customers are coroutines of one asyncio client
with a pool of keep-alive connections. Phases:

1. livez, joins and polls as fast as wrk sends them (one wrk per instance, closed loop): the
   queue's cost. Sessions are warmed first (a customer who signed in before the sale has
   one cached); the cold first request of every customer is timed separately;
2. the rush: every customer joins the pre-queue, the sale starts, each polls as Retry-After
   says and, once admitted, holds a seat and confirms it (automatic pacing); the pacer's rate
   and its lock-wait estimate are sampled every second;
3. the same customers on a second event of the same capacity without the waiting room, all at
   once: hold, then confirm.

Prints one JSON line (``BENCH_JSON {...}``) and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

from harness.database import recreate_schema
from harness.instances import AppInstance, start_all, stop_all

API = "/api/v1"
ID_OFFSET = 1_000
TOKEN_PREFIX = "s8-"
JSON_MARKER = "BENCH_JSON "
WRK_SECONDS = 5
WRK_THREADS = 2
WRK_CONNECTIONS = 32  # per instance
# Each wrk thread sends as one customer after another: thread k of instance i takes the
# customers first + offset + k, then every ``stride``-th after it.
WRK_LUA = """
local first = tonumber(os.getenv("WR_FIRST"))
local count = tonumber(os.getenv("WR_COUNT"))
local offset = tonumber(os.getenv("WR_OFFSET"))
local stride = tonumber(os.getenv("WR_STRIDE"))
local method, path = os.getenv("WR_METHOD"), os.getenv("WR_PATH")
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  n = 0
end
function request()
  local id = first + (offset + tid + n * stride) % count
  n = n + 1
  local token = id .. "." .. os.getenv("WR_PREFIX") .. id
  return wrk.format(method, path, {["Authorization"] = "Bearer " .. token})
end
"""


def token_for(user_id: int) -> str:
    return f"{user_id}.{TOKEN_PREFIX}{user_id}"


# --- set-up ----------------------------------------------------------------------------------


def prepare(database_url: str, customers: int) -> Any:
    recreate_schema(database_url)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (id, username, username_key, email, password_hash, role, "
                "organization_name, business_address) VALUES (1, 'org', 'org', "
                "'o@bench.invalid', '!', 'organizer', 'Org', 'Street')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO users (id, username, username_key, email, password_hash, role) "
                "SELECT k, 's8-' || k, 's8-' || k, k || '@bench.invalid', '!', 'customer' "
                "FROM generate_series(:first, :last) AS k"
            ),
            {"first": ID_OFFSET + 1, "last": ID_OFFSET + customers},
        )
        connection.execute(
            text(
                "INSERT INTO api_tokens (user_id, token_hash, expires_at) "
                "SELECT k, encode(sha256(convert_to(k || '.' || :prefix || k, 'UTF8')), 'hex'), "
                "now() + interval '1 day' FROM generate_series(:first, :last) AS k"
            ),
            {"first": ID_OFFSET + 1, "last": ID_OFFSET + customers, "prefix": TOKEN_PREFIX},
        )
        connection.execute(
            text("SELECT setval(pg_get_serial_sequence('users', 'id'), max(id)) FROM users")
        )
    return engine


def create_event(engine: Any, *, capacity: int, waiting_room: bool) -> int:
    with engine.begin() as connection:
        return int(
            connection.scalar(
                text(
                    "INSERT INTO events (organizer_id, title, start_time, end_time, capacity, "
                    "sale_starts_at, waiting_room) VALUES (1, 'S8', now() + interval '30 days', "
                    "now() + interval '30 days 2 hours', :capacity, "
                    "CASE WHEN :room THEN now() + interval '1 day' END, :room) RETURNING id"
                ),
                {"capacity": capacity, "room": waiting_room},
            )
        )


def start_sale(engine: Any, redis_client: redis.Redis, event_id: int) -> None:
    """The sale starts now: the column, then the change counter (as the service's PATCH)."""
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE events SET sale_starts_at = now() WHERE id = :id"), {"id": event_id}
        )
    redis_client.incr(f"event-version:{{{event_id}}}")


def invariant_violations(engine: Any, event_id: int) -> int:
    with engine.begin() as connection:
        row = connection.execute(
            text(
                "SELECT e.booked_count, e.held_count, e.capacity, "
                "(SELECT coalesce(sum(seats), 0) FROM bookings WHERE event_id = e.id "
                " AND status = 'active') AS booked, "
                "(SELECT coalesce(sum(seats), 0) FROM holds WHERE event_id = e.id "
                " AND status = 'held') AS held, "
                "(SELECT count(*) FROM (SELECT customer_id FROM bookings WHERE event_id = e.id "
                " AND status = 'active' GROUP BY customer_id HAVING count(*) > 1) d) AS dup "
                "FROM events e WHERE e.id = :id"
            ),
            {"id": event_id},
        ).one()
    return (
        int(row.booked_count != row.booked)
        + int(row.held_count != row.held)
        + int(row.booked_count + row.held_count > row.capacity)
        + int(row.dup)
    )


def sold(engine: Any, event_id: int) -> int:
    with engine.begin() as connection:
        return int(
            connection.scalar(
                text("SELECT booked_count FROM events WHERE id = :id"), {"id": event_id}
            )
        )


# --- the client ------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    # From the request's first byte sent to its answer's last read: the server's time (and
    # the network's), not the wait of a customer coroutine for a free connection.
    seconds: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Pool:
    """Keep-alive HTTP/1.1 connections to the instances, round robin."""

    def __init__(self, ports: list[int], size: int) -> None:
        self.ports = ports
        self.size = size
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, int]] = (
            asyncio.Queue()
        )
        self.opened = 0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
        port = self.ports[self.opened % len(self.ports)]
        self.opened += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return reader, writer, port

    async def request(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> Answer:
        if self.idle.empty() and self.opened < self.size:
            try:
                connection = await self._open()
            except OSError:
                self.opened -= 1
                return Answer(599, {}, b"")
        else:
            connection = await self.idle.get()
        reader, writer, port = connection
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += f"Content-Length: {len(payload)}\r\n\r\n"
        sent = time.perf_counter()
        try:
            writer.write(head.encode() + payload)
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            data = await reader.readexactly(int(headers.get("content-length", "0")))
        except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
            writer.close()
            self.opened -= 1
            return Answer(599, {}, b"")
        if headers.get("connection", "").lower() == "close":
            writer.close()
            self.opened -= 1
        else:
            self.idle.put_nowait(connection)
        return Answer(status, headers, data, time.perf_counter() - sent)


def wrk_rps(
    ports: list[int], method: str, path: str, customers: int, *, random_start: bool
) -> float:
    """Requests per second of one wrk per instance, run together, summed."""
    script = Path(tempfile.mkdtemp(prefix="s8-wrk-")) / "queue.lua"
    script.write_text(WRK_LUA)
    stride = WRK_THREADS * len(ports)
    processes = []
    for n, port in enumerate(ports):
        env = {
            **os.environ,
            "WR_FIRST": str(ID_OFFSET + 1),
            "WR_COUNT": str(customers),
            "WR_OFFSET": str(random.randrange(customers) if random_start else n * WRK_THREADS),
            "WR_STRIDE": str(stride),
            "WR_METHOD": method,
            "WR_PATH": path,
            "WR_PREFIX": TOKEN_PREFIX,
        }
        command = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s"]
        command += ["-s", str(script), f"http://127.0.0.1:{port}"]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    total = 0.0
    for process in processes:
        out, _ = process.communicate(timeout=WRK_SECONDS + 30)
        match = [line for line in out.splitlines() if line.startswith("Requests/sec:")]
        if not match:
            raise RuntimeError(f"wrk printed no rate:\n{out}")
        total += float(match[0].split()[1])
    return total


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Rush:
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    hold_ms: list[float] = field(default_factory=list)
    confirm_ms: list[float] = field(default_factory=list)
    polls: int = 0

    def record(self, answer: Answer) -> None:
        self.statuses[answer.status] += 1
        if answer.status >= 400 and answer.body:
            try:
                self.codes[f"{answer.status} {answer.json().get('code')}"] += 1
            except ValueError:
                self.codes[f"{answer.status} ?"] += 1


async def hold_and_confirm(pool: Pool, rush: Rush, token: str, event_id: int) -> None:
    held = await pool.request("POST", f"{API}/events/{event_id}/holds", token, {"seats": 1})
    rush.record(held)
    if held.status != 201:
        return
    rush.hold_ms.append(held.seconds * 1000)
    confirmed = await pool.request("POST", f"{API}/holds/{held.json()['id']}/confirm", token, {})
    rush.record(confirmed)
    if confirmed.status == 201:
        rush.confirm_ms.append(confirmed.seconds * 1000)


async def customer_in_queue(pool: Pool, rush: Rush, token: str, event_id: int, end: float) -> None:
    await asyncio.sleep(random.uniform(0, 1))
    while time.monotonic() < end:
        answer = await pool.request("GET", f"{API}/events/{event_id}/queue", token)
        rush.polls += 1
        rush.record(answer)
        if answer.status != 200:
            await asyncio.sleep(1)
            continue
        entry = answer.json()
        if entry["state"] == "admitted":
            await hold_and_confirm(pool, rush, token, event_id)
            return
        if entry["state"] in ("sold_out", "lapsed"):
            return
        await asyncio.sleep(float(answer.headers.get("retry-after", "1")))


async def sample_pacer(
    redis_client: redis.Redis, event_id: int, end: float
) -> list[dict[str, Any]]:
    samples = []
    began = time.monotonic()
    while time.monotonic() < end:
        meta = redis_client.hgetall(f"waitroom:{{{event_id}}}")
        depth = redis_client.zcard(f"waitroom-queue:{{{event_id}}}")
        samples.append(
            {
                "t": round(time.monotonic() - began, 1),
                "rate_per_s": round(float(meta.get(b"rate", 0) or 0), 1),
                "lock_wait_ms": round(float(meta.get(b"wait_ms", 0) or 0), 1),
                "admitted": int(meta.get(b"served", 0) or 0),
                "waiting": depth,
            }
        )
        if meta.get(b"sold_out") == b"1":
            break
        await asyncio.sleep(1)
    return samples


async def run(args: argparse.Namespace) -> dict[str, Any]:
    database_url = os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/booking_bench_s8"
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    redis_client = redis.Redis.from_url(redis_url)
    redis_client.flushdb()
    engine = prepare(database_url, args.customers)
    tokens = [token_for(ID_OFFSET + k) for k in range(1, args.customers + 1)]
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "8",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_BOOKINGS": "1000000/minute",
        "RATE_LIMIT_QUEUE_JOIN": "1000000/minute",
        "RATE_LIMIT_QUEUE_POLL": "1000000/minute",
        "HOLD_TTL_SECONDS": "600",
    }
    instances = [AppInstance(env, name=f"s8-{n}") for n in range(2)]
    start_all(instances)
    pool = Pool([instance.port for instance in instances], args.connections)
    try:
        with_room = create_event(engine, capacity=args.capacity, waiting_room=True)
        without = create_event(engine, capacity=args.capacity, waiting_room=False)

        ports = [instance.port for instance in instances]
        queue_path = f"{API}/events/{with_room}/queue"
        rush = Rush()
        # Every customer's first request (a poll: 404, not in the queue yet) resolves the
        # token in PostgreSQL and caches the session, as a sign-in before the sale would.
        warmed_at = time.monotonic()
        chunks = [tokens[i :: args.connections] for i in range(args.connections)]

        async def first_requests(chunk: list[str]) -> None:
            for token in chunk:
                await pool.request("GET", queue_path, token)

        await asyncio.gather(*(first_requests(chunk) for chunk in chunks))
        cold_rps = args.customers / (time.monotonic() - warmed_at)
        livez = wrk_rps(ports, "GET", "/livez", args.customers, random_start=True)
        join_rps = wrk_rps(ports, "POST", queue_path, args.customers, random_start=False)
        polls = wrk_rps(ports, "GET", queue_path, args.customers, random_start=True)

        # The rest of the pre-queue: everyone not in it yet joins (a join again is a 200).
        async def join_all(chunk: list[str]) -> None:
            for token in chunk:
                rush.record(await pool.request("POST", queue_path, token))

        await asyncio.gather(*(join_all(chunk) for chunk in chunks))

        # The rush: the sale starts; admitted customers hold and confirm.
        start_sale(engine, redis_client, with_room)
        end = time.monotonic() + args.max_seconds
        sampler = asyncio.create_task(sample_pacer(redis_client, with_room, end))
        began = time.monotonic()
        await asyncio.gather(
            *(customer_in_queue(pool, rush, token, with_room, end) for token in tokens)
        )
        rush_seconds = time.monotonic() - began
        pacing = await sampler

        # The same rush without the waiting room: everyone at once.
        bare = Rush()
        bare_began = time.monotonic()
        await asyncio.gather(*(hold_and_confirm(pool, bare, token, without) for token in tokens))
        bare_seconds = time.monotonic() - bare_began

        def side(result: Rush, event_id: int, seconds: float) -> dict[str, Any]:
            return {
                "seats_sold": sold(engine, event_id),
                "capacity": args.capacity,
                "invariant_violations": invariant_violations(engine, event_id),
                "5xx": sum(n for status, n in result.statuses.items() if status >= 500),
                "lock_timeout_503": result.codes.get("503 lock_timeout", 0),
                "hold_p50_ms": percentile(result.hold_ms, 0.5),
                "hold_p99_ms": percentile(result.hold_ms, 0.99),
                "confirm_p50_ms": percentile(result.confirm_ms, 0.5),
                "confirm_p99_ms": percentile(result.confirm_ms, 0.99),
                "seconds": round(seconds, 1),
                "answers": dict(result.codes),
            }

        return {
            "customers": args.customers,
            "capacity": args.capacity,
            "connections": args.connections,
            "first_request_rps": round(cold_rps),
            "livez_rps": round(livez),
            "join_rps": round(join_rps),
            "poll_rps": round(polls),
            "join_over_livez": round(join_rps / livez, 2),
            "poll_over_livez": round(polls / livez, 2),
            "waiting_room": {**side(rush, with_room, rush_seconds), "polls": rush.polls},
            "without_waiting_room": side(bare, without, bare_seconds),
            "pacing": pacing,
        }
    finally:
        stop_all(instances)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--capacity", type=int, default=2_000)
    # Customers share this many keep-alive connections (latencies are timed on the
    # connection, from send to answer): enough that the no-waiting-room rush queues in
    # front of the instances' threads, as 20,000 browsers would, not in this client.
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--max-seconds", type=float, default=240)


def main(args: argparse.Namespace) -> int:
    # A terminated run still stops its instances (the finally in run()).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    result = asyncio.run(run(args))
    print(JSON_MARKER + json.dumps(result))
    counts = f"{result['livez_rps']} / {result['join_rps']} / {result['poll_rps']}"
    print(f"first request of each customer (cold session): {result['first_request_rps']}/s")
    ratios = f"{result['join_over_livez']} / {result['poll_over_livez']}"
    rows = [
        ("livez / join / poll requests/s", counts, ""),
        ("join / poll ÷ livez", ratios, ""),
    ]
    for key in ("seats_sold", "5xx", "lock_timeout_503", "invariant_violations", "hold_p99_ms",
                "confirm_p99_ms", "seconds"):  # fmt: skip
        rows.append(
            (key, str(result["waiting_room"][key]), str(result["without_waiting_room"][key]))
        )
    print(f"{'':34} {'waiting room':>16} {'without':>16}")
    for name, with_room, without in rows:
        print(f"{name:34} {with_room:>16} {without:>16}")
    print("pacing (t s, rate/s, lock wait ms, admitted, waiting):")
    for sample in result["pacing"]:
        print(
            f"  {sample['t']:6.1f} {sample['rate_per_s']:7.1f} {sample['lock_wait_ms']:8.1f} "
            f"{sample['admitted']:7d} {sample['waiting']:7d}"
        )
    return 0
