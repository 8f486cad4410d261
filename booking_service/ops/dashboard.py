"""The dashboard's numbers: lock and booking metrics of every worker, and hot capacity."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Float, cast, select

from booking_service import metrics
from booking_service.database import db
from booking_service.locking import locks
from booking_service.models import Event
from booking_service.ops.scrape_gauges import QueueGauge, hot_queues

QUANTILES = (0.5, 0.95, 0.99)


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
    seats_held: int
    waitlist_length: int
    utilisation: float  # seats taken (booked and held) / capacity


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
    # The deepest open waiting rooms (empty when Redis or PostgreSQL did not answer).
    queues: list[QueueGauge] = field(default_factory=list)


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

    # Family names (docs/architecture.md, Metrics); counters' samples carry the _total suffix,
    # families do not.
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
        queues=_queues(),
    )


def _queues() -> list[QueueGauge]:
    try:
        return list(hot_queues())
    except Exception:  # the dashboard still shows everything else
        return []


def fullest_upcoming_events(*, limit: int = 10) -> list[CapacityRow]:
    """Return the upcoming events closest to selling out (booked/capacity, highest first)."""
    utilisation = cast(Event.booked_count + Event.held_count, Float) / Event.capacity
    with db.read_transaction() as session:
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
            seats_held=event.seats_held,
            waitlist_length=event.waitlist_length,
            utilisation=event.booked_count / event.capacity,
        )
        for event in events
    ]
