"""Operator views: the live lock table (from Redis) and the dashboard's numbers (from metrics).

Everything here reads; nothing here may slow Redis down for the booking path: held locks are
found with SCAN (bounded steps, never KEYS), and the per-event reads go in one pipeline.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from sqlalchemy import Float, cast, select

from booking_service import metrics
from booking_service.errors import DbUnavailable, LockUnavailable
from booking_service.extensions import db, redis_client
from booking_service.locking import (
    LOCK_NAME_PREFIX,
    RECENT_STATS_KEY,
    lock_key,
    locks,
    stats_key,
)
from booking_service.models import Event

HELD_LOCKS_MATCH = f"lock:{LOCK_NAME_PREFIX}*"
SCAN_COUNT = 500
# Bounds the work of one view, however many locks are held at once.
MAX_HELD_SCANNED = 2000
MAX_RECENT = 500
QUANTILES = (0.5, 0.95, 0.99)


# --- live lock table --------------------------------------------------------------------


@dataclass(frozen=True)
class LockRow:
    """One event in the live lock view."""

    event_id: int
    title: str | None
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
        # Hottest first: requests queueing now, then demand in the window, then held now.
        last = self.last_activity.timestamp() if self.last_activity else 0.0
        return (self.waiters, self.acquired + self.timeouts, self.held, last)


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
    except redis.RedisError as error:
        raise LockUnavailable("Redis did not answer; the lock view is unavailable.") from error

    titles, titles_available = _titles(ordered)
    rows = [
        _row(event_id, titles.get(event_id), stats, holder, pttl)
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


def _held_event_ids(client: redis.Redis) -> set[int]:
    ids: set[int] = set()
    for key in client.scan_iter(match=HELD_LOCKS_MATCH, count=SCAN_COUNT):
        event_id = _trailing_id(key)
        if event_id is not None:
            ids.add(event_id)
        if len(ids) >= MAX_HELD_SCANNED:
            break
    return ids


def _recent_event_ids(client: redis.Redis, oldest: float) -> set[int]:
    pipe = client.pipeline(transaction=False)
    pipe.zremrangebyscore(RECENT_STATS_KEY, "-inf", oldest)
    pipe.zrevrangebyscore(RECENT_STATS_KEY, "+inf", oldest, start=0, num=MAX_RECENT)
    _, members = pipe.execute()
    return {event_id for member in members if (event_id := _trailing_id(member)) is not None}


def _trailing_id(value: bytes | str) -> int | None:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    tail = text.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() and 0 < len(tail) < 20 else None


def _titles(event_ids: Sequence[int]) -> tuple[dict[int, str], bool]:
    """Titles in one query; without PostgreSQL the lock view still answers, without titles."""
    if not event_ids:
        return {}, True
    try:
        with db.transaction() as session:
            rows = session.execute(select(Event.id, Event.title).where(Event.id.in_(event_ids)))
            return {event_id: title for event_id, title in rows}, True
    except DbUnavailable:
        return {}, False


def parse_holder(value: str) -> tuple[str | None, int | None]:
    """Split a holder id ``<instance>:<pid>:<random>`` (see EventLocks._holder_id)."""
    parts = value.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None, None


def _row(
    event_id: int,
    title: str | None,
    stats: dict[bytes, bytes] | None,
    holder: bytes | None,
    pttl: int | None,
) -> LockRow:
    stats = stats or {}
    pttl = -2 if pttl is None else pttl

    def counter(name: str) -> int:
        return int(stats.get(name.encode(), 0))

    def moment(name: str) -> datetime | None:
        raw = stats.get(name.encode())
        return datetime.fromtimestamp(float(raw), UTC) if raw else None

    # PTTL -2: released between SCAN and the pipeline; -1: a lock without lease (not ours).
    held = holder is not None and pttl != -2
    holder_text = holder.decode("utf-8", "replace") if held and holder else None
    instance, pid = parse_holder(holder_text) if holder_text else (None, None)
    lease_left = pttl if held and pttl >= 0 else None
    held_for = max(0, locks.expire_seconds * 1000 - lease_left) if lease_left is not None else None
    acquired = counter("acquired")
    return LockRow(
        event_id=event_id,
        title=title,
        held=held,
        holder=holder_text,
        holder_instance=instance,
        holder_pid=pid,
        held_for_ms=held_for,
        lease_left_ms=lease_left,
        # A waiter killed mid-wait never decrements; never show a negative queue.
        waiters=max(0, counter("waiters")),
        acquired=acquired,
        requests=counter("requests"),
        timeouts=counter("timeouts"),
        lost=counter("lost"),
        avg_hold_ms=round(counter("hold_us") / acquired / 1000, 3) if acquired else None,
        last_activity=moment("last"),
        since=moment("since"),
    )


# --- dashboard numbers ------------------------------------------------------------------


def quantile_from_buckets(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Estimate the q-quantile from cumulative histogram buckets, as PromQL histogram_quantile.

    ``buckets`` are (upper bound, cumulative count) sorted by bound, the last one +Inf.
    Linear interpolation inside the bucket holding the rank; a rank in the +Inf bucket
    returns the highest finite bound. None when there are no observations.
    """
    if not buckets or not 0 <= q <= 1:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(upper_bound):
                return lower_bound
            fraction = (rank - lower_count) / (count - lower_count)
            return lower_bound + (upper_bound - lower_bound) * fraction
        lower_bound, lower_count = upper_bound, count
    return lower_bound


