"""Process-wide clients (database, Redis, OpenAPI), created once and bound by ``init_app``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from flask import Flask
from flask_smorest import Api
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel
from sqlalchemy import Connection, CursorResult, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from booking_service.config import parse_sentinels
from booking_service.errors import DbUnavailable

openapi = Api()


class Database:
    """Engine and session factory; services open transactions through ``transaction()``."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    def init_app(self, app: Flask) -> None:
        self.configure(app.config)

    def configure(self, config: dict[str, Any]) -> None:
        if self.engine is not None:
            self.engine.dispose()
        self.engine = create_engine(
            config["DATABASE_URL"],
            pool_size=config["DB_POOL_SIZE"],
            max_overflow=config["DB_MAX_OVERFLOW"],
            pool_timeout=config["DB_POOL_TIMEOUT_SECONDS"],
            # Error messages (and so logged tracebacks) carry no bound values: no password or
            # token hashes, no personal data.
            hide_parameters=True,
            connect_args={
                "connect_timeout": 3,
                # Bound statements *and* the pauses between them: a holder frozen mid-
                # transaction (SIGSTOP, VM pause) loses its row locks with its session instead
                # of blocking the event's bookings long after its lock lease ran out.
                "options": (
                    f"-c statement_timeout={config['DB_STATEMENT_TIMEOUT_MS']} "
                    f"-c idle_in_transaction_session_timeout={config['DB_STATEMENT_TIMEOUT_MS']}"
                ),
                "application_name": "booking-service",
            },
        )
        ping_connections_idle_for(self.engine, config["DB_PING_IDLE_SECONDS"])
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error, no partial writes."""
        if self._sessions is None:
            raise RuntimeError("Database used before init_app")
        with translate_db_errors(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def single_statement(self) -> Iterator[Connection]:
        """An autocommit connection, for hot paths whose whole transaction is one statement.

        A statement outside an explicit transaction is a transaction of its own: atomic, and
        committed when it completes. Without BEGIN and COMMIT around it, the driver spends one
        round trip on it instead of three.
        """
        if self.engine is None:
            raise RuntimeError("Database used before init_app")
        with translate_db_errors(), self.engine.connect() as connection:
            # psycopg2's autocommit attribute is a client-side switch. SQLAlchemy's
            # isolation_level="AUTOCOMMIT" would send a SET to the server going in and coming
            # back, and those two round trips are the ones this is meant to save.
            driver_connection = connection.connection.dbapi_connection
            driver_connection.autocommit = True
            try:
                yield connection
            finally:
                # Back to transactions before the connection returns to the pool (a closed one
                # is discarded by the pool anyway).
                if not driver_connection.closed:
                    driver_connection.autocommit = False


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


class PreparedStatement:
    """A hot statement each pooled connection prepares once (PREPARE) and then runs (EXECUTE).

    Written with SQLAlchemy's ``:name`` placeholders. Preparing saves parsing and planning on
    every call, which for a statement run under the event lock is most of its cost in CPU.
    """

    def __init__(self, name: str, sql: str, **parameter_types: str) -> None:
        self.name = name
        self.sql = sql
        positional = sql
        for position, parameter in enumerate(parameter_types, start=1):
            positional = re.sub(rf":{parameter}\b", f"${position}", positional)
        signature = ", ".join(parameter_types.values())
        self._prepare = f"PREPARE {name} ({signature}) AS {positional}"
        self._execute = text(f"EXECUTE {name}({', '.join(f':{p}' for p in parameter_types)})")

    def execute(self, connection: Connection, parameters: dict[str, Any]) -> CursorResult[Any]:
        """Run it on the connection, preparing it first if this connection has not yet."""
        # Connection.info lives as long as the database session, and so does a PREPARE
        # (a rollback does not undo it).
        prepared: set[str] = connection.info.setdefault("prepared_statements", set())
        if self.name not in prepared:
            connection.exec_driver_sql(self._prepare)
            prepared.add(self.name)
        return connection.execute(self._execute, parameters)


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Turn 'the database is not there' into a 503 instead of a 500."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as error:
        raise DbUnavailable("The database did not answer; nothing was written.") from error
    except sa_exc.DBAPIError as error:
        if error.connection_invalidated:
            raise DbUnavailable("The database connection was lost; nothing was written.") from error
        raise


class RedisClient:
    """The shared Redis connection pool used by the event locks and the live lock view."""

    def __init__(self) -> None:
        self.client: redis.Redis | None = None

    def init_app(self, app: Flask) -> None:
        self.configure(app.config)

    def configure(self, config: dict[str, Any]) -> None:
        socket_timeout = config["REDIS_SOCKET_TIMEOUT_SECONDS"]
        options: dict[str, Any] = {
            "socket_connect_timeout": socket_timeout,
            # BLPOP waits up to the lock wait; the socket must outlast it.
            "socket_timeout": config["LOCK_WAIT_SECONDS"] + socket_timeout,
            "retry_on_timeout": False,
            # One immediate retry covers a pooled connection that died with a Redis restart
            # (or a failover: through Sentinel the retry reconnects to the new primary); the
            # client's default exponential backoff would hold requests for seconds.
            "retry": Retry(NoBackoff(), 1),
        }
        if config.get("REDIS_PASSWORD"):
            options["password"] = config["REDIS_PASSWORD"]
        if not config.get("REDIS_SENTINELS"):
            self.client = redis.Redis.from_url(config["REDIS_URL"], **options)
            return
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
        }
        if config.get("REDIS_SENTINEL_PASSWORD"):
            sentinel_kwargs["password"] = config["REDIS_SENTINEL_PASSWORD"]
        sentinel = Sentinel(
            parse_sentinels(config["REDIS_SENTINELS"]), sentinel_kwargs=sentinel_kwargs
        )
        # The pool asks the sentinels for the current primary whenever it opens a connection.
        self.client = sentinel.master_for(
            config["REDIS_SENTINEL_SERVICE"], db=config["REDIS_DB"], **options
        )

    def get(self) -> redis.Redis:
        if self.client is None:
            raise RuntimeError("Redis used before init_app")
        return self.client


db = Database()
redis_client = RedisClient()
