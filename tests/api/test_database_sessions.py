"""Nothing relies on the state of a server session, so PgBouncer in transaction pooling works.

Stored functions instead of PREPARE, and statement timeouts set per transaction instead of at
connect time; checked here on the real PostgreSQL (the PgBouncer tiers run the same code
through a real pooler).
"""

from __future__ import annotations

import logging
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service import migrate
from booking_service.errors import DbUnavailable
from booking_service.extensions import Database, StoredFunction, db
from booking_service.services.accounts import USER_BY_LIVE_TOKEN
from tests import factories
from tests.conftest import TEST_DATABASE_URL


def test_every_stored_function_is_created_by_init_db() -> None:
    assert set(StoredFunction.defined) == set(migrate.STORED_FUNCTIONS)
    with db.transaction() as session:
        existing = set(
            session.scalars(
                text("SELECT proname FROM pg_proc WHERE proname = ANY(:names)"),
                {"names": [f.name for f in migrate.STORED_FUNCTIONS]},
            )
        )
    assert existing == {f.name for f in migrate.STORED_FUNCTIONS}


def test_a_changed_definition_is_a_new_function() -> None:
    first = StoredFunction("probe", "SELECT 1", returns="TABLE (n integer)")
    second = StoredFunction("probe", "SELECT 2", returns="TABLE (n integer)")
    StoredFunction.defined.remove(first)
    StoredFunction.defined.remove(second)
    assert first.name != second.name
    assert first.name.startswith("probe_")


def test_no_prepared_statement_and_no_session_setting_outlive_a_request(
    client: FlaskClient,
) -> None:
    user = factories.customer(client)
    assert (
        client.get(f"{factories.API}/auth/me", headers=factories.auth(user["token"])).status_code
        == 200
    )
    with db.single_statement() as connection:
        assert connection.scalar(text("SELECT count(*) FROM pg_prepared_statements")) == 0
    # A new transaction on the same pooled session starts from the server's defaults.
    assert db.engine is not None
    with db.engine.connect() as connection:
        connection.connection.dbapi_connection.autocommit = True
        raw = connection.connection.dbapi_connection.cursor()
        raw.execute("SHOW statement_timeout")  # a raw cursor: no SET LOCAL in front of it
        assert raw.fetchone()[0] == "0"


@pytest.mark.parametrize("shape", ["transaction", "single_statement"])
def test_statements_are_bounded_in_every_transaction(app: Flask, shape: str) -> None:
    bounded = Database()
    bounded.configure({**app.config, "DB_STATEMENT_TIMEOUT_MS": 200})
    try:
        opener = bounded.transaction if shape == "transaction" else bounded.single_statement
        with opener() as connection:
            assert connection.scalar(text("SHOW statement_timeout")) == "200ms"
        with pytest.raises(DbUnavailable), opener() as connection:
            connection.execute(text("SELECT pg_sleep(2)"))
    finally:
        assert bounded.engine is not None
        bounded.engine.dispose()


def test_pauses_inside_a_transaction_are_bounded(app: Flask) -> None:
    bounded = Database()
    bounded.configure({**app.config, "DB_STATEMENT_TIMEOUT_MS": 300})
    try:
        with pytest.raises(DbUnavailable), bounded.transaction() as session:
            assert session.scalar(text("SHOW idle_in_transaction_session_timeout")) == "300ms"
            time.sleep(1.0)  # idle in transaction: the server ends the session
            session.execute(text("SELECT 1"))
    finally:
        assert bounded.engine is not None
        bounded.engine.dispose()


def test_a_missing_stored_function_is_a_503_with_a_clear_log_line(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    user = factories.customer(client)
    with db.transaction() as session:
        session.execute(text(f"DROP FUNCTION {USER_BY_LIVE_TOKEN.name}"))
    try:
        with caplog.at_level(logging.ERROR):
            response = client.get(f"{factories.API}/auth/me", headers=factories.auth(user["token"]))
        assert response.status_code == 503
        assert response.get_json()["code"] == "db_unavailable"
        assert response.headers["Retry-After"]
        assert "run `flask init-db`" in caplog.text
    finally:
        migrate.upgrade(TEST_DATABASE_URL)  # puts the function back
    assert (
        client.get(f"{factories.API}/auth/me", headers=factories.auth(user["token"])).status_code
        == 200
    )
