"""Per-event Redis locks (python-redis-lock) with bounded waits, loss detection and metrics.

The lock makes waiting happen in Redis instead of PostgreSQL and serializes multi-step flows;
it is *not* what prevents overbooking (the database constraints are). So a lost lease is
counted and logged, never treated as fatal, and Redis trouble fails closed with a 503.

The keys, the wake-up list and the unlock script are python-redis-lock's, so any of its clients
interoperates; the calls are ours, to spend fewer round trips: one SET NX per attempt, and the
unlock script pipelined with the statistics of the hold.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import redis
import redis_lock

from booking_service import metrics
from booking_service.errors import LockTimeout, LockUnavailable
from booking_service.extensions import REDIS_ERRORS, RedisConnection

log = logging.getLogger(__name__)

# --- the lock and statistics format in Redis -------------------------------------------------
# Written by EventLocks below and read by the live lock view (ops/lock_table.py); every key
# name, statistics field and the holder id are defined here and nowhere else.
#
# Redis Cluster: the keys one command or script touches together must hash to one slot. The
# event id is the hash tag of every per-event key ("{42}"), so the unlock script (lock key and
# signal list) and the statistics written with it stay on the event's node. No booking
# writes a key shared by all events: the index of recently active events is split into
# shards, one of them per event.

LOCK_NAME_PREFIX = "event:"
STATS_KEY_PREFIX = "lock-stats:"
RECENT_STATS_PREFIX = "lock-stats-recent:"
RECENT_STATS_SHARDS = 16
HOLDER_SEPARATOR = ":"

# python-redis-lock's release protocol, which _release runs itself (see there).
UNLOCK_SHA = hashlib.sha1(redis_lock.UNLOCK_SCRIPT).hexdigest()
UNLOCK_NOT_HELD = 1  # the script's answer when the key is gone or someone else's
SIGNAL_EXPIRE_MS = 1000  # python-redis-lock's default: how long an unconsumed wake-up lasts


def lock_name(event_id: int | str) -> str:
    """The python-redis-lock name of an event's lock (its Redis key is ``lock:<name>``)."""
    return f"{LOCK_NAME_PREFIX}{{{event_id}}}"


def lock_key(event_id: int | str) -> str:
    return f"lock:{lock_name(event_id)}"


def signal_key(event_id: int | str) -> str:
    return f"lock-signal:{lock_name(event_id)}"


def stats_key(event_id: int) -> str:
    return f"{STATS_KEY_PREFIX}{{{event_id}}}"


def recent_stats_key(shard: int) -> str:
    """One shard of the index of events with statistics in the window (a sorted set)."""
    return f"{RECENT_STATS_PREFIX}{{{shard}}}"


def recent_stats_shard(event_id: int) -> int:
    return event_id % RECENT_STATS_SHARDS


# SCAN pattern that finds every held event lock (braces are not special in a pattern).
HELD_LOCKS_PATTERN = lock_key("*")
_EVENT_ID = re.compile(r"(\d{1,19})\}?$")


def event_id_of(key: bytes | str) -> int | None:
    """The event id at the end of a lock key or a recent-statistics member, if there is one."""
    text = key.decode("ascii", "replace") if isinstance(key, bytes) else key
    match = _EVENT_ID.search(text)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def holder_id(instance: str, pid: int, nonce: str) -> str:
    """The value of a held lock key: which instance and process holds it, readable by operators."""
    return HOLDER_SEPARATOR.join((instance, str(pid), nonce))


