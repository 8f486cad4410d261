"""The event lock through python-redis-lock's own calls, to measure against the service's.

Issue 20 asks whether the lock library should run at run time. This module is the
benchmark's answer, not a product setting: the service's lock (booking_service/locking.py)
speaks python-redis-lock's protocol with its own calls; here the same lock runs through a
``redis_lock.Lock`` subclass wherever the library's calls do not cost an extra round trip,
and pays that round trip where they do:

- acquire: ``Lock.acquire(blocking=False)``, one SET NX per attempt, as the service's. The
  library's GET before it (re-entry detection) is skipped: a fresh holder id is never held.
  Waits stay the service's (sub-second BLPOP slices; the library's blocking acquire rounds its
  timeout down to whole seconds, 0.5 -> 0 -> wait for the whole lease).
- release: ``Lock.release()``, the library's UNLOCK_SCRIPT, which releases unconditionally and
  carries nothing else. So the statistics, a combining holder's replies and its "is anything
  queued" check (docs/architecture.md, "Combining across instances") travel in one
  pipelined round trip before it, and the release is a second one. The queue check and the
  release are no longer one step: an intent queued between them is taken over by its waiter,
  woken by the release (the hand-over the service's script avoids).
- renewal between batches: folded into the queue check (the library's extend() would be a
  round trip of its own; its auto-renewal is a thread per hold).
- the lost-wake-up SET NX of a queued waiter stays in that waiter's pipeline (combining.py):
  acquire() cannot be pipelined.

Two uses:

- ``python -m bench redislock round-trips``: Redis round trips per uncontended booking, both
  ways, counted in-process on the socket (exact; nothing else on the server counts).
- ``GUNICORN_CMD_ARGS="--worker-class bench.redislock_worker.Worker"`` in a benchmark's
  environment: every gunicorn worker of the bench's instances runs the lock through the
  library (the environment overrides gunicorn.conf.py; nothing in the product changes).
  scripts/redislock_compare.sh runs both, alternating the two ways.
- ``pytest -p bench.redislock``: the tests' locks too (with GUNICORN_CMD_ARGS as above for the
  instances the tests start).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis_lock

from booking_service.locking import (
    INDEX_REFRESHES_PER_WINDOW,
    SIGNAL_EXPIRE_MS,
    UNLOCK_MORE,
    UNLOCK_NOT_HELD,
    UPDATE_SCRIPT,
    EventLocks,
    LockStats,
    lock_key,
    lock_name,
    locks,
    recent_stats_key,
    recent_stats_shard,
    signal_key,
    stats_key,
)
from booking_service.redis_clients import REDIS_ERRORS, RedisConnection

log = logging.getLogger(__name__)

# A combining holder's "anything queued?" before the library's unconditional release: the next
# batch (renewing the lease) while the lock is still this holder's.
#   KEYS: lock key, intent queue
#   ARGV: holder id, lease (ms), batch max (0: hand over, take nothing)
# Returns -1 (not held), 0 (nothing to take: release) or the next batch.
NEXT_BATCH_SCRIPT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
    return -1
end
if tonumber(ARGV[3]) > 0 then
    local batch = redis.call('lpop', KEYS[2], ARGV[3])
    if batch then
        redis.call('pexpire', KEYS[1], ARGV[2])
        return batch
    end
end
return 0
"""


class EventLock(redis_lock.Lock):
    """One hold of an event's lock under the service's holder id (the live lock view reads it)."""

    # acquire() GETs the key first to refuse re-entry; a fresh holder id never re-enters.
    # False (counting only): the library's acquire as shipped, GET and all.
    skip_reentry_get = True

    def __init__(self, client: RedisConnection, event_id: int, holder: str, expire: int) -> None:
        super().__init__(client, lock_name(event_id), expire=expire, id=holder, strict=False)

    @property
    def _held(self) -> bool:
        return False if self.skip_reentry_get else super()._held

    @classmethod
    def register_scripts(cls, redis_client: Any) -> None:
        # The library registers its scripts once per process, on the class that asks first:
        # were that this subclass, every plain redis_lock.Lock would have none.
        redis_lock.Lock.register_scripts(redis_client)


