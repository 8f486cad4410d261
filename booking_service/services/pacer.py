"""The waiting room's pacer: admits the first entries of every open queue, at a fixed rate or
at the rate the event's lock can serve.

Every gunicorn worker runs one in a background thread (gunicorn.conf.py starts it), and only
the one holding the lease ``waitroom-pacer:lease`` paces, every
WAITING_ROOM_PACE_INTERVAL_SECONDS; another takes over within the lease if it dies. What it
admits is decided in Redis by one script per event (services/waitroom.py: a token bucket on
Redis' clock), so the rate holds however many pacers run at once, through any instance.

Per event with its waiting room on and bookings still open:

- no seats for newcomers (all taken, or someone on the waitlist): admissions pause; with no
  live hold left either, the queue is ``sold_out`` (a hold lapsing or a cancel brings the
  seats, and admissions, back); nor are more admitted than there are free seats for, counting
  the last few seconds' admissions as seats about to be taken;
- ``admit_per_minute`` set: that rate, a burst of at most one second's worth;
- automatic (null): ``Controller``, fed with the event's lock statistics (locking.LockStats,
  what the live lock view shows). By Little's law the mean lock wait is the requests queued
  at the lock over the rate it serves them; above WAITING_ROOM_TARGET_LOCK_WAIT_MS (or with
  any lock timeout) the rate drops in proportion, well below it (and with people waiting) it
  grows by 5% per round. So it settles where the event serves its admitted customers
  with lock waits about the target.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from booking_service.database import db
from booking_service.errors import DomainError
from booking_service.locking import LockStats, stats_key
from booking_service.models import Event
from booking_service.redis_clients import REDIS_ERRORS, redis_client
from booking_service.services import waitroom
from booking_service.services.leased_loop import LeasedLoop

log = logging.getLogger(__name__)

LEASE_KEY = "waitroom-pacer:lease"
EVENTS_PER_ROUND = 100
# Automatic pacing never goes below this (admissions per second): a lock busy with other
# work still lets the queue move.
MIN_RATE = 0.5
# Per round: growth while lock waits stay under half the target, and at most one cut a second
# (a cut shows in the statistics only once the admitted customers' requests have drained).
GROWTH = 1.05
CUT_EVERY_SECONDS = 1.0
# Admissions this recent count as customers about to take a seat (services/waitroom.py,
# ADMIT_SCRIPT): a customer in a rush holds within seconds of being admitted.
FRESH_ADMISSION_SECONDS = 5.0


@dataclass
class Controller:
    """Automatic pacing of one event: admissions per second from its lock statistics."""

    rate: float
    target_wait: float  # seconds
    max_rate: float
    wait: float = 0.0  # smoothed estimate of the lock wait, seconds
    served: float = 0.0  # lock requests served per second, last round
    _last: LockStats | None = None
    _last_at: float = 0.0
    _cut_at: float = field(default=-1e9)

    def update(self, stats: LockStats, at: float, *, waiting: bool) -> float:
        """The rate for the next round, given the statistics read at ``at`` (monotonic)."""
        last, self._last, elapsed = self._last, stats, at - self._last_at
        self._last_at = at
        if last is None or elapsed <= 0 or stats.requests < last.requests:
            return self.rate  # a first look, or the statistics window started over
        self.served = (stats.requests - last.requests) / elapsed
        queued = max(0, stats.waiters)
        # Little's law; nothing served with requests queued counts as far over the target.
        idle_wait = 4 * self.target_wait if queued else 0.0
        wait = queued / self.served if self.served > 0 else idle_wait
        # The waiters count is a gauge that a waiter killed mid-wait never takes back: on a
        # quiet lock one stale waiter would read as a long wait. The lock's busy share bounds
        # what a queue can be (M/M/1: busy / (1 - busy) holds), so the lower estimate counts.
        holds = stats.acquired - last.acquired
        if holds > 0:
            busy = min(0.99, (stats.hold_us - last.hold_us) / 1_000_000 / elapsed)
            hold = (stats.hold_us - last.hold_us) / 1_000_000 / holds
            wait = min(wait, busy / (1 - busy) * hold)
        self.wait = (self.wait + wait) / 2
        timeouts = stats.timeouts - last.timeouts
        if timeouts > 0 or self.wait > self.target_wait:
            if at - self._cut_at >= CUT_EVERY_SECONDS:
                factor = 0.5 if timeouts > 0 else max(0.5, self.target_wait / self.wait)
                self.rate = max(MIN_RATE, self.rate * factor)
                self._cut_at = at
        elif self.wait < self.target_wait / 2 and waiting:
            self.rate = min(self.max_rate, self.rate * GROWTH + 0.25)
        return self.rate


@dataclass(frozen=True)
class Paced:
    """One event's round: the rate used and what the bucket let in."""

    event_id: int
    rate: float
    admitted: waitroom.Admitted
    lock_wait_ms: float


