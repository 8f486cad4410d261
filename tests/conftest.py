"""Shared fixtures: a real PostgreSQL database and a real Redis, reset for every test.

TEST_DATABASE_URL and TEST_REDIS_URL choose where; the defaults are a dedicated database on
the local PostgreSQL and Redis database 15, so a developer's demo data is never touched.
Nothing connects before a test asks for it: tests/unit runs with both stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import MetaData, create_engine, text

from booking_service import create_app
from booking_service.database import db
from booking_service.services.snapshots import event_snapshots
from harness.database import recreate_schema
from tests.tiers import ServerGuard

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/booking_service_test"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# Settings every test app (in-process or gunicorn) runs with. A cheap password hash keeps
# hundreds of registrations fast; production uses scrypt (PASSWORD_HASH_METHOD).
TEST_SETTINGS = {
    "DATABASE_URL": TEST_DATABASE_URL,
    "REDIS_URL": TEST_REDIS_URL,
    "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
    "LOCK_WAIT_SECONDS": 2.0,
    "LOG_LEVEL": "WARNING",
    # Every test registers and signs in from one address; tests/api/test_rate_limits.py
    # lowers these per test to see the limits bite.
    "RATE_LIMIT_LOGIN": "100000/minute",
    "RATE_LIMIT_REGISTER": "100000/minute",
    "RATE_LIMIT_BOOKINGS": "100000/minute",
    "RATE_LIMIT_QUEUE_JOIN": "100000/minute",
    "RATE_LIMIT_QUEUE_POLL": "100000/minute",
}


def _recreate_schema(url: str) -> list[str]:
    """Migrate an empty schema to head; returns its tables, referencing ones first."""
    recreate_schema(url)
    engine = create_engine(url)
    metadata = MetaData()
    metadata.reflect(engine)
    engine.dispose()
    return [t.name for t in reversed(metadata.sorted_tables) if t.name != "alembic_version"]


def pytest_configure(config: pytest.Config) -> None:
    guard = ServerGuard()
    guard.install()
    config.pluginmanager.register(guard, "server-guard")


def pytest_unconfigure(config: pytest.Config) -> None:
    guard = config.pluginmanager.get_plugin("server-guard")
    if guard is not None:
        guard.uninstall()


@pytest.fixture(scope="session")
def test_schema() -> list[str]:
    """The test database, emptied and migrated to head once, by the first test that needs it.

    Its value: the schema's tables, each listed before the tables it references.
    """
    return _recreate_schema(TEST_DATABASE_URL)


def build_app() -> Flask:
    """The test app; building it opens no connection (tests/unit uses it with no database)."""
    application = create_app(dict(TEST_SETTINGS))
    application.config["TESTING"] = True
    return application


@pytest.fixture(scope="session")
def app(test_schema: list[str]) -> Iterator[Flask]:
    # Fixtures that start gunicorn request ``app`` first to have the schema in place.
    yield build_app()
    if db.engine is not None:
        db.engine.dispose()


@pytest.fixture(scope="session")
def redis_conn() -> redis.Redis:
    return redis.Redis.from_url(TEST_REDIS_URL)


@pytest.fixture(autouse=True)
def clean_state(test_schema: list[str], app: Flask, redis_conn: redis.Redis) -> Iterator[None]:
    """Every test starts from empty tables, no locks and no event snapshots."""
    assert db.engine is not None
    with db.engine.begin() as connection:
        # Ids keep counting, as in production, where an id is never reused: the long-lived
        # gunicorn instances of the concurrency tier keep event snapshots (up to
        # EVENT_SNAPSHOT_MAX_AGE_SECONDS), and a restarted id would let one answer for a
        # different event of the next test. DELETE, not TRUNCATE: on tables this small it takes
        # well under a millisecond where TRUNCATE (new files, catalog writes) takes ~100 ms.
        for table in test_schema:
            connection.execute(text(f"DELETE FROM {table}"))
    redis_conn.flushdb()
    event_snapshots.clear()
    yield


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
