"""Database set-up shared by the tests and the benchmark: a fresh schema at the latest
migration, a superuser connection, and temporary roles with a connection limit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from sqlalchemy import create_engine, text

from booking_service import migrate
from harness.processes import wait_until

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_SUPERUSER = "postgres"


def recreate_schema(url: str) -> None:
    """Create the database if needed and give it an empty schema at the latest migration
    (the real migrations, not create_all: they are under test too)."""
    migrate.ensure_database(url)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    finally:
        engine.dispose()
    migrate.upgrade(url)


def superuser_connection(database: str = "postgres") -> psycopg2.extensions.connection:
    """A direct autocommit connection to the local PostgreSQL as the superuser."""
    connection = psycopg2.connect(
        host=POSTGRES_HOST,
        port=POSTGRES_PORT,
        dbname=database,
        user=POSTGRES_SUPERUSER,
        connect_timeout=3,
    )
    connection.autocommit = True
    return connection


@contextmanager
def limited_role(name: str, connection_limit: int, database: str) -> Iterator[str]:
    """A login role allowed at most ``connection_limit`` sessions, with full rights on the
    ``public`` schema of ``database`` (now and for objects created later); dropped afterwards.

    Stands in for a production database user whose sessions are scarce: app instances going
    through a pooler must stay within the limit however many of them there are.
    """
    role = sql.Identifier(name)
    _drop_role(name, database)  # a leftover of an interrupted run
    server = superuser_connection()
    try:
        with server.cursor() as cursor:
            cursor.execute(
                sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {}").format(
                    role, sql.Literal(connection_limit)
                )
            )
    finally:
        server.close()
    try:
        connection = superuser_connection(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(sql.Identifier(database), role)
                )
                for statement in (
                    "GRANT ALL ON SCHEMA public TO {}",
                    "GRANT ALL ON ALL TABLES IN SCHEMA public TO {}",
                    "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}",
                    "GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO {}",
                    # Tables the superuser creates later (migrations, a recreated schema).
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {}",
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {}",
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO {}",
                ):
                    cursor.execute(sql.SQL(statement).format(role))
        finally:
            connection.close()
        yield name
    finally:
        _drop_role(name, database)


def _drop_role(name: str, database: str) -> None:
    """Drop the role if it exists: end its sessions, hand over what it owns, drop its grants."""
    role = sql.Identifier(name)
    server = superuser_connection()
    try:
        with server.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            if cursor.fetchone() is None:
                return
            # No new sessions while its old ones are ended (a pooler may reconnect).
            cursor.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            wait_until(
                lambda: _sessions_of(cursor, name) == 0, timeout=10, what=f"{name}'s sessions"
            )
            # Privileges and default privileges live per database: clean up where they were
            # granted; REASSIGN/DROP OWNED also revoke its rights on shared objects.
            connection = superuser_connection(database)
            try:
                with connection.cursor() as in_database:
                    in_database.execute(
                        sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                            role, sql.Identifier(POSTGRES_SUPERUSER)
                        )
                    )
                    in_database.execute(sql.SQL("DROP OWNED BY {}").format(role))
            finally:
                connection.close()
            cursor.execute(sql.SQL("DROP ROLE {}").format(role))
    finally:
        server.close()


def _sessions_of(cursor: psycopg2.extensions.cursor, name: str) -> int:
    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (name,))
    row = cursor.fetchone()
    return int(row[0]) if row else 0