def parse_holder(value: str) -> tuple[str | None, int | None]:
    """(instance, pid) of a holder id made by ``holder_id``; (None, None) for anyone else's."""
    parts = value.rsplit(HOLDER_SEPARATOR, 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None, None


@dataclass(frozen=True)
class LockStats:
    """One event's lock statistics: a Redis hash of these fields, kept for the stats window.

    As a change it is what one moment adds (counters only); as a reading, the totals since
    ``since`` (Unix time of the first activity in the window) up to ``last``.
    """

    acquired: int = 0  # lock holds
    requests: int = 0  # requests served under them (a group-commit batch is several)
    hold_us: int = 0  # total time held, microseconds
    waiters: int = 0  # requests queueing now (each adds 1 on queueing, -1 when done)
    timeouts: int = 0  # waits that gave up
    lost: int = 0  # leases lost before release
    last: float | None = None
    since: float | None = None

    COUNTERS: ClassVar[tuple[str, ...]] = (
        "acquired", "requests", "hold_us", "waiters", "timeouts", "lost"
    )  # fmt: skip

    def counters(self) -> dict[str, int]:
        """The non-zero counters, as field name -> amount."""
        return {name: amount for name in self.COUNTERS if (amount := getattr(self, name))}

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes] | None) -> LockStats:
        """Read the hash as Redis returns it (missing fields are zero or None)."""
        raw = raw or {}

        def moment(name: str) -> float | None:
            value = raw.get(name.encode())
            return float(value) if value else None

        counters = {name: int(raw.get(name.encode(), 0)) for name in cls.COUNTERS}
        return cls(**counters, last=moment("last"), since=moment("since"))


@dataclass
class Holding:
    """What a lock hold served; a batch of seat requests sets ``requests`` to its size."""

    requests: int = 1


