"""Per-event Redis locks (python-redis-lock's protocol) with bounded waits, loss detection and
per-event statistics.

The lock makes waiting happen in Redis instead of PostgreSQL and serializes multi-step flows;
it is *not* what prevents overbooking (the database constraints are). So a lost lease is
counted and logged, never treated as fatal, and Redis trouble fails closed with a 503.

The keys, the wake-up list and the unlock steps are python-redis-lock's, so any of its clients
interoperates; the calls are ours, to spend fewer round trips: one SET NX per attempt, and one
script call that releases the lock and adds the hold to the statistics.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from booking_service import metrics
from booking_service.errors import LockTimeout, LockUnavailable
from booking_service.redis_clients import REDIS_ERRORS, RedisConnection

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

UNLOCK_NOT_HELD = 1  # the unlock's answer when the key is gone or someone else's
UNLOCK_MORE = 2  # a combining holder's answer: intents are queued, the lock is still ours
SIGNAL_EXPIRE_MS = 1000  # python-redis-lock's default: how long an unconsumed wake-up lasts
# While an event stays active its index entry is refreshed this many times per window.
INDEX_REFRESHES_PER_WINDOW = 10

# Releases a lock and adds to the event's statistics in one call, or only adds (no holder).
# The release is python-redis-lock's own unlock (its UNLOCK_SCRIPT, step for step: delete the
# key if it is still ours, push one wake-up onto the signal list), so every python-redis-lock
# client interoperates. All keys carry the event's hash tag: one slot, one node.
#
# A combining holder (combining.py) also passes the event's intent queue and the reply lists
# of the batch it has just applied: the replies are pushed first (committed outcomes are true
# whether or not the lease still holds), and the lock is released only if the queue is empty,
# checked in the same step, so an intent queued just before the release is never stranded.
# Otherwise the lock stays ours with a fresh lease and the next batch comes back ("more").
#   KEYS: lock key, signal list, statistics hash[, intent queue[, reply lists...]]
#   ARGV: holder id ('' = statistics only), signal expiry (ms), now (Unix seconds), window (s),
#         index refresh interval (s), lease (ms), batch max (0: release all the same, the
#         wake-up hands the queue to a waiter), reply expiry (ms), one reply per
#         reply list, then field/amount pairs to add
# Returns {unlock answer (0 released, 1 not held, 2 more queued, -1 no release), 1 if the
# index is due[, the next batch of queued intents when 2]}.
UPDATE_SCRIPT = """
local replies = math.max(#KEYS - 4, 0)
for i = 1, replies do
    redis.call('rpush', KEYS[4 + i], ARGV[8 + i])
    redis.call('pexpire', KEYS[4 + i], ARGV[8])
end
if replies > 0 then
    -- Each answered waiter leaves the queue here (it counted itself in when it queued).
    redis.pcall('hincrby', KEYS[3], 'waiters', -replies)
end
local released = -1
if ARGV[1] ~= '' then
    if redis.call('get', KEYS[1]) ~= ARGV[1] then
        released = 1
    elseif #KEYS >= 4 and tonumber(ARGV[7]) > 0 and redis.call('llen', KEYS[4]) > 0 then
        -- Intents are queued: keep the lock, renew the lease and hand back the next batch
        -- (a batch max of 0: the holder hands over; the wake-up below brings a waiter).
        -- Statistics wait for the real release, which adds the whole hold at once.
        redis.call('pexpire', KEYS[1], ARGV[6])
        return {2, 0, redis.call('lpop', KEYS[4], ARGV[7])}
    else
        redis.call('del', KEYS[2])
        redis.call('lpush', KEYS[2], 1)
        redis.call('pexpire', KEYS[2], ARGV[2])
        redis.call('del', KEYS[1])
        released = 0
    end
end
-- Statistics are for operators: pcall, so that a broken statistics key never fails a release.
local stat = redis.pcall
if released == 1 then
    stat('hincrby', KEYS[3], 'lost', 1)
end
for i = 9 + replies, #ARGV, 2 do
    stat('hincrby', KEYS[3], ARGV[i], ARGV[i + 1])
end
stat('hset', KEYS[3], 'last', ARGV[3])
stat('hsetnx', KEYS[3], 'since', ARGV[3])
local indexed = tonumber(stat('hget', KEYS[3], 'indexed')) or 0
local index = 0
if tonumber(ARGV[3]) - indexed >= tonumber(ARGV[5]) then
    stat('hset', KEYS[3], 'indexed', ARGV[3])
    index = 1
end
-- An event quiet for a whole window starts again from zero.
stat('expire', KEYS[3], ARGV[4])
return {released, index}
"""


def lock_service_down() -> LockUnavailable:
    """The 503 for a lock service that did not answer, counted as an acquisition error."""
    metrics.lock_acquisitions_total.labels(outcome="error").inc()
    return LockUnavailable("The lock service did not answer; nothing was written.")


def waited_too_long(event_id: int, wait_seconds: float) -> LockTimeout:
    """The 503 for a lock wait that gave up, counted as an acquisition timeout."""
    metrics.lock_acquisitions_total.labels(outcome="timeout").inc()
    return LockTimeout(
        f"Event {event_id} stayed locked for {wait_seconds:g}s; nothing was written."
    )


def lock_name(event_id: int | str) -> str:
    """The python-redis-lock name of an event's lock (its Redis key is ``lock:<name>``)."""
    return f"{LOCK_NAME_PREFIX}{{{event_id}}}"


def lock_key(event_id: int | str) -> str:
    return f"lock:{lock_name(event_id)}"


def signal_key(event_id: int | str) -> str:
    return f"lock-signal:{lock_name(event_id)}"


def intents_key(kind: str, event_id: int | str) -> str:
    """The event's queue of combining intents of one kind (combining.py), e.g. ``seat``."""
    return f"{kind}-intents:{{{event_id}}}"


def reply_key(kind: str, event_id: int | str, intent_id: str) -> str:
    """Where a combining holder answers one intent; the event's hash tag, so that a waiter's
    BLPOP over it and the signal list, and the holder's reply script, stay in one slot."""
    return f"{kind}-reply:{{{event_id}}}:{intent_id}"


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
class LockTenure:
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
    _script: Any = field(default=None, repr=False)

    def configure(self, config: dict[str, Any], client: RedisConnection) -> None:
        self.client = client
        self.wait_seconds = float(config["LOCK_WAIT_SECONDS"])
        self.expire_seconds = int(config["LOCK_EXPIRE_SECONDS"])
        self.instance = config["INSTANCE_NAME"]
        self.stats_window_seconds = int(config["LOCK_STATS_WINDOW_SECONDS"])

    def _holder_id(self) -> str:
        return holder_id(self.instance, os.getpid(), uuid.uuid4().hex[:12])

    @contextmanager
    def locked(self, event_id: int) -> Iterator[LockTenure]:
        """Hold the event's lock for the duration of the block, or raise a 503 error."""
        tenure = LockTenure()
        if self.client is None:
            raise RuntimeError("EventLocks used before configure")
        holder = self._holder_id()
        self._acquire(holder, event_id)
        acquired_at = time.monotonic()
        try:
            yield tenure
        finally:
            held_for = time.monotonic() - acquired_at
            metrics.lock_hold_seconds.observe(held_for)
            self._release(holder, event_id, held_for=held_for, requests=tenure.requests)

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
                    raise waited_too_long(event_id, self.wait_seconds)
                # A release pushes one token onto the signal list and wakes one waiter.
                self.client.blpop([signal_key(event_id)], timeout=remaining)
        except REDIS_ERRORS as error:
            raise lock_service_down() from error
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
        """Release the lock and add the hold to the event's statistics: one script call."""
        hold = LockStats(acquired=1, requests=requests, hold_us=int(held_for * 1_000_000))
        try:
            released = self._update(event_id, hold, holder=holder)
        except REDIS_ERRORS:
            # The work is committed; the lease expires on its own.
            log.warning("lock release failed: event=%s holder=%s", event_id, holder)
            return
        if released == UNLOCK_NOT_HELD:
            # The lease expired or was removed while we held it (the script counted it). The
            # database constraints kept the data correct; this is for operators to see.
            metrics.lock_lost_total.inc()
            log.warning(
                "lock lost: event=%s holder=%s held_for=%.3fs expire=%ss",
                event_id,
                holder,
                held_for,
                self.expire_seconds,
            )

    def _record_stats(self, event_id: int, change: LockStats) -> None:
        """Add to the event's statistics for the live lock view; never fails the caller."""
        try:
            self._update(event_id, change)
        except REDIS_ERRORS as error:
            # Statistics are for operators; the booking's outcome must not depend on them.
            log.debug("lock stats not recorded: event=%s error=%r", event_id, error)

    def _update(self, event_id: int, change: LockStats, *, holder: str = "") -> int | None:
        """Run UPDATE_SCRIPT (release ``holder``'s lock if given); the unlock answer, if any."""
        released, _ = self._run_update(event_id, change, holder=holder)
        return None if released < 0 else released

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
        """Run UPDATE_SCRIPT: (unlock answer, next batch when the answer is UNLOCK_MORE).

        With ``queue`` (a combining holder's release) the lock is kept while intents wait, and
        ``replies`` (reply list, outcome) are pushed first; see the script."""
        assert self.client is not None
        if self._script is None or self._script.registered_client is not self.client:
            self._script = self.client.register_script(UPDATE_SCRIPT)
        now = f"{time.time():.3f}"
        counters = [item for pair in change.counters().items() for item in pair]
        keys = [lock_key(event_id), signal_key(event_id), stats_key(event_id)]
        if queue is not None:
            keys += [queue, *(key for key, _ in replies)]
        answer = self._script(
            keys=keys,
            args=[
                holder,
                SIGNAL_EXPIRE_MS,
                now,
                self.stats_window_seconds,
                self.stats_window_seconds // INDEX_REFRESHES_PER_WINDOW,
                self.expire_seconds * 1000,
                batch_max,
                reply_expire_ms,
                *(outcome for _, outcome in replies),
                *counters,
            ],
        )
        released, index = int(answer[0]), answer[1]
        if index:
            # Now and then (see the script), not per hold: the index is another slot's key.
            recent = recent_stats_key(recent_stats_shard(event_id))
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(recent, {str(event_id): float(now)})
            pipe.zremrangebyscore(recent, "-inf", float(now) - self.stats_window_seconds)
            pipe.expire(recent, self.stats_window_seconds)
            pipe.execute()
        return released, (list(answer[2] or []) if len(answer) > 2 else [])


locks = EventLocks()
