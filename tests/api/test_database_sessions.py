"""Nothing relies on the state of a server session, so PgBouncer in transaction pooling works.

Stored functions instead of PREPARE, and statement timeouts set per transaction instead of at
connect time; checked here on the real PostgreSQL (the PgBouncer tiers run the same code
through a real pooler).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import text

from booking_service import migrate
from booking_service.database import Database, StoredFunction, db
from booking_service.errors import DbUnavailable, NotActive, OutcomeUnknown
from booking_service.services.sessions import USER_BY_LIVE_TOKEN
from harness.database import limited_role
from harness.processes import free_port
from tests import factories
from tests.conftest import TEST_DATABASE_URL


def test_every_stored_function_is_created_by_init_db() -> None:
    # Which functions the registry holds: tests/migrations/test_stored_functions.py.
    names = {f.name for f in migrate.stored_functions()}
    assert len(names) >= 2
    with db.transaction() as session:
        existing = set(
            session.scalars(
                text("SELECT proname FROM pg_proc WHERE proname = ANY(:names)"),
                {"names": list(names)},
            )
        )
    assert existing == names


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


# --- why the database was unavailable: booking_db_unavailable_total{cause} ------------------


def _unavailable(cause: str) -> float:
    return REGISTRY.get_sample_value("booking_db_unavailable_total", {"cause": cause}) or 0.0


def _pool_gauge(state: str) -> float:
    return REGISTRY.get_sample_value("booking_db_pool_connections", {"state": state}) or 0.0


@pytest.fixture
def doomed(app: Flask) -> Iterator[Database]:
    """A pool of its own for tests that kill its connections: a connection killed while idle
    goes back to the pool unnoticed (by design, see DB_PING_IDLE_SECONDS), and must not be
    the next test's."""
    database = Database()
    database.configure(dict(app.config))
    yield database
    assert database.engine is not None
    database.engine.dispose()


def _terminate(pid: int) -> None:
    with db.engine.connect() as other:  # type: ignore[union-attr]
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        other.commit()


@pytest.fixture
def small_pool(app: Flask) -> Iterator[Database]:
    """One connection, no overflow, a short wait for it."""
    database = Database()
    database.configure(
        {**app.config, "DB_POOL_SIZE": 1, "DB_MAX_OVERFLOW": 0, "DB_POOL_TIMEOUT_SECONDS": 0.3}
    )
    yield database
    assert database.engine is not None
    database.engine.dispose()


def test_a_full_pool_shows_its_waiters_then_times_out(small_pool: Database) -> None:
    before = _unavailable("pool_timeout")
    waiting: list[float] = []

    def second_request() -> None:
        with pytest.raises(DbUnavailable), small_pool.single_statement():
            pass  # pragma: no cover - never reached: the pool has no connection to give

    with small_pool.single_statement() as connection:
        connection.execute(text("SELECT 1"))
        assert _pool_gauge("in_use") == 1
        thread = threading.Thread(target=second_request)
        thread.start()
        time.sleep(0.1)
        waiting.append(_pool_gauge("waiting"))
        thread.join()
    assert waiting == [1]
    assert _pool_gauge("waiting") == 0
    assert (_pool_gauge("in_use"), _pool_gauge("idle")) == (0, 1)
    assert _unavailable("pool_timeout") == before + 1


def test_a_refused_connection_is_counted_as_such(app: Flask) -> None:
    nowhere = Database()
    nowhere.configure(
        {**app.config, "DATABASE_URL": f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x"}
    )
    before = _unavailable("connect_refused")
    with pytest.raises(DbUnavailable), nowhere.transaction() as session:
        session.execute(text("SELECT 1"))
    assert _unavailable("connect_refused") == before + 1


def test_a_role_out_of_connections_is_a_refusal(app: Flask) -> None:
    with limited_role("booking_one_connection", 1, TEST_DATABASE_URL.rsplit("/", 1)[1]) as role:
        limited = Database()
        url = TEST_DATABASE_URL.replace("postgres@", f"{role}@")
        limited.configure({**app.config, "DATABASE_URL": url, "DB_POOL_TIMEOUT_SECONDS": 5})
        before = _unavailable("connect_refused")
        try:
            with limited.single_statement() as first:
                first.execute(text("SELECT 1"))
                # The pool opens a second connection (overflow); PostgreSQL refuses it.
                with pytest.raises(DbUnavailable), limited.single_statement() as second:
                    second.execute(text("SELECT 1"))
        finally:
            assert limited.engine is not None
            limited.engine.dispose()
        assert _unavailable("connect_refused") == before + 1


def test_a_statement_over_its_timeout_is_counted_as_such(app: Flask) -> None:
    bounded = Database()
    bounded.configure({**app.config, "DB_STATEMENT_TIMEOUT_MS": 200})
    before = _unavailable("statement_timeout")
    try:
        with pytest.raises(DbUnavailable), bounded.single_statement() as connection:
            connection.execute(text("SELECT pg_sleep(2)"))
    finally:
        assert bounded.engine is not None
        bounded.engine.dispose()
    assert _unavailable("statement_timeout") == before + 1


def test_a_connection_that_dies_in_use_is_counted_as_server_gone(doomed: Database) -> None:
    before = _unavailable("server_gone")
    with pytest.raises(DbUnavailable), doomed.single_statement() as connection:
        _terminate(connection.scalar(text("SELECT pg_backend_pid()")))
        connection.execute(text("SELECT 1"))
    assert _unavailable("server_gone") == before + 1


# --- a connection lost while committing: the outcome is unknown, and the answer says so -----


def test_a_commit_whose_connection_died_has_an_unknown_outcome(doomed: Database) -> None:
    with pytest.raises(OutcomeUnknown), doomed.transaction() as session:
        _terminate(session.scalar(text("SELECT pg_backend_pid()")))


def test_a_read_whose_connection_died_wrote_nothing(doomed: Database) -> None:
    with pytest.raises(DbUnavailable), doomed.read_transaction() as session:
        _terminate(session.scalar(text("SELECT pg_backend_pid()")))


def test_a_single_write_cut_off_while_running_has_an_unknown_outcome(doomed: Database) -> None:
    with pytest.raises(OutcomeUnknown), doomed.single_write() as connection:
        pid = connection.scalar(text("SELECT pg_backend_pid()"))
        killer = threading.Timer(0.3, _terminate, args=(pid,))
        killer.start()
        try:
            connection.execute(text("SELECT pg_sleep(2)"))
        finally:
            killer.join()


def test_a_single_write_refused_a_connection_was_not_made(app: Flask) -> None:
    nowhere = Database()
    nowhere.configure(
        {**app.config, "DATABASE_URL": f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x"}
    )
    with pytest.raises(DbUnavailable), nowhere.single_write() as connection:
        connection.execute(text("SELECT 1"))


@pytest.mark.parametrize("opener", ["transaction", "read_transaction", "single_statement"])
def test_a_refusal_stays_the_answer_when_the_connection_died_meanwhile(
    opener: str, doomed: Database
) -> None:
    # Closing (rolling back) a dead connection fails too; that must not replace the answer
    # the request already has, nor turn it into a 500.
    with pytest.raises(NotActive), getattr(doomed, opener)() as handle:
        _terminate(handle.scalar(text("SELECT pg_backend_pid()")))
        raise NotActive("refused for a reason of its own")