@dataclass
class EventLocks:
    """Factory for event locks; configured once per process by ``configure``."""

    client: RedisConnection | None = None
    wait_seconds: float = 5.0
    expire_seconds: int = 10
    instance: str = "local"
    stats_window_seconds: int = 600
    # "none": hold() is a no-op and PostgreSQL alone arbitrates (benchmark comparisons).
    strategy: str = "redis"

    def configure(self, config: dict[str, Any], client: RedisConnection) -> None:
        self.client = client
        self.wait_seconds = float(config["LOCK_WAIT_SECONDS"])
        self.expire_seconds = int(config["LOCK_EXPIRE_SECONDS"])
        self.instance = config["INSTANCE_NAME"]
        self.stats_window_seconds = int(config["LOCK_STATS_WINDOW_SECONDS"])
        self.strategy = config.get("LOCK_STRATEGY", "redis")

    def _holder_id(self) -> str:
        return holder_id(self.instance, os.getpid(), uuid.uuid4().hex[:12])

    @contextmanager
    def hold(self, event_id: int) -> Iterator[Holding]:
        """Hold the event's lock for the duration of the block, or raise a 503 error."""
        holding = Holding()
        if self.strategy == "none":
            # No Redis at all: the conditional seat update and the partial unique index still
            # make overbooking impossible; concurrent requests queue on the row lock instead.
            yield holding
            return
        if self.client is None:
            raise RuntimeError("EventLocks used before configure")
        holder = self._holder_id()
        self._acquire(holder, event_id)
        acquired_at = time.monotonic()
        try:
            yield holding
        finally:
            held_for = time.monotonic() - acquired_at
            metrics.lock_hold_seconds.observe(held_for)
            self._release(holder, event_id, held_for=held_for, requests=holding.requests)

    def _acquire(self, holder: str, event_id: int) -> None:
        # Our own deadline loop instead of acquire(timeout=...): that one truncates to whole
        # seconds (0.5 -> 0 -> wait forever) and restarts its BLPOP wait after each wake-up.
        started = time.monotonic()
        deadline = started + self.wait_seconds
        metrics.lock_waiters.inc()
        waiting = timed_out = False
        try:
            while not self._try_take(holder, event_id):
                if not waiting:
                    # Counted only once the request really has to queue, so an uncontended
                    # acquisition pays no extra round trip for statistics.
                    waiting = True
                    self._record_stats(event_id, LockStats(waiters=1))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    metrics.lock_acquisitions_total.labels(outcome="timeout").inc()
                    raise LockTimeout(
                        f"Event {event_id} stayed locked for {self.wait_seconds:g}s; "
                        "nothing was written."
                    )
                # A release pushes one token onto the signal list and wakes one waiter.
                self.client.blpop([signal_key(event_id)], timeout=remaining)
        except REDIS_ERRORS as error:
            metrics.lock_acquisitions_total.labels(outcome="error").inc()
            raise LockUnavailable(
                "The lock service did not answer; nothing was written."
            ) from error
        finally:
            metrics.lock_waiters.dec()
            metrics.lock_wait_seconds.observe(time.monotonic() - started)
            if waiting:
                self._record_stats(event_id, LockStats(waiters=-1, timeouts=int(timed_out)))
        metrics.lock_acquisitions_total.labels(outcome="acquired").inc()

    def _try_take(self, holder: str, event_id: int) -> bool:
        """One SET NX EX, as python-redis-lock's acquire() does after first GETting the key to
        detect re-entry, which a fresh holder id never is; skipping the GET saves a round trip
        on every attempt, including each wake-up of a waiter on a hot event."""
        return bool(self.client.set(lock_key(event_id), holder, nx=True, ex=self.expire_seconds))

    def _release(self, holder: str, event_id: int, *, held_for: float, requests: int) -> None:
        """Release the lock and add the hold to the event's statistics in one round trip.

        The release is python-redis-lock's own unlock script (delete the key if it is still
        ours, signal one waiter), so every python-redis-lock client interoperates; it is sent
        in one pipeline with the statistics instead of on its own before them.
        """
        unlock = (UNLOCK_SHA, 2, lock_key(event_id), signal_key(event_id), holder, SIGNAL_EXPIRE_MS)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(*unlock)
            hold = LockStats(acquired=1, requests=requests, hold_us=int(held_for * 1_000_000))
            self._add_stats(pipe, event_id, hold)
            outcome = pipe.execute(raise_on_error=False)[0]
            if isinstance(outcome, redis.exceptions.NoScriptError):
                # The first release since this Redis started: load the script, then unlock.
                self.client.script_load(redis_lock.UNLOCK_SCRIPT)
                outcome = self.client.evalsha(*unlock)
            if isinstance(outcome, Exception):
                raise outcome
        except REDIS_ERRORS:
            # The work is committed; the lease expires on its own.
            log.warning("lock release failed: event=%s holder=%s", event_id, holder)
            return
        if outcome == UNLOCK_NOT_HELD:
            # The lease expired or was removed while we held it. The database constraints
            # kept the data correct; this is for operators to see.
            metrics.lock_lost_total.inc()
            log.warning(
                "lock lost: event=%s holder=%s held_for=%.3fs expire=%ss",
                event_id,
                holder,
                held_for,
                self.expire_seconds,
            )
            self._record_stats(event_id, LockStats(lost=1))

    def _record_stats(self, event_id: int, change: LockStats) -> None:
        """Add to the event's statistics for the live lock view; never fails the caller."""
        assert self.client is not None
        try:
            pipe = self.client.pipeline(transaction=False)
            self._add_stats(pipe, event_id, change)
            pipe.execute()
        except REDIS_ERRORS as error:
            # Statistics are for operators; the booking's outcome must not depend on them.
            log.debug("lock stats not recorded: event=%s error=%r", event_id, error)

    def _add_stats(self, pipe: Any, event_id: int, change: LockStats) -> None:
        now = time.time()
        key = stats_key(event_id)
        for field, amount in change.counters().items():
            pipe.hincrby(key, field, amount)
        pipe.hset(key, "last", f"{now:.3f}")
        pipe.hsetnx(key, "since", f"{now:.3f}")
        # An event quiet for a whole window starts again from zero.
        pipe.expire(key, self.stats_window_seconds)
        recent = recent_stats_key(recent_stats_shard(event_id))
        pipe.zadd(recent, {str(event_id): now})
        pipe.zremrangebyscore(recent, "-inf", now - self.stats_window_seconds)
        pipe.expire(recent, self.stats_window_seconds)


locks = EventLocks()
