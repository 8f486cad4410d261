"""The PostgreSQL client: engine and pooled sessions, transactions that translate "the database
is not there" into 503s, and the hot statements kept as stored functions.

Created once per process and configured by ``create_app``; nothing here knows about HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, ClassVar

import psycopg2
from psycopg2 import errorcodes
from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from sqlalchemy import Connection, CursorResult, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from booking_service import metrics
from booking_service.errors import DbUnavailable, OutcomeUnknown

log = logging.getLogger(__name__)


class Database:
    """Engine and session factory; services open transactions through ``transaction()``."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    def configure(self, config: dict[str, Any]) -> None:
        if self.engine is not None:
            self.engine.dispose()
        # Nothing here depends on the state of a server session: no startup options, no session
        # SET, no PREPARE. So DATABASE_URL may point at PostgreSQL or at PgBouncer in
        # transaction pooling, where consecutive transactions may run on different sessions.
        self.engine = create_engine(
            config["DATABASE_URL"],
            poolclass=ObservedQueuePool,
            pool_size=config["DB_POOL_SIZE"],
            max_overflow=config["DB_MAX_OVERFLOW"],
            pool_timeout=config["DB_POOL_TIMEOUT_SECONDS"],
            # Error messages (and so logged tracebacks) carry no bound values: no password or
            # token hashes, no personal data.
            hide_parameters=True,
            connect_args={"connect_timeout": 3, "application_name": "booking-service"},
        )
        bound_every_transaction(self.engine, config["DB_STATEMENT_TIMEOUT_MS"])
        ping_connections_idle_for(self.engine, config["DB_PING_IDLE_SECONDS"])
        self.engine.pool.report()  # type: ignore[attr-defined]
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction that writes: commit on success, roll back on any error.

        If the connection dies during the COMMIT, the server may have committed or not: that
        is 503 ``outcome_unknown``, never ``db_unavailable``'s "nothing was written".
        """
        with self._session() as session:
            yield session
            with translate_lost_commit():
                session.commit()

    @contextmanager
    def read_transaction(self) -> Iterator[Session]:
        """One transaction that only reads (a failure anywhere wrote nothing)."""
        with self._session() as session:
            yield session
            session.commit()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        if self._sessions is None:
            raise RuntimeError("Database used before configure()")
        session = self._sessions()
        try:
            with translate_db_errors():
                session.begin()
                yield session
        finally:
            # Rolls back whatever was not committed. On a dead connection that fails too; the
            # pool discards the connection either way, and the answer is already decided.
            with suppress(sa_exc.DBAPIError):
                session.close()

    @contextmanager
    def single_statement(self) -> Iterator[Connection]:
        """An autocommit connection, for hot reads whose whole transaction is one statement.

        A statement outside an explicit transaction is a transaction of its own: atomic, and
        committed when it completes. Without BEGIN and COMMIT around it, the driver spends one
        round trip on it instead of three.
        """
        with translate_db_errors(), self._autocommit_connection() as connection:
            yield connection

    @contextmanager
    def single_write(self) -> Iterator[Connection]:
        """``single_statement`` for a statement that writes: its commit is its completion, so
        a connection lost while it runs leaves the outcome unknown (see ``transaction``)."""
        # The checkout (refused, pool timeout) comes before the statement: not a lost commit.
        with (
            translate_db_errors(),
            self._autocommit_connection() as connection,
            translate_lost_commit(),
        ):
            yield connection

    @contextmanager
    def _autocommit_connection(self) -> Iterator[Connection]:
        if self.engine is None:
            raise RuntimeError("Database used before configure()")
        connection = self.engine.connect()
        # psycopg2's autocommit attribute is a client-side switch. SQLAlchemy's
        # isolation_level="AUTOCOMMIT" would send a SET to the server going in and coming back,
        # and those two round trips are the ones this is meant to save.
        driver_connection = connection.connection.dbapi_connection
        driver_connection.autocommit = True
        try:
            yield connection
        finally:
            # Back to transactions before the connection returns to the pool; a dead one is
            # discarded by the pool, whatever closing it says.
            with suppress(sa_exc.DBAPIError, psycopg2.Error):
                if not driver_connection.closed:
                    driver_connection.autocommit = False
                connection.close()


def bound_every_transaction(engine: Engine, timeout_ms: int) -> None:
    """Bound every statement, and every pause inside a transaction, by ``timeout_ms``.

    A holder frozen mid-transaction (SIGSTOP, a VM pause) then loses its row locks with its
    transaction instead of blocking the event's bookings long after its lock lease ran out.
    The settings are ``SET LOCAL`` at the start of each transaction, sent in the same round
    trip as its first statement: they end with the transaction, so they hold through PgBouncer
    in transaction pooling (which refuses startup options and would hand a session SET on to
    other clients) and cost no round trip of their own.
    """
    prefix = (
        f"SET LOCAL statement_timeout = {int(timeout_ms)}; "
        f"SET LOCAL idle_in_transaction_session_timeout = {int(timeout_ms)}; "
    )

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _bounded(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> tuple[str, Any]:
        # Idle: this statement starts a transaction (an explicit one, or in autocommit its
        # own implicit one, which the SET LOCALs of the same query string belong to).
        if cursor.connection.info.transaction_status == TRANSACTION_STATUS_IDLE:
            statement = prefix + statement
        return statement, parameters


def ping_connections_idle_for(engine: Engine, seconds: float) -> None:
    """Ping a pooled connection at checkout only if it sat idle for ``seconds`` or more.

    pool_pre_ping pings on every checkout: one more round trip for every hot-path statement,
    whose connection was back in use milliseconds ago. A connection that sat idle (a quiet
    spell, a database restart) is pinged first and replaced if dead, without the request
    noticing. One reused at once is not: if it died in between, its request fails with 503
    db_unavailable, nothing written, and the pool replaces every connection as old as it.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)  # None: connected just now
        if idle_since is None or time.monotonic() - idle_since < seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool discards this connection and checks out (or opens) another.
            raise sa_exc.DisconnectionError(str(error)) from error


