"""The live lock table: which event locks are held now or were busy recently, hottest first.

It reads what ``locking`` writes (key names, statistics, holder ids: defined there). Nothing
here may slow Redis down for the booking path: held locks are found with SCAN (bounded steps,
never KEYS), and the per-event reads go in one pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from sqlalchemy import select

from booking_service.database import db
from booking_service.errors import DbUnavailable, LockUnavailable
from booking_service.locking import (
    HELD_LOCKS_PATTERN,
    RECENT_STATS_SHARDS,
    LockStats,
    event_id_of,
    lock_key,
    locks,
    parse_holder,
    recent_stats_key,
    stats_key,
)
from booking_service.models import LAPSED_HOLD_SEATS, Event
from booking_service.redis_clients import REDIS_ERRORS, RedisConnection, redis_client

SCAN_COUNT = 500
# Bounds the work of one view, however many locks are held at once.
MAX_HELD_SCANNED = 2000
MAX_RECENT = 500


@dataclass(frozen=True)
class LockRow:
    """One event in the live lock view."""

    event_id: int
    title: str | None
    seats_held: int | None  # live holds, waitlist offers included (None: PostgreSQL down)
    waitlist_length: int | None
    held: bool
    holder: str | None
    holder_instance: str | None
    holder_pid: int | None
    held_for_ms: int | None
    lease_left_ms: int | None
    waiters: int
    acquired: int
    requests: int
    timeouts: int
    lost: int
    avg_hold_ms: float | None
    last_activity: datetime | None
    since: datetime | None

    @property
    def heat(self) -> tuple[int, int, bool, float]:
        # Hottest first: requests queueing now, then demand in the window (requests served and
        # given up: with combining, one hold serves a whole queue), then held now.
        last = self.last_activity.timestamp() if self.last_activity else 0.0
        return (self.waiters, self.requests + self.timeouts, self.held, last)


@dataclass(frozen=True)
class EventFacts:
    """What PostgreSQL adds to an event's lock row."""

    title: str
    seats_held: int
    waitlist_length: int


@dataclass(frozen=True)
class LockTable:
    generated_at: datetime
    window_seconds: int
    lock_expire_seconds: int
    titles_available: bool
    events: list[LockRow]


def lock_table(*, limit: int = 50) -> LockTable:
    """Return the events whose lock is held now or was active in the window, hottest first."""
    client = redis_client.get()
    now = time.time()
    window = locks.stats_window_seconds
    try:
        event_ids = _held_event_ids(client) | _recent_event_ids(client, now - window)
        ordered = sorted(event_ids)
        pipe = client.pipeline(transaction=False)
        for event_id in ordered:
            pipe.hgetall(stats_key(event_id))
            pipe.get(lock_key(event_id))
            pipe.pttl(lock_key(event_id))
        # One unreadable key (say, a stats key of the wrong type) must not hide the others.
        replies = [
            None if isinstance(reply, redis.ResponseError) else reply
            for reply in pipe.execute(raise_on_error=False)
        ]
    except REDIS_ERRORS as error:
        raise LockUnavailable("Redis did not answer; the lock view is unavailable.") from error

    facts, titles_available = _event_facts(ordered)
    rows = [
        _row(event_id, facts.get(event_id), stats, holder, pttl)
        for event_id, stats, holder, pttl in zip(
            ordered, replies[0::3], replies[1::3], replies[2::3], strict=True
        )
    ]
    rows.sort(key=lambda row: row.heat, reverse=True)
    return LockTable(
        generated_at=datetime.fromtimestamp(now, UTC),
        window_seconds=window,
        lock_expire_seconds=locks.expire_seconds,
        titles_available=titles_available,
        events=rows[:limit],
    )


def _held_event_ids(client: RedisConnection) -> set[int]:
    ids: set[int] = set()
    for key in client.scan_iter(match=HELD_LOCKS_PATTERN, count=SCAN_COUNT):
        event_id = event_id_of(key)
        if event_id is not None:
            ids.add(event_id)
        if len(ids) >= MAX_HELD_SCANNED:
            break
    return ids


def _recent_event_ids(client: RedisConnection, oldest: float) -> set[int]:
    pipe = client.pipeline(transaction=False)
    for shard in range(RECENT_STATS_SHARDS):
        key = recent_stats_key(shard)
        pipe.zremrangebyscore(key, "-inf", oldest)
        pipe.zrevrangebyscore(key, "+inf", oldest, start=0, num=MAX_RECENT)
    members = [member for reply in pipe.execute()[1::2] for member in reply]
    return {event_id for member in members if (event_id := event_id_of(member)) is not None}


def _event_facts(event_ids: Sequence[int]) -> tuple[dict[int, EventFacts], bool]:
    """Title, held seats and waitlist length in one query; without PostgreSQL the lock view
    still answers, without them."""
    if not event_ids:
        return {}, True
    try:
        with db.read_transaction() as session:
            rows = session.execute(
                select(
                    Event.id,
                    Event.title,
                    Event.held_count - LAPSED_HOLD_SEATS,
                    Event.waitlist_length,
                ).where(Event.id.in_(event_ids))
            )
            return {row[0]: EventFacts(*row[1:]) for row in rows}, True
    except DbUnavailable:
        return {}, False


def _row(
    event_id: int,
    facts: EventFacts | None,
    stats: dict[bytes, bytes] | None,
    holder: bytes | None,
    pttl: int | None,
) -> LockRow:
    counts = LockStats.from_hash(stats)
    pttl = -2 if pttl is None else pttl

    # PTTL -2: released between SCAN and the pipeline; -1: a lock without lease (not ours).
    held = holder is not None and pttl != -2
    holder_text = holder.decode("utf-8", "replace") if held and holder else None
    instance, pid = parse_holder(holder_text) if holder_text else (None, None)
    lease_left = pttl if held and pttl >= 0 else None
    held_for = max(0, locks.expire_seconds * 1000 - lease_left) if lease_left is not None else None
    acquired = counts.acquired
    return LockRow(
        event_id=event_id,
        title=facts.title if facts else None,
        seats_held=facts.seats_held if facts else None,
        waitlist_length=facts.waitlist_length if facts else None,
        held=held,
        holder=holder_text,
        holder_instance=instance,
        holder_pid=pid,
        held_for_ms=held_for,
        lease_left_ms=lease_left,
        # A waiter killed mid-wait never decrements; never show a negative queue.
        waiters=max(0, counts.waiters),
        acquired=acquired,
        requests=counts.requests,
        timeouts=counts.timeouts,
        lost=counts.lost,
        avg_hold_ms=round(counts.hold_us / acquired / 1000, 3) if acquired else None,
        last_activity=_moment(counts.last),
        since=_moment(counts.since),
    )


def _moment(unix_time: float | None) -> datetime | None:
    return datetime.fromtimestamp(unix_time, UTC) if unix_time is not None else None
