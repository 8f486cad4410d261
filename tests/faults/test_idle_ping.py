"""Pooled connections killed by the server: pinged and replaced after an idle spell, a 503 when
reused at once (database.ping_connections_idle_for), never a 500.

A one-connection Database of the test's own on the test PostgreSQL, so that every checkout is
the same connection; the kill is a real pg_terminate_backend from a separate connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from booking_service import config as config_module
from booking_service.database import Database
from booking_service.errors import DbUnavailable
from tests.conftest import TEST_DATABASE_URL, TEST_SETTINGS


def _one_connection_database(ping_idle_seconds: float) -> Iterator[Database]:
    database = Database()
    database.configure(
        {
            **config_module.from_environment(),
            **TEST_SETTINGS,
            "DB_POOL_SIZE": 1,
            "DB_MAX_OVERFLOW": 0,
            "DB_PING_IDLE_SECONDS": ping_idle_seconds,
        }
    )
    yield database
    assert database.engine is not None
    database.engine.dispose()


@pytest.fixture
def quick_ping(app: Flask) -> Iterator[Database]:
    yield from _one_connection_database(0.2)


@pytest.fixture
def slow_ping(app: Flask) -> Iterator[Database]:
    yield from _one_connection_database(60.0)


def _backend_pid(database: Database) -> int:
    with database.single_statement() as connection:
        return int(connection.scalar(text("SELECT pg_backend_pid()")))


def _terminate(pid: int) -> None:
    killer = create_engine(TEST_DATABASE_URL, poolclass=NullPool)
    try:
        with killer.connect() as connection:
            assert connection.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        killer.dispose()
    time.sleep(0.05)  # the backend exits asynchronously


def test_a_connection_killed_while_idle_is_replaced_unnoticed(quick_ping: Database) -> None:
    victim = _backend_pid(quick_ping)
    _terminate(victim)
    time.sleep(0.3)  # idle past DB_PING_IDLE_SECONDS

    assert _backend_pid(quick_ping) != victim  # pinged, found dead, replaced: no error


def test_a_connection_killed_between_two_quick_uses_fails_cleanly_once(
    slow_ping: Database,
) -> None:
    victim = _backend_pid(slow_ping)
    _terminate(victim)

    # Reused at once, so not pinged: the request learns of the kill as a 503, not a 500...
    with pytest.raises(DbUnavailable), slow_ping.single_statement() as reused:
        reused.execute(text("SELECT 1"))
    # ...and the pool has let go of it: the next checkout is a live connection.
    assert _backend_pid(slow_ping) != victim