class ObservedQueuePool(QueuePool):
    """SQLAlchemy's pool, reporting this process's connections in use and idle, and the
    threads that wait because every connection is busy (booking_db_pool_connections)."""

    def _do_get(self) -> Any:
        if self.checkedin() or self.overflow() < self._max_overflow:
            connection = super()._do_get()  # an idle connection, or room to open one
        else:
            metrics.db_pool_connections.labels(state="waiting").inc()
            try:
                connection = super()._do_get()
            finally:
                metrics.db_pool_connections.labels(state="waiting").dec()
        self.report()
        return connection

    def _do_return_conn(self, record: Any) -> None:
        super()._do_return_conn(record)
        self.report()

    def report(self) -> None:
        metrics.db_pool_connections.labels(state="in_use").set(self.checkedout())
        metrics.db_pool_connections.labels(state="idle").set(self.checkedin())


class StoredFunction:
    """A hot statement kept in PostgreSQL as a PL/pgSQL function and called in one round trip.

    PL/pgSQL caches the plans of its statements per server session, so the statement is
    planned once per PostgreSQL backend, whichever client connection calls it: unlike a
    ``PREPARE``, which belongs to one server session and which PgBouncer in transaction
    pooling may not hand back to the client that made it. Written with SQLAlchemy's ``:name``
    placeholders. The function's name carries a digest of its definition: a changed statement
    is a new function, and instances still running the previous code keep calling theirs
    during a rolling deploy. Each registers itself in ``defined``, from which ``flask init-db``
    and ``alembic upgrade head`` create them all (``migrate.stored_functions``).
    """

    defined: ClassVar[list[StoredFunction]] = []

    def __init__(
        self,
        name: str,
        sql: str | None = None,
        *,
        body: str | None = None,
        returns: str,
        **parameter_types: str,
    ) -> None:
        """One query (``sql``, with ``:name`` placeholders), or a whole PL/pgSQL ``body``
        (DECLARE ... BEGIN ... END) that names its parameters ``p_<name>``."""
        if (sql is None) == (body is None):
            raise ValueError("give either sql or body")
        if sql is not None:
            positional = sql.strip()
            for position, parameter in enumerate(parameter_types, start=1):
                positional = re.sub(rf":{parameter}\b", f"${position}", positional)
            body = f"BEGIN\nRETURN QUERY {positional};\nEND"
        signature = ", ".join(f"p_{name_} {type_}" for name_, type_ in parameter_types.items())
        # use_column: the names of the result columns are variables in PL/pgSQL; where a
        # statement names a table column the same, it means the column.
        definition = (
            f"({signature}) RETURNS {returns} LANGUAGE plpgsql AS $body$\n"
            f"#variable_conflict use_column\n{body}\n$body$"
        )
        digest = hashlib.sha256(definition.encode()).hexdigest()[:10]
        self.name = f"{name}_{digest}"
        self.create_sql = f"CREATE OR REPLACE FUNCTION {self.name}{definition}"
        arguments = ", ".join(f":{parameter}" for parameter in parameter_types)
        self._call = text(f"SELECT * FROM {self.name}({arguments})")
        StoredFunction.defined.append(self)

    def execute(self, connection: Connection, parameters: dict[str, Any]) -> CursorResult[Any]:
        try:
            return connection.execute(self._call, parameters)
        except sa_exc.ProgrammingError as error:
            if getattr(error.orig, "pgcode", None) != errorcodes.UNDEFINED_FUNCTION:
                raise
            # The schema is older than the code: a deploy that skipped `flask init-db`.
            log.error("stored function %s is missing: run `flask init-db`", self.name)
            metrics.db_unavailable_total.labels(cause="schema_outdated").inc()
            raise DbUnavailable(
                "The database schema is out of date; nothing was written."
            ) from error