@dataclass
class LibraryEventLocks(EventLocks):
    """EventLocks whose acquire and release are python-redis-lock's (see the module's doc).

    Installed over the one ``locks`` object (``install``), so that combining.py and every
    other caller, which hold that object, use it."""

    # Per holder, what its statistics already got: a combining holder adds them per batch,
    # as its release no longer carries them. Holder ids are unique per hold.
    _counted: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    _shas: set[str] = field(default_factory=set, repr=False)  # scripts loaded into Redis
    _sources: dict[str, str] = field(default_factory=dict, repr=False)

    def _try_take(self, holder: str, event_id: int) -> bool:
        assert self.client is not None
        lock = EventLock(self.client, event_id, holder, self.expire_seconds)
        return bool(lock.acquire(blocking=False))

    def _run_update(
        self,
        event_id: int,
        change: LockStats,
        *,
        holder: str = "",
        queue: str | None = None,
        replies: Sequence[tuple[str, str]] = (),
        batch_max: int = 0,
        reply_expire_ms: int = 0,
    ) -> tuple[int, list[Any]]:
        assert self.client is not None
        if not holder:  # statistics (and replies) only: nothing of the library's
            return super()._run_update(
                event_id, change, queue=queue, replies=replies, reply_expire_ms=reply_expire_ms
            )
        change = self._not_yet_counted(holder, change)
        # EVALSHA straight into the pipeline: redis-py's Script objects would make the
        # pipeline ask SCRIPT EXISTS first, a round trip of its own.
        pipe = self.client.pipeline(transaction=False)
        commands = [self._update_command(event_id, change, queue, replies, reply_expire_ms)]
        if queue is not None:
            commands.append(
                (
                    "EVALSHA",
                    self._sha(NEXT_BATCH_SCRIPT),
                    2,
                    lock_key(event_id),
                    queue,
                    holder,
                    self.expire_seconds * 1000,
                    batch_max,
                )
            )
        for command in commands:
            pipe.execute_command(*command)
        try:
            answers = pipe.execute(raise_on_error=False)
            for i, answer in enumerate(answers):
                if isinstance(answer, redis.exceptions.NoScriptError):  # Redis lost its scripts
                    self._shas.clear()
                    command = list(commands[i])
                    command[1] = self._sha(self._sources[command[1]])
                    answers[i] = self.client.execute_command(*command)
                elif isinstance(answer, Exception):
                    raise answer
        except REDIS_ERRORS:
            self._counted.pop(holder, None)  # the caller abandons the hold
            raise
        self._refresh_index(event_id, answers[0])
        if queue is not None:
            batch = answers[1]
            if batch == -1:
                return self._lost(event_id, holder), []
            if batch != 0:
                return UNLOCK_MORE, list(batch)
        self._counted.pop(holder, None)
        try:
            EventLock(self.client, event_id, holder, self.expire_seconds).release()
        except redis_lock.NotAcquired:
            return self._lost(event_id, holder), []
        return 0, []

    def _not_yet_counted(self, holder: str, change: LockStats) -> LockStats:
        """The part of a holder's running totals its statistics have not had yet."""
        seen = self._counted.get(holder)
        self._counted[holder] = (change.requests, change.hold_us)
        if seen is None:
            return LockStats(acquired=1, requests=change.requests, hold_us=change.hold_us)
        return LockStats(requests=change.requests - seen[0], hold_us=change.hold_us - seen[1])

    def _lost(self, event_id: int, holder: str) -> int:
        self._counted.pop(holder, None)
        self._record_stats(event_id, LockStats(lost=1))
        return UNLOCK_NOT_HELD

    def _sha(self, source: str) -> str:
        """The SHA1 of a script Redis has loaded (loaded on first use)."""
        digest = hashlib.sha1(source.encode()).hexdigest()
        if digest not in self._shas:
            assert self.client is not None
            self.client.script_load(source)
            self._shas.add(digest)
            self._sources[digest] = source
        return digest

    def _update_command(
        self,
        event_id: int,
        change: LockStats,
        queue: str | None,
        replies: Sequence[tuple[str, str]],
        reply_expire_ms: int,
    ) -> tuple[Any, ...]:
        """UPDATE_SCRIPT without a holder (replies and statistics), as the service calls it."""
        keys = [lock_key(event_id), signal_key(event_id), stats_key(event_id)]
        if queue is not None:
            keys += [queue, *(key for key, _ in replies)]
        counters = [item for pair in change.counters().items() for item in pair]
        args = [
            "",
            SIGNAL_EXPIRE_MS,
            f"{time.time():.3f}",
            self.stats_window_seconds,
            self.stats_window_seconds // INDEX_REFRESHES_PER_WINDOW,
            self.expire_seconds * 1000,
            0,
            reply_expire_ms,
            *(outcome for _, outcome in replies),
            *counters,
        ]
        return ("EVALSHA", self._sha(UPDATE_SCRIPT), len(keys), *keys, *args)

    def _refresh_index(self, event_id: int, answer: list[Any]) -> None:
        """The recent-events index, when UPDATE_SCRIPT says it is due (as the service does)."""
        if not answer[1]:
            return
        assert self.client is not None
        now = time.time()
        recent = recent_stats_key(recent_stats_shard(event_id))
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(recent, {str(event_id): now})
        pipe.zremrangebyscore(recent, "-inf", now - self.stats_window_seconds)
        pipe.expire(recent, self.stats_window_seconds)
        pipe.execute()