class Pacer(LeasedLoop):
    lease_key = LEASE_KEY
    thread_name = "waitroom-pacer"
    failure_message = "waiting room pacing failed"  # a pacer that dies admits nobody

    def __init__(self) -> None:
        super().__init__(interval=0.25, lease_seconds=3.0)
        self.target_wait = 0.05
        self.start_rate = 5.0
        self.max_rate = 500.0
        self.fresh_seconds = FRESH_ADMISSION_SECONDS
        self.controllers: dict[int, Controller] = {}
        # The serving counter each event had after this pacer's last round: a lower one
        # means Redis lost admissions in a failover (services/waitroom.py, ADMIT_SCRIPT).
        self.served: dict[int, int] = {}
        # Redis' clock at each event's last round: automatic pacing grows only once the sale
        # has started (a pre-queue on an idle lock says nothing about what it can take).
        self.clock: dict[int, datetime] = {}

    def configure(self, config: dict[str, Any]) -> None:
        self.configure_lease(
            config,
            interval="WAITING_ROOM_PACE_INTERVAL_SECONDS",
            lease="WAITING_ROOM_PACER_LEASE_SECONDS",
        )
        self.target_wait = float(config["WAITING_ROOM_TARGET_LOCK_WAIT_MS"]) / 1000
        self.start_rate = float(config["WAITING_ROOM_START_RATE"])
        self.max_rate = float(config["WAITING_ROOM_MAX_RATE"])
        self.controllers.clear()
        self.served.clear()
        self.clock.clear()

    def run_round(self) -> list[Paced]:
        return self.pace_once()

    def pace_once(self) -> list[Paced]:
        """One round over the open queues, if this process holds the lease."""
        if not self.holds_lease():
            self.controllers.clear()  # another pacer's statistics are its own
            return []
        try:
            events = open_queues()
        except DomainError as error:
            log.warning("waiting rooms not paced: %s", error.code)
            return []
        rounds = []
        for event in events:
            try:
                rounds.append(self.pace(event))
            except REDIS_ERRORS as error:
                log.warning("waiting room of event %s not paced: %r", event.id, error)
        return rounds

    def pace(self, event: Event) -> Paced:
        """Admit what the event's bucket allows now."""
        no_seats = event.available_slots <= 0 or event.waitlist_length > 0
        sold_out = no_seats and event.seats_held <= 0
        wait_ms = 0.0
        if event.admit_per_minute:
            rate = event.admit_per_minute / 60
        else:
            rate, wait_ms = self._automatic(event)
        admitted = waitroom.admit(
            event,
            rate=rate,
            paused=no_seats,
            sold_out=sold_out,
            served_seen=self.served.get(event.id),
            wait_ms=wait_ms,
            free_seats=event.available_slots,
            fresh_seconds=self.fresh_seconds,
        )
        if admitted.rolled_back:
            log.warning(
                "waiting room of event %s lost admissions (Redis failover): the bucket starts "
                "empty",
                event.id,
            )
        self.served[event.id] = admitted.served
        self.clock[event.id] = admitted.now
        return Paced(event.id, rate, admitted, wait_ms)

    def _automatic(self, event: Event) -> tuple[float, float]:
        controller = self.controllers.get(event.id)
        if controller is None:
            controller = Controller(self.start_rate, self.target_wait, self.max_rate)
            self.controllers[event.id] = controller
        client = redis_client.get()
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(stats_key(event.id))
        pipe.zcard(waitroom.queue_key(event.id))
        raw, depth = pipe.execute()
        clock = self.clock.get(event.id)
        on_sale = clock is not None and (
            event.sale_starts_at is None or clock >= event.sale_starts_at
        )
        rate = controller.update(
            LockStats.from_hash(raw), time.monotonic(), waiting=on_sale and depth > 0
        )
        return rate, controller.wait * 1000


def open_queues() -> list[Event]:
    """Events with the waiting room on whose bookings are still open, soonest first."""
    with db.read_transaction() as session:
        return list(
            session.scalars(
                select(Event)
                .where(Event.waiting_room.is_(True), Event.start_time > func.now())
                .order_by(Event.start_time, Event.id)
                .limit(EVENTS_PER_ROUND)
            )
        )


pacer = Pacer()