@dataclass(frozen=True)
class HistogramSummary:
    """A histogram summed over every worker, with estimated percentiles (seconds)."""

    count: int
    sum: float
    p50: float | None
    p95: float | None
    p99: float | None
    # Finite (upper bound, cumulative count) pairs; lets the page compute windowed percentiles.
    buckets: list[tuple[float, int]] = field(default_factory=list)


@dataclass(frozen=True)
class CapacityRow:
    event_id: int
    title: str
    start_time: datetime
    capacity: int
    booked_count: int
    utilisation: float


@dataclass(frozen=True)
class DashboardStats:
    generated_at: datetime
    instance: str
    metrics_enabled: bool
    lock_wait: HistogramSummary
    lock_hold: HistogramSummary
    booking_request: HistogramSummary
    lock_acquisitions: dict[str, int]
    lock_lost: int
    lock_waiters: int
    bookings: dict[str, int]
    upcoming: list[CapacityRow]


def summarize_histogram(samples: Iterable[tuple[str, dict[str, str], float]]) -> HistogramSummary:
    """Sum a histogram's samples (any labels) and estimate its percentiles."""
    by_bound: dict[float, float] = defaultdict(float)
    count = total = 0.0
    for name, labels, value in samples:
        if name.endswith("_bucket"):
            by_bound[float(labels["le"])] += value
        elif name.endswith("_count"):
            count += value
        elif name.endswith("_sum"):
            total += value
    buckets = sorted(by_bound.items())
    quantiles = [quantile_from_buckets(q, buckets) for q in QUANTILES]
    return HistogramSummary(
        count=int(count),
        sum=total,
        p50=quantiles[0],
        p95=quantiles[1],
        p99=quantiles[2],
        buckets=[(bound, int(n)) for bound, n in buckets if not math.isinf(bound)],
    )


def dashboard_stats(*, upcoming_limit: int = 10) -> DashboardStats:
    """Return the dashboard's numbers: lock and booking metrics of all workers, hot capacity."""
    samples: dict[str, list[tuple[str, dict[str, str], float]]] = defaultdict(list)
    for family in metrics.collect_families():
        for sample in family.samples:
            samples[family.name].append((sample.name, sample.labels, sample.value))

    def by_label(family: str, label: str, keys: Sequence[str]) -> dict[str, int]:
        totals = dict.fromkeys(keys, 0)
        for name, labels, value in samples[family]:
            if name.endswith("_total") and label in labels:
                totals[labels[label]] = totals.get(labels[label], 0) + int(value)
        return totals

    def total(family: str, sample_name: str) -> int:
        return int(sum(value for name, _, value in samples[family] if name == sample_name))

    # Family names (DESIGN §5); counters' samples carry the _total suffix, families do not.
    return DashboardStats(
        generated_at=datetime.now(UTC),
        instance=locks.instance,
        metrics_enabled=metrics.recording,
        lock_wait=summarize_histogram(samples["booking_lock_wait_seconds"]),
        lock_hold=summarize_histogram(samples["booking_lock_hold_seconds"]),
        booking_request=summarize_histogram(samples["booking_request_seconds"]),
        lock_acquisitions=by_label("booking_lock_acquisitions", "outcome", metrics.LOCK_OUTCOMES),
        lock_lost=total("booking_lock_lost", "booking_lock_lost_total"),
        lock_waiters=total("booking_lock_waiters", "booking_lock_waiters"),
        bookings=by_label("bookings", "result", metrics.BOOKING_RESULTS),
        upcoming=fullest_upcoming_events(limit=upcoming_limit),
    )


def fullest_upcoming_events(*, limit: int = 10) -> list[CapacityRow]:
    """Return the upcoming events closest to selling out (booked/capacity, highest first)."""
    utilisation = cast(Event.booked_count, Float) / Event.capacity
    with db.transaction() as session:
        events = session.scalars(
            select(Event)
            .where(Event.start_time > datetime.now(UTC))
            .order_by(utilisation.desc(), Event.booked_count.desc(), Event.start_time, Event.id)
            .limit(limit)
        ).all()
    return [
        CapacityRow(
            event_id=event.id,
            title=event.title,
            start_time=event.start_time,
            capacity=event.capacity,
            booked_count=event.booked_count,
            utilisation=event.booked_count / event.capacity,
        )
        for event in events
    ]
