"""Shared fixtures: a real PostgreSQL database and a real Redis, reset for every test.

TEST_DATABASE_URL and TEST_REDIS_URL choose where; the defaults are a dedicated database on
the local PostgreSQL and Redis database 15, so a developer's demo data is never touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from booking_service import create_app, migrate
from booking_service.database import db
from booking_service.services.snapshots import event_snapshots

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
}

TABLES = "history_entries, bookings, events, api_tokens, users, seat_intents, webhook_messages"


def _recreate_schema(url: str) -> None:
    migrate.ensure_database(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    migrate.upgrade(url)  # the real migrations, not create_all: they are under test too


@pytest.fixture(scope="session")
def app() -> Iterator[Flask]:
    _recreate_schema(TEST_DATABASE_URL)
    application = create_app(dict(TEST_SETTINGS))
    application.config["TESTING"] = True
    yield application
    if db.engine is not None:
        db.engine.dispose()


@pytest.fixture(scope="session")
def redis_conn() -> redis.Redis:
    return redis.Redis.from_url(TEST_REDIS_URL)


@pytest.fixture(autouse=True)
def clean_state(app: Flask, redis_conn: redis.Redis) -> Iterator[None]:
    """Every test starts from empty tables, no locks and no event snapshots."""
    assert db.engine is not None
    with db.engine.begin() as connection:
        # Ids keep counting, as in production, where an id is never reused: the long-lived
        # gunicorn instances of the concurrency tier keep event snapshots (up to
        # EVENT_SNAPSHOT_MAX_AGE_SECONDS), and a restarted id would let one answer for a
        # different event of the next test.
        connection.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    redis_conn.flushdb()
    event_snapshots.clear()
    yield


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