def install(target: EventLocks = locks) -> None:
    """Run ``target`` (the service's one ``locks`` object) through python-redis-lock."""
    target.__class__ = LibraryEventLocks
    target._counted = {}  # type: ignore[attr-defined]
    target._shas = set()  # type: ignore[attr-defined]
    target._sources = {}  # type: ignore[attr-defined]
    # python-redis-lock warns on every failed non-blocking attempt; the service logs its own.
    logging.getLogger("redis_lock").setLevel(logging.ERROR)


def uninstall(target: EventLocks = locks) -> None:
    target.__class__ = EventLocks


def pytest_configure(config: Any) -> None:
    """``pytest -p bench.redislock``: the tests' locks run through python-redis-lock too (the
    in-process ones; gunicorn instances the tests start need GUNICORN_CMD_ARGS as well)."""
    from booking_service import locking

    locking.EventLocks = LibraryEventLocks  # type: ignore[misc]
    install()


# --- counting round trips --------------------------------------------------------------------

# Keys of the lock protocol: a round trip that names one of them is the lock's.
LOCK_KEY_MARKS = (b"lock:", b"lock-signal:", b"lock-stats", b"-intents:", b"-reply:")


class RoundTrips:
    """Counts the writes redis-py makes from one thread: one per command or pipeline."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.trips: list[list[str]] = []
        self.scripts: dict[bytes, str] = {}
        self._original = redis.connection.AbstractConnection.send_packed_command

    def name_script(self, name: str, source: str | bytes) -> None:
        text = source.encode() if isinstance(source, str) else source
        self.scripts[hashlib.sha1(text).hexdigest().encode()] = name

    def __enter__(self) -> RoundTrips:
        counter = self

        def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> None:
            if threading.get_ident() == counter.thread:
                packed = command if isinstance(command, bytes) else b"".join(command)
                counter.trips.append(counter.describe(packed))
            counter._original(conn, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = send_packed_command
        return self

    def __exit__(self, *exc: object) -> None:
        redis.connection.AbstractConnection.send_packed_command = self._original

    def describe(self, packed: bytes) -> list[str]:
        """The commands of one write, scripts by name, '*' marking one of the lock's."""
        words: list[str] = []
        for command in _commands(packed):
            name = command[0].decode().upper()
            if name == "EVALSHA" and len(command) > 1:
                name = self.scripts.get(command[1], "EVALSHA")
            lock = any(mark in part for part in command[1:] for mark in LOCK_KEY_MARKS)
            words.append(name + ("*" if lock else ""))
        return words


def _commands(packed: bytes) -> list[list[bytes]]:
    """Split RESP-encoded commands (arrays of bulk strings) into their arguments."""
    out, pos = [], 0
    while pos < len(packed):
        end = packed.index(b"\r\n", pos)
        count, pos = int(packed[pos + 1 : end]), end + 2
        args = []
        for _ in range(count):
            end = packed.index(b"\r\n", pos)
            size, pos = int(packed[pos + 1 : end]), end + 2
            args.append(packed[pos : pos + size])
            pos += size + 2
        out.append(args)
    return out


