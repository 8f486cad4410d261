"""Configuration, read once from environment variables.

Every setting has a default that works on a developer machine with PostgreSQL and Redis on
localhost; the README's configuration table lists them all.
"""

from __future__ import annotations

import os
import socket
from typing import Any


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


def _str(name: str, default: str | None) -> str | None:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else raw


def from_environment() -> dict[str, Any]:
    """Return the Flask config mapping built from the process environment."""
    return {
        "DATABASE_URL": _str(
            "DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/booking_service"
        ),
        "DB_POOL_SIZE": _int("DB_POOL_SIZE", 5, minimum=1),
        "DB_MAX_OVERFLOW": _int("DB_MAX_OVERFLOW", 5),
        "DB_POOL_TIMEOUT_SECONDS": _float("DB_POOL_TIMEOUT_SECONDS", 5.0, minimum=0.1),
        # Bounds every statement so that a transaction cannot outlive the lock lease.
        "DB_STATEMENT_TIMEOUT_MS": _int("DB_STATEMENT_TIMEOUT_MS", 3000, minimum=100),
        "REDIS_URL": _str("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REDIS_SOCKET_TIMEOUT_SECONDS": _float("REDIS_SOCKET_TIMEOUT_SECONDS", 2.0, minimum=0.1),
        # Sub-second waits are allowed: the wait loop is ours (see locking.py), not
        # python-redis-lock's whole-second acquire(timeout=...).
        "LOCK_WAIT_SECONDS": _float("LOCK_WAIT_SECONDS", 5.0, minimum=0.05),
        # Whole seconds: python-redis-lock passes it to SET ... EX.
        "LOCK_EXPIRE_SECONDS": _int("LOCK_EXPIRE_SECONDS", 10, minimum=1),
        "RETRY_AFTER_SECONDS": _int("RETRY_AFTER_SECONDS", 1, minimum=1),
        "TOKEN_TTL_HOURS": _int("TOKEN_TTL_HOURS", 24 * 30, minimum=1),
        "PASSWORD_HASH_METHOD": _str("PASSWORD_HASH_METHOD", "scrypt"),
        "INSTANCE_NAME": _str("INSTANCE_NAME", socket.gethostname()),
        "METRICS_TOKEN": _str("METRICS_TOKEN", None),
        "OPS_TOKEN": _str("OPS_TOKEN", None),
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 64 * 1024, minimum=1024),
        "LOG_LEVEL": _str("LOG_LEVEL", "INFO"),
    }


def validate(config: dict[str, Any]) -> None:
    """Reject combinations that would break the locking model."""
    if config["DB_STATEMENT_TIMEOUT_MS"] >= config["LOCK_EXPIRE_SECONDS"] * 1000:
        raise ConfigError(
            "DB_STATEMENT_TIMEOUT_MS must be shorter than LOCK_EXPIRE_SECONDS, "
            "or a slow transaction outlives its lock lease"
        )
