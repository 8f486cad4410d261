"""Configuration, read once from environment variables.

Every setting has a default that works on a developer machine with PostgreSQL and Redis on
localhost; the README's configuration table lists them all.
"""

from __future__ import annotations

import os
import socket
from typing import Any

# The forms a PostgreSQL URL comes in, all meaning the installed driver, psycopg2. SQLAlchemy
# 2.1 reads a bare postgresql:// as psycopg (3), which is not installed, and postgres:// (as
# many platforms hand it out) as nothing at all.
POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg2")


class ConfigError(ValueError):
    """A setting in the environment cannot be used."""


def _int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(name: str, default: float, *, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _seconds_list(name: str, default: tuple[float, ...]) -> list[float]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    try:
        values = [float(item) for item in raw.split(",")]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if any(value <= 0 for value in values):
        raise ConfigError(f"{name} must be positive seconds, got {raw!r}")
    return values


def _str(name: str, default: str | None) -> str | None:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else raw


def normalize_database_url(url: str) -> str:
    """The URL with the scheme of the installed driver: ``postgresql+psycopg2://``.

    The one place that reads DATABASE_URL's scheme: the app, the migrations and the scripts'
    service check all go through it.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in POSTGRES_SCHEMES:
        given = f"scheme {scheme!r}" if separator else "no scheme"
        # Only the scheme: the rest of a URL may hold a password.
        raise ConfigError(
            "DATABASE_URL must be a PostgreSQL URL (postgres://, postgresql:// or "
            f"postgresql+psycopg2://user@host:port/database), got {given}"
        )
    return f"postgresql+psycopg2://{rest}"


def from_environment() -> dict[str, Any]:
    """Return the Flask config mapping built from the process environment."""
    return {
        "DATABASE_URL": normalize_database_url(
            _str("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/booking_service")
            or ""
        ),
        # One pooled connection per gunicorn thread. SQLAlchemy closes an overflow connection
        # as soon as it is returned, so a pool smaller than the threads opens and closes a
        # PostgreSQL session (a backend fork) for every request beyond it.
        "DB_POOL_SIZE": _int("DB_POOL_SIZE", _int("GUNICORN_THREADS", 8, minimum=1), minimum=1),
        "DB_MAX_OVERFLOW": _int("DB_MAX_OVERFLOW", 2),
        "DB_POOL_TIMEOUT_SECONDS": _float("DB_POOL_TIMEOUT_SECONDS", 5.0, minimum=0.1),
        # A pooled connection idle this long is pinged before use and replaced if dead; one
        # reused sooner is not (a ping would double the round trips of the hot reads). 0 pings
        # at every checkout.
        "DB_PING_IDLE_SECONDS": _float("DB_PING_IDLE_SECONDS", 1.0, minimum=0.0),
        # Bounds every statement so that a transaction cannot outlive the lock lease.
        "DB_STATEMENT_TIMEOUT_MS": _int("DB_STATEMENT_TIMEOUT_MS", 3000, minimum=100),
        "REDIS_URL": _str("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REDIS_SOCKET_TIMEOUT_SECONDS": _float("REDIS_SOCKET_TIMEOUT_SECONDS", 2.0, minimum=0.1),
        # High availability: "host:port,host:port" of Redis Sentinels. When set, the primary of
        # REDIS_SENTINEL_SERVICE is looked up through them and REDIS_URL is not used.
        "REDIS_SENTINELS": _str("REDIS_SENTINELS", None),
        "REDIS_SENTINEL_SERVICE": _str("REDIS_SENTINEL_SERVICE", "mymaster"),
        # Redis Cluster: "host:port,host:port" of some of its nodes (the rest are discovered).
        # When set, REDIS_URL and REDIS_SENTINELS are not used.
        "REDIS_CLUSTER_NODES": _str("REDIS_CLUSTER_NODES", None),
        "REDIS_SENTINEL_PASSWORD": _str("REDIS_SENTINEL_PASSWORD", None),
        "REDIS_PASSWORD": _str("REDIS_PASSWORD", None),
        "REDIS_DB": _int("REDIS_DB", 0),
        # Sub-second waits are allowed: the wait loop is ours (see locking.py), not
        # python-redis-lock's whole-second acquire(timeout=...).
        "LOCK_WAIT_SECONDS": _float("LOCK_WAIT_SECONDS", 5.0, minimum=0.05),
        # Whole seconds: python-redis-lock passes it to SET ... EX.
        "LOCK_EXPIRE_SECONDS": _int("LOCK_EXPIRE_SECONDS", 10, minimum=1),
        # Most seat changes of one event that the lock's holder applies in one transaction, from
        # the queue every instance adds to (services/ledger.py, combining.py): 64 keeps a batch
        # to milliseconds, far inside the lease; 1 commits each on its own.
        "SEAT_BATCH_MAX": _int("SEAT_BATCH_MAX", 64, minimum=1),
        # How old a worker's snapshot of an event may be and still refuse a booking before the
        # lock (services/snapshots.py), if the event's change counter has not moved since: it
        # bounds only changes made outside the service. 0 reads the event for every booking.
        "EVENT_SNAPSHOT_MAX_AGE_SECONDS": _float(
            "EVENT_SNAPSHOT_MAX_AGE_SECONDS", 0.5, minimum=0.0
        ),
        # How long per-event lock statistics (live lock view) outlive the event's last activity.
        "LOCK_STATS_WINDOW_SECONDS": _int("LOCK_STATS_WINDOW_SECONDS", 600, minimum=10),
        "RETRY_AFTER_SECONDS": _int("RETRY_AFTER_SECONDS", 1, minimum=1),
        # Sale flows (services/holds.py, waitlist.py, sweeper.py): how long a hold lasts (an
        # event may set its own), how long a waitlist offer does, and how the instances sweep
        # holds past their expiry: one sweeper at a time, holding a lease in Redis, every
        # interval; another takes over within the lease if it dies. 0 interval: no sweeping.
        "HOLD_TTL_SECONDS": _int("HOLD_TTL_SECONDS", 600, minimum=1),
        "WAITLIST_OFFER_TTL_SECONDS": _int("WAITLIST_OFFER_TTL_SECONDS", 1800, minimum=1),
        # Seats one customer may hold at once, live holds and offers over all events.
        "MAX_HELD_SEATS_PER_CUSTOMER": _int("MAX_HELD_SEATS_PER_CUSTOMER", 20, minimum=1),
        "HOLD_SWEEP_INTERVAL_SECONDS": _float("HOLD_SWEEP_INTERVAL_SECONDS", 0.5, minimum=0.0),
        "HOLD_SWEEP_LEASE_SECONDS": _float("HOLD_SWEEP_LEASE_SECONDS", 3.0, minimum=0.5),
        # Webhooks (services/relay.py, webhook_http.py): the relay runs in every gunicorn
        # worker, one sender at a time holding a lease in Redis (longer than one send and its
        # record); it retries a failed message after each of WEBHOOK_RETRY_SECONDS in turn
        # (about 3 days in all, like pretix), then keeps it as failed.
        "WEBHOOK_RELAY_ENABLED": _bool("WEBHOOK_RELAY_ENABLED", True),
        "WEBHOOK_RELAY_INTERVAL_SECONDS": _float(
            "WEBHOOK_RELAY_INTERVAL_SECONDS", 0.5, minimum=0.05
        ),
        "WEBHOOK_RELAY_LEASE_SECONDS": _float("WEBHOOK_RELAY_LEASE_SECONDS", 30.0, minimum=1.0),
        # Endpoint-and-event groups sent in parallel (in order within each).
        "WEBHOOK_RELAY_CONCURRENCY": _int("WEBHOOK_RELAY_CONCURRENCY", 4, minimum=1),
        "WEBHOOK_RETRY_SECONDS": _seconds_list(
            "WEBHOOK_RETRY_SECONDS", (60, 300, 1800, 3600, 10800, 21600, 43200, 86400, 86400)
        ),
        # One attempt, connection to last byte kept (the first 1 KB of the answer).
        "WEBHOOK_TIMEOUT_SECONDS": _float("WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.1),
        # Receivers must be https, on public addresses; these open both up (tests, local
        # development), never in production: private targets are how SSRF reaches inside.
        "WEBHOOK_ALLOW_HTTP": _bool("WEBHOOK_ALLOW_HTTP", False),
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": _bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", False),
        # flask purge-webhook-deliveries deletes settled messages and attempts older than this.
        "WEBHOOK_DELIVERY_RETENTION_DAYS": _int("WEBHOOK_DELIVERY_RETENTION_DAYS", 30, minimum=1),
        "TOKEN_TTL_HOURS": _int("TOKEN_TTL_HOURS", 24 * 30, minimum=1),
        # How long a resolved session is cached in Redis (services/sessions.py); logout takes
        # effect at once whatever this is. 0: every request looks its token up in PostgreSQL.
        "SESSION_CACHE_SECONDS": _int("SESSION_CACHE_SECONDS", 300),
        # flask purge-tokens deletes bearer tokens expired or revoked longer ago than this.
        "TOKEN_PURGE_GRACE_HOURS": _int("TOKEN_PURGE_GRACE_HOURS", 24),
        # flask purge-seat-intents deletes the seat ledger's journal rows older than this
        # (long past any request that could still ask for its intent's outcome).
        "SEAT_INTENT_RETENTION_HOURS": _int("SEAT_INTENT_RETENTION_HOURS", 24, minimum=1),
        # A device token (login devices) unused this long no longer moves a device's logins off
        # the per-username limit.
        "DEVICE_TOKEN_TTL_DAYS": _int("DEVICE_TOKEN_TTL_DAYS", 90, minimum=1),
        "PASSWORD_HASH_METHOD": _str("PASSWORD_HASH_METHOD", "scrypt"),
        "INSTANCE_NAME": _str("INSTANCE_NAME", socket.gethostname()),
        # Off: every metric call is a no-op and /metrics answers 404 (overhead comparisons).
        "METRICS_ENABLED": _bool("METRICS_ENABLED", True),
        "METRICS_TOKEN": _str("METRICS_TOKEN", None),
        "OPS_TOKEN": _str("OPS_TOKEN", None),
        # Room for the largest body the schemas allow, every character JSON-escaped: a 10,000
        # character description of astral characters alone is 120 kB (\uXXXX\uXXXX each).
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 256 * 1024, minimum=1024),
        # Idempotency-Key records: how long a key's answer is replayed, and after how long an
        # unfinished claim counts as abandoned (longer than any request may run: gunicorn
        # kills a worker after GUNICORN_TIMEOUT).
        "IDEMPOTENCY_TTL_HOURS": _int("IDEMPOTENCY_TTL_HOURS", 24, minimum=1),
        "IDEMPOTENCY_LEASE_SECONDS": _int("IDEMPOTENCY_LEASE_SECONDS", 60, minimum=1),
        # Rate limits ("N/second|minute|hour|day", ";"-separated for several), counted in Redis.
        "RATE_LIMIT_ENABLED": _bool("RATE_LIMIT_ENABLED", True),
        "RATE_LIMIT_LOGIN": _str("RATE_LIMIT_LOGIN", "10/minute"),
        "RATE_LIMIT_REGISTER": _str("RATE_LIMIT_REGISTER", "5/minute"),
        "RATE_LIMIT_BOOKINGS": _str("RATE_LIMIT_BOOKINGS", "60/minute"),
        # The waiting room's join (and leave) and its poll, per user: a poll follows the
        # Retry-After it was given (at least a second), so this is room for a few retries.
        "RATE_LIMIT_QUEUE_JOIN": _str("RATE_LIMIT_QUEUE_JOIN", "10/minute"),
        "RATE_LIMIT_QUEUE_POLL": _str("RATE_LIMIT_QUEUE_POLL", "120/minute"),
        # The waiting room's pacer (services/pacer.py): one worker at a time admits, holding a
        # lease in Redis, every interval. Automatic pacing (an event's admit_per_minute null)
        # starts at START_RATE admissions per second and keeps the event's lock wait, as
        # Little's law estimates it from the lock statistics, under TARGET_LOCK_WAIT_MS,
        # never above MAX_RATE. 0 interval: no pacing in this process.
        "WAITING_ROOM_PACE_INTERVAL_SECONDS": _float(
            "WAITING_ROOM_PACE_INTERVAL_SECONDS", 0.25, minimum=0.0
        ),
        "WAITING_ROOM_PACER_LEASE_SECONDS": _float(
            "WAITING_ROOM_PACER_LEASE_SECONDS", 3.0, minimum=0.5
        ),
        "WAITING_ROOM_TARGET_LOCK_WAIT_MS": _float(
            "WAITING_ROOM_TARGET_LOCK_WAIT_MS", 50.0, minimum=1.0
        ),
        "WAITING_ROOM_START_RATE": _float("WAITING_ROOM_START_RATE", 5.0, minimum=0.1),
        "WAITING_ROOM_MAX_RATE": _float("WAITING_ROOM_MAX_RATE", 500.0, minimum=0.1),
        # Reverse proxies in front of the app that append to X-Forwarded-For; 0 trusts none.
        # Per-address rate limits need the real client address.
        "TRUSTED_PROXIES": _int("TRUSTED_PROXIES", 0),
        # Comma-separated origins allowed to call the API from a browser; unset: CORS off.
        "CORS_ORIGINS": _str("CORS_ORIGINS", None),
        "LOG_LEVEL": _str("LOG_LEVEL", "INFO"),
    }


def validate(config: dict[str, Any]) -> None:
    """Reject combinations that would break the locking model."""
    if 0 < config["HOLD_SWEEP_LEASE_SECONDS"] <= config["HOLD_SWEEP_INTERVAL_SECONDS"]:
        raise ConfigError(
            "HOLD_SWEEP_LEASE_SECONDS must be longer than HOLD_SWEEP_INTERVAL_SECONDS, "
            "or the sweeper's lease runs out between its rounds"
        )
    if config["DB_STATEMENT_TIMEOUT_MS"] >= config["LOCK_EXPIRE_SECONDS"] * 1000:
        raise ConfigError(
            "DB_STATEMENT_TIMEOUT_MS must be shorter than LOCK_EXPIRE_SECONDS, "
            "or a slow transaction outlives its lock lease"
        )
    send = config["WEBHOOK_TIMEOUT_SECONDS"] + config["DB_STATEMENT_TIMEOUT_MS"] / 1000
    if config["WEBHOOK_RELAY_LEASE_SECONDS"] <= send:
        raise ConfigError(
            "WEBHOOK_RELAY_LEASE_SECONDS must be longer than WEBHOOK_TIMEOUT_SECONDS plus "
            "DB_STATEMENT_TIMEOUT_MS, or another relay may take over while a message is sent"
        )
    for name in ("REDIS_SENTINELS", "REDIS_CLUSTER_NODES"):
        if config.get(name):
            parse_host_ports(name, config[name])
    if config.get("REDIS_SENTINELS") and config.get("REDIS_CLUSTER_NODES"):
        raise ConfigError("Set REDIS_SENTINELS or REDIS_CLUSTER_NODES, not both")
    for name in (
        "RATE_LIMIT_LOGIN",
        "RATE_LIMIT_REGISTER",
        "RATE_LIMIT_BOOKINGS",
        "RATE_LIMIT_QUEUE_JOIN",
        "RATE_LIMIT_QUEUE_POLL",
    ):
        _check_rate_limit(name, config[name])


def ensure_metrics_directory() -> None:
    """Create PROMETHEUS_MULTIPROC_DIR if it is set and missing; ConfigError if it cannot be.

    gunicorn.conf.py makes the directory when gunicorn starts, so a one-off command (``flask
    init-db`` in a deploy job, a purge from cron) given the service's environment may find it
    missing: it is made, as gunicorn would, rather than the command refused. prometheus_client
    writes its first file there at import time and would fail with a traceback.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR {path!r} is not a directory and cannot be made one: "
            f"{error.strerror}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR {path!r} is not writable")


def parse_host_ports(name: str, value: str) -> list[tuple[str, int]]:
    """Parse a "host:port,host:port" setting (REDIS_SENTINELS, REDIS_CLUSTER_NODES)."""
    pairs = []
    for item in value.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name} must be 'host:port,host:port', got {value!r}")
        pairs.append((host.strip("[]"), int(port)))
    return pairs


def _check_rate_limit(name: str, value: str) -> None:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must look like '10/minute', got {value!r}") from None
