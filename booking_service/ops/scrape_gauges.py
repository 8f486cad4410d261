"""Gauges computed when ``/metrics`` is scraped, from PostgreSQL and Redis, kept by no worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text

from booking_service.database import db
from booking_service.redis_clients import redis_client, round_trip
from booking_service.services import pacer, waitroom
from booking_service.services.relay import OutboxState

# An upcoming event this full raises the capacity alert (deploy/alerts.yml).
NEAR_CAPACITY_RATIO = 0.9

# One pass over the upcoming events only (ix_events_start_time); booked_count is kept in step
# with the bookings, so no booking row is read.
UPCOMING_CAPACITY_SQL = text(
    """
    SELECT count(*) AS events,
           count(*) FILTER (WHERE booked_count >= :ratio * capacity) AS near_capacity,
           coalesce(max(booked_count::float / capacity), 0) AS max_utilisation,
           coalesce(sum(booked_count), 0) AS booked_seats,
           coalesce(sum(capacity), 0) AS capacity_seats
      FROM events
     WHERE start_time > now()
    """
)


@dataclass(frozen=True)
class UpcomingCapacity:
    """Seats of the events that have not started yet, read when /metrics is scraped."""

    events: int
    near_capacity: int
    max_utilisation: float
    booked_seats: int
    capacity_seats: int


def upcoming_capacity(*, near_ratio: float = NEAR_CAPACITY_RATIO) -> UpcomingCapacity:
    """Summarise how full the events that have not started yet are."""
    with db.read_transaction() as session:
        row = session.execute(UPCOMING_CAPACITY_SQL, {"ratio": near_ratio}).one()
    return UpcomingCapacity(
        events=int(row.events),
        near_capacity=int(row.near_capacity),
        max_utilisation=float(row.max_utilisation),
        booked_seats=int(row.booked_seats),
        capacity_seats=int(row.capacity_seats),
    )


# Waiting rooms exported per event: the deepest few, so the label stays bounded.
HOT_QUEUES_EXPORTED = 5


@dataclass(frozen=True)
class QueueGauge:
    """One event's waiting room at scrape time."""

    event_id: int
    depth: int
    admitted_per_minute: int
    active: int
    eta_seconds: float | None  # of the last entry, at the pacer's current rate


def hot_queues(*, limit: int = HOT_QUEUES_EXPORTED) -> tuple[QueueGauge, ...]:
    """The deepest open waiting rooms (one query, one Redis round trip per node)."""
    events = pacer.open_queues()
    if not events:
        return ()
    replies = round_trip(redis_client.get(), [waitroom.stats_command(event) for event in events])
    gauges = []
    for event, reply in zip(events, replies, strict=True):
        stats = waitroom.stats_from(reply)
        gauges.append(
            QueueGauge(
                event_id=event.id,
                depth=stats.depth,
                admitted_per_minute=stats.admitted_last_minute,
                active=stats.active,
                eta_seconds=stats.eta_last_seconds,
            )
        )
    gauges.sort(key=lambda gauge: (gauge.depth, gauge.active), reverse=True)
    return tuple(gauges[:limit])


@dataclass(frozen=True)
class ScrapeState:
    """What the scrape-time gauges report; ``capacity`` is None when PostgreSQL is down."""

    dependencies: dict[str, bool]
    capacity: UpcomingCapacity | None
    # (event id, lock requests in the live view's window), hottest first, a handful at most.
    hot_events: tuple[tuple[int, float], ...] = ()
    # The deepest open waiting rooms, a handful at most.
    queues: tuple[QueueGauge, ...] = ()
    # The webhook outbox (services/relay.py); None when it could not be read.
    outbox: OutboxState | None = None


class ScrapeTimeCollector:
    """Gauges computed once per scrape from PostgreSQL and Redis, not kept by any worker."""

    # Nothing per worker to sum here. The capacity and hot-event gauges are the same on every
    # instance (aggregate them with max, not sum); readiness is this instance's own view.

    def __init__(self, read: Callable[[], ScrapeState]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        ready = GaugeMetricFamily(
            "booking_ready", "1 when PostgreSQL and Redis both answer (what /readyz reports)."
        )
        ready.add_metric([], float(all(state.dependencies.values())))
        yield ready
        dependency = GaugeMetricFamily(
            "booking_dependency_up",
            "1 when the dependency answered a probe during this scrape.",
            labels=["dependency"],
        )
        for name, up in sorted(state.dependencies.items()):
            dependency.add_metric([name], float(up))
        yield dependency
        if state.capacity is not None:
            capacity = state.capacity
            for name, help_text, value in (
                ("booking_upcoming_events", "Events that have not started yet.", capacity.events),
                (
                    "booking_upcoming_events_near_capacity",
                    f"Upcoming events at least {NEAR_CAPACITY_RATIO:.0%} booked.",
                    capacity.near_capacity,
                ),
                (
                    "booking_upcoming_event_max_utilisation_ratio",
                    "Booked share of the fullest upcoming event (0 to 1).",
                    capacity.max_utilisation,
                ),
                (
                    "booking_upcoming_booked_seats",
                    "Seats booked across all upcoming events.",
                    capacity.booked_seats,
                ),
                (
                    "booking_upcoming_capacity_seats",
                    "Seats offered across all upcoming events.",
                    capacity.capacity_seats,
                ),
            ):
                yield GaugeMetricFamily(name, help_text, value=float(value))
        hot = GaugeMetricFamily(
            "booking_hot_event_lock_requests",
            "Lock requests (served + timed out) in the live lock view's window, for its few "
            "hottest events only; per-event detail stays in the live lock view.",
            labels=["event_id"],
        )
        for event_id, requests in state.hot_events:
            hot.add_metric([str(event_id)], requests)
        yield hot
        families = {
            "depth": GaugeMetricFamily(
                "booking_waiting_room_depth",
                "Customers waiting in the queue, for the deepest few waiting rooms.",
                labels=["event_id"],
            ),
            "admitted_per_minute": GaugeMetricFamily(
                "booking_waiting_room_admitted_per_minute",
                "Admissions in the last minute, for the same waiting rooms.",
                labels=["event_id"],
            ),
            "active": GaugeMetricFamily(
                "booking_waiting_room_active_shoppers",
                "Admissions not lapsed yet, for the same waiting rooms.",
                labels=["event_id"],
            ),
            "eta_seconds": GaugeMetricFamily(
                "booking_waiting_room_eta_seconds",
                "Until the last entry is admitted at the current rate, for the same waiting "
                "rooms (absent while the rate is unknown).",
                labels=["event_id"],
            ),
        }
        for queue in state.queues:
            for name, family in families.items():
                value = getattr(queue, name)
                if value is not None:
                    family.add_metric([str(queue.event_id)], float(value))
        yield from families.values()
        if state.outbox is not None:
            outbox = state.outbox
            for name, help_text, value in (
                (
                    "booking_webhook_outbox_lag_seconds",
                    "Age of the oldest undelivered webhook message (0: none), retries included.",
                    outbox.lag,
                ),
                (
                    "booking_webhook_outbox_overdue_seconds",
                    "How long the most overdue due delivery attempt has waited for the relay "
                    "(0: none): the relay's own lag, whatever the receivers answer.",
                    outbox.overdue,
                ),
                (
                    "booking_webhook_outbox_pending",
                    "Undelivered webhook messages of enabled endpoints.",
                    outbox.pending,
                ),
                (
                    "booking_webhook_endpoints_disabled",
                    "Webhook endpoints disabled (by a 410 Gone answer or their owner).",
                    outbox.disabled,
                ),
            ):
                yield GaugeMetricFamily(name, help_text, value=float(value))
