"""Rate-limit counting: fixed windows in the service's Redis, so every instance shares them.

Which views are limited, per what, and how the 429 is documented: ``api/limits.py``. A window
is one counter key: ``INCR``, ``EXPIRE ... NX`` (the window starts with its first hit) and
``TTL`` (for ``Retry-After``), three plain commands that may ride in a caller's round trip, so
that a booking counts itself in the same round trip as its session lookup
(``services/admission.py``). Every key stands alone: nothing here crosses a Redis Cluster slot.

When that Redis is unreachable the counts fall back to this process's memory, and Redis is
tried again after ``RETRY_SHARED_SECONDS``: sign-in and registration stay available (fail
open), while the booking path still fails closed on its own, through the event lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from booking_service.redis_clients import REDIS_ERRORS, RedisConnection, round_trip

log = logging.getLogger(__name__)

# The limits library's key layout, kept so that counters survive a rolling deploy:
# LIMITS:LIMITER/rate-limit/<scope>/<who>/<amount>/<multiples>/<granularity>.
NAMESPACE = "rate-limit"
# How long a process counts on its own after Redis failed before it tries Redis again.
RETRY_SHARED_SECONDS = 5.0
REPLIES_PER_WINDOW = 3  # INCR, EXPIRE NX, TTL


@lru_cache(maxsize=64)
def parse_limits(value: str) -> tuple[RateLimitItem, ...]:
    """The limits in a setting such as ``"10/minute;100/hour"`` (parsed once per value)."""
    return tuple(parse_many(value))


@dataclass(frozen=True)
class Window:
    """One limit of one scope for one client: a counter key in Redis."""

    item: RateLimitItem
    scope: str
    who: str

    @property
    def key(self) -> str:
        return f"LIMITS:{self.item.key_for(NAMESPACE, self.scope, self.who)}"


def windows(limits: str, scope: str, who: str) -> tuple[Window, ...]:
    """The windows ``limits`` (a setting's value) sets for ``who`` in ``scope``."""
    return tuple(Window(item, scope, who) for item in parse_limits(limits))


class RateLimiter:
    """Fixed-window counters in Redis; per-process counters while Redis is unreachable."""

    def __init__(self) -> None:
        self._client: RedisConnection | None = None
        self._local = FixedWindowRateLimiter(MemoryStorage())
        self._shared_retry_at: float | None = None  # set while Redis is considered down
        self._guard = threading.Lock()

    def configure(self, client: RedisConnection) -> None:
        self._client = client
        self._local = FixedWindowRateLimiter(MemoryStorage())
        self._shared_retry_at = None

    def hit(self, limits: str, scope: str, who: str) -> int | None:
        """Count one request against every limit in ``limits``, in one round trip.

        Returns None when it is within all of them, else the seconds until the exceeded
        window resets (for ``Retry-After``).
        """
        counted = windows(limits, scope, who)
        if not self.shared_available():
            return self.count_locally(counted)
        assert self._client is not None
        try:
            replies = round_trip(self._client, self.commands(counted))
        except REDIS_ERRORS:
            self.shared_failed()
            return self.count_locally(counted)
        return self.result(counted, replies)

    def shared_available(self) -> bool:
        """Redis, unless it failed less than RETRY_SHARED_SECONDS ago."""
        if self._client is None:
            raise RuntimeError("RateLimiter used before configure")
        retry_at = self._shared_retry_at
        return retry_at is None or time.monotonic() >= retry_at

    @staticmethod
    def commands(counted: Sequence[Window]) -> list[tuple[Any, ...]]:
        """The commands that count one request (REPLIES_PER_WINDOW each), for a round trip."""
        out: list[tuple[Any, ...]] = []
        for window in counted:
            key = window.key
            out += [("INCR", key), ("EXPIRE", key, window.item.get_expiry(), "NX"), ("TTL", key)]
        return out

    def result(self, counted: Sequence[Window], replies: Sequence[Any]) -> int | None:
        """Read what ``count_in``'s commands answered: None, or the Retry-After seconds."""
        self.shared_answered()
        for n, window in enumerate(counted):
            count, _, ttl = replies[n * REPLIES_PER_WINDOW : (n + 1) * REPLIES_PER_WINDOW]
            if int(count) > window.item.amount:
                return max(1, int(ttl) if int(ttl) > 0 else window.item.get_expiry())
        return None

    def uncount(self, counted: Sequence[Window]) -> None:
        """Take back a request counted in Redis that turned out not to be the client's."""
        if self._client is None or not counted:
            return
        try:
            round_trip(self._client, [("DECR", window.key) for window in counted])
        except REDIS_ERRORS:
            self.shared_failed()

    def count_locally(self, counted: Sequence[Window]) -> int | None:
        for window in counted:
            if not self._local.hit(window.item, NAMESPACE, window.scope, window.who):
                stats = self._local.get_window_stats(
                    window.item, NAMESPACE, window.scope, window.who
                )
                return max(1, math.ceil(stats.reset_time - time.time()))
        return None

    def shared_failed(self) -> None:
        with self._guard:
            if self._shared_retry_at is None:
                # Once per outage, not a traceback per request.
                log.warning("Rate limit storage unreachable - falling back to in-memory storage")
            self._shared_retry_at = time.monotonic() + RETRY_SHARED_SECONDS

    def shared_answered(self) -> None:
        if self._shared_retry_at is None:
            return
        with self._guard:
            if self._shared_retry_at is not None:
                log.warning("Rate limit storage reachable again - counting in Redis")
                self._shared_retry_at = None


limiter = RateLimiter()