# Why a request found the database unavailable, for booking_db_unavailable_total.
_CONNECT_REFUSED = "connect_refused"  # no new connection: server down or out of connections
_POOL_TIMEOUT = "pool_timeout"  # every pooled connection busy for DB_POOL_TIMEOUT_SECONDS
_SERVER_GONE = "server_gone"  # a connection in use died (restart, terminated backend)
_STATEMENT_TIMEOUT = "statement_timeout"  # DB_STATEMENT_TIMEOUT_MS ran out
_TIMEOUT_CODES = (errorcodes.QUERY_CANCELED, errorcodes.IDLE_IN_TRANSACTION_SESSION_TIMEOUT)


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Turn 'the database is not there' into a 503 instead of a 500, counted by cause."""
    try:
        yield
    except sa_exc.TimeoutError as error:  # the pool's own wait, before any database call
        raise _unavailable(_POOL_TIMEOUT, "No database connection was free") from error
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        if getattr(error.orig, "pgcode", None) in _TIMEOUT_CODES:
            raise _unavailable(_STATEMENT_TIMEOUT, "The database did not answer in time") from error
        if error.statement is None and not error.connection_invalidated:
            raise _unavailable(_CONNECT_REFUSED, "The database refused a connection") from error
        raise _unavailable(_SERVER_GONE, "The database did not answer") from error
    except sa_exc.DBAPIError as error:
        if error.connection_invalidated:
            raise _unavailable(_SERVER_GONE, "The database connection was lost") from error
        raise


@contextmanager
def translate_lost_commit() -> Iterator[None]:
    """A connection lost while committing writes: the server may have committed before its
    answer was lost, so say the outcome is unknown (503 outcome_unknown), not "nothing was
    written". A statement cancelled by its timeout was rolled back: that one is not unknown."""
    try:
        yield
    except sa_exc.OperationalError as error:
        if getattr(error.orig, "pgcode", None) in _TIMEOUT_CODES:
            raise
        metrics.db_unavailable_total.labels(cause=_SERVER_GONE).inc()
        raise OutcomeUnknown(
            "The database connection was lost while the change was being committed; it may "
            "or may not have been made. Read it back, or retry with the same Idempotency-Key."
        ) from error


def _unavailable(cause: str, what: str) -> DbUnavailable:
    metrics.db_unavailable_total.labels(cause=cause).inc()
    return DbUnavailable(f"{what}; nothing was written.")


db = Database()