def count_round_trips(bookings: int, database_url: str, redis_url: str) -> dict[str, Any]:
    """Book ``bookings`` events once each (uncontended), both ways; round trips per booking."""
    from bench import db
    from booking_service import create_app

    ways = (("service", False, True), ("library", True, True), ("library+GET", True, False))
    # One event per way, booked by one customer after another: uncontended, and the event's
    # statistics index entry is refreshed once, as on an event that stays busy.
    needed = len(ways) * (bookings + 1)
    engine = db.recreate(database_url)
    db.seed_accounts(engine, needed)
    events = db.create_events(engine, count=len(ways), capacity=needed, title="round trips")
    engine.dispose()
    redis.Redis.from_url(redis_url).flushdb()
    app = create_app({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING"})
    client = app.test_client()
    customer = iter(range(1, needed + 1))

    def book(event: int) -> None:
        n = next(customer)
        answer = client.post(
            "/api/v1/bookings",
            json={"event_id": event},
            headers={"Authorization": f"Bearer {db.token_for(n)}"},
        )
        if answer.status_code != 201:
            raise RuntimeError(f"booking answered {answer.status_code}: {answer.get_data()}")

    results: dict[str, Any] = {}
    for (way, use_library, skip_get), event in zip(ways, events, strict=True):
        EventLock.skip_reentry_get = skip_get
        if use_library:
            install()
        else:
            uninstall()
        book(event)  # warm-up: pools, script loads, session cache, the statistics index
        with RoundTrips() as trips:
            trips.name_script("UPDATE_SCRIPT", UPDATE_SCRIPT)
            trips.name_script("UNLOCK_SCRIPT", redis_lock.UNLOCK_SCRIPT)
            trips.name_script("NEXT_BATCH_SCRIPT", NEXT_BATCH_SCRIPT)
            for _ in range(bookings):
                book(event)
        lock_trips = [trip for trip in trips.trips if any(w.endswith("*") for w in trip)]
        results[way] = {
            "round_trips_per_booking": len(trips.trips) / bookings,
            "lock_round_trips_per_booking": len(lock_trips) / bookings,
            "lock_round_trips": Counter(" + ".join(trip) for trip in lock_trips),
        }
    uninstall()
    EventLock.skip_reentry_get = True
    return results


def summarize(out: Path) -> str:
    """One line per pair and scenario: bookings/s and p99 both ways, and their ratio."""
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(out.glob("*-*/*.json")):
        pair, way = path.parent.name.split("-", 1)
        rows = {row["key"]: row for row in json.loads(path.read_text())["rows"]}
        runs[(pair, way)] = rows
    lines = ["pair scenario  service b/s (p99 ms, ÷pgbench)  library b/s (p99 ms, ÷pgbench)  ratio"]
    for pair in sorted({pair for pair, _ in runs}, key=int):
        for scenario in ("S1", "S3"):
            cells, values = [], []
            for way in ("service", "library"):
                rows = runs.get((pair, way), {})
                # Rows are keyed "S1"; runs made before LOCK_STRATEGY went keyed them "S1/redis".
                row = rows.get(scenario) or rows.get(f"{scenario}/redis")
                if row is None or row["value"] is None:
                    cells.append(f"{'-':>30}")
                    values.append(None)
                    continue
                values.append(row["value"])
                vs_pgbench = f"{row['ratio']:.3f}" if row["ratio"] else "  -  "
                cells.append(
                    f"{row['value']:>10,.0f} ({row['p99_ms'] or 0:6.1f}, {vs_pgbench}){'':>8}"
                )
            ratio = f"{values[1] / values[0]:.3f}" if None not in values else "-"
            lines.append(f"{pair:>4} {scenario[:2]:<9} {cells[0]} {cells[1]} {ratio}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="step", required=True)
    count = sub.add_parser("round-trips", help="Redis round trips per uncontended booking")
    count.add_argument("--bookings", type=int, default=200)
    summary = sub.add_parser("summary", help="S1 and S3 per pair of runs, library ÷ service")
    summary.add_argument("out", type=Path, help="the directory of <pair>-<way>/ results")


def main(args: argparse.Namespace) -> int:
    from bench.settings import BENCH_DATABASE_URL, BENCH_REDIS_URL

    if args.step == "summary":
        print(summarize(args.out))
    if args.step == "round-trips":
        results = count_round_trips(args.bookings, BENCH_DATABASE_URL, BENCH_REDIS_URL)
        for way, result in results.items():
            print(
                f"{way}: {result['round_trips_per_booking']:g} Redis round trips per booking, "
                f"{result['lock_round_trips_per_booking']:g} of them the lock's"
            )
            for trip, n in sorted(result["lock_round_trips"].items()):
                print(f"    {n / args.bookings:g} x {trip}")
    return 0
