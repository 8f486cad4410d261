"""Rate-limit counting: fixed windows in the service's Redis, so every instance shares them.

Which views are limited, per what, and how the 429 is documented: ``api/limits.py``. A limited
request costs one Redis round trip per configured limit (INCR and EXPIRE in one
script, from the ``limits`` library) and nothing else; routes without a limit pay nothing.
(Flask-Limiter, used before, ran a before- and an after-request pass over every route, which
cost more than a whole ``/livez`` request.)

When that Redis is unreachable the counts fall back to this process's memory, and Redis is
tried again after ``RETRY_SHARED_SECONDS``: sign-in and registration stay available (fail
open), while the booking path still fails closed on its own, through the event lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from functools import lru_cache
from typing import Any

from flask import Flask
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry

from booking_service import config as config_module

log = logging.getLogger(__name__)

# Counter keys: LIMITS:LIMITER/rate-limit/<scope>/<who>/<amount>/<multiples>/<granularity>.
NAMESPACE = "rate-limit"
# How long a process counts on its own after Redis failed before it tries Redis again.
RETRY_SHARED_SECONDS = 5.0


@lru_cache(maxsize=64)
def parse_limits(value: str) -> tuple[RateLimitItem, ...]:
    """The limits in a setting such as ``"10/minute;100/hour"`` (parsed once per value)."""
    return tuple(parse_many(value))


class RateLimiter:
    """Fixed-window counters in Redis; per-process counters while Redis is unreachable."""

    def __init__(self) -> None:
        self._shared: FixedWindowRateLimiter | None = None
        self._local = FixedWindowRateLimiter(MemoryStorage())
        self._shared_retry_at: float | None = None  # set while Redis is considered down
        self._guard = threading.Lock()

    def configure(self, config: dict[str, Any]) -> None:
        uri, options = storage_settings(config)
        # wrap_exceptions: every storage failure arrives as one exception type, StorageError.
        storage = storage_from_string(uri, wrap_exceptions=True, **options)
        self._shared = FixedWindowRateLimiter(storage)
        self._local = FixedWindowRateLimiter(MemoryStorage())
        self._shared_retry_at = None

    def hit(self, limits: str, *identifiers: str) -> int | None:
        """Count one request against every limit in ``limits``.

        Returns None when it is within all of them, else the seconds until the exceeded
        window resets (for ``Retry-After``).
        """
        for item in parse_limits(limits):
            strategy = self._counting()
            try:
                allowed = strategy.hit(item, NAMESPACE, *identifiers)
            except StorageError:
                self._shared_failed()
                strategy = self._local
                allowed = strategy.hit(item, NAMESPACE, *identifiers)
            else:
                if strategy is self._shared:
                    self._shared_answered()
            if not allowed:
                return _seconds_until_reset(strategy, item, identifiers)
        return None

    def _counting(self) -> FixedWindowRateLimiter:
        """Redis, unless it failed less than RETRY_SHARED_SECONDS ago."""
        if self._shared is None:
            raise RuntimeError("RateLimiter used before configure")
        retry_at = self._shared_retry_at
        if retry_at is not None and time.monotonic() < retry_at:
            return self._local
        return self._shared

    def _shared_failed(self) -> None:
        with self._guard:
            if self._shared_retry_at is None:
                # Once per outage, not a traceback per request.
                log.warning("Rate limit storage unreachable - falling back to in-memory storage")
            self._shared_retry_at = time.monotonic() + RETRY_SHARED_SECONDS

    def _shared_answered(self) -> None:
        if self._shared_retry_at is None:
            return
        with self._guard:
            if self._shared_retry_at is not None:
                log.warning("Rate limit storage reachable again - counting in Redis")
                self._shared_retry_at = None


def _seconds_until_reset(
    strategy: FixedWindowRateLimiter, item: RateLimitItem, identifiers: tuple[str, ...]
) -> int:
    try:
        reset_at = strategy.get_window_stats(item, NAMESPACE, *identifiers).reset_time
        return max(1, math.ceil(reset_at - time.time()))
    except StorageError:  # gone between the count and now: the whole window is an upper bound
        return max(1, item.get_expiry())


def storage_settings(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The limits library's storage URI and options for the configured Redis."""
    timeout = config["REDIS_SOCKET_TIMEOUT_SECONDS"]
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # No retries: a Redis that does not answer costs one timeout, then the in-memory
        # fallback takes over for RETRY_SHARED_SECONDS.
        "retry": Retry(NoBackoff(), 0),
    }
    if config.get("REDIS_PASSWORD"):
        options["password"] = config["REDIS_PASSWORD"]
    if config.get("REDIS_CLUSTER_NODES"):
        # One key per counter: every command stays in one slot.
        return f"redis+cluster://{_locations('REDIS_CLUSTER_NODES', config)}", options
    if not config.get("REDIS_SENTINELS"):
        return config["REDIS_URL"], options
    locations = _locations("REDIS_SENTINELS", config)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if config.get("REDIS_SENTINEL_PASSWORD"):
        sentinel_kwargs["password"] = config["REDIS_SENTINEL_PASSWORD"]
    options.update(
        db=config["REDIS_DB"],
        sentinel_kwargs=sentinel_kwargs,
        # Counters are read from the primary as well: replicas lag behind it (replication is
        # asynchronous), and a limit must see the hits just counted.
        use_replicas=False,
    )
    return f"redis+sentinel://{locations}/{config['REDIS_SENTINEL_SERVICE']}", options


def _locations(setting: str, config: dict[str, Any]) -> str:
    return ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for host, port in config_module.parse_host_ports(setting, config[setting])
    )


limiter = RateLimiter()


def init_app(app: Flask) -> None:
    """Point the counters at the configured Redis."""
    limiter.configure(app.config)
