"""Create the database if it is missing and bring its schema up to date.

Alembic migrations for the tables, then the stored functions of the hot path (CREATE OR
REPLACE; each name carries a digest of its definition, see database.StoredFunction).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from booking_service.config import normalize_database_url
from booking_service.services.ledger_sql import APPLY_INTENTS
from booking_service.services.sessions import USER_BY_LIVE_TOKEN

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Every StoredFunction the services define (tests/api/test_stored_functions.py checks).
STORED_FUNCTIONS = (APPLY_INTENTS, USER_BY_LIVE_TOKEN)


class MigrationRefused(RuntimeError):
    """A migration found data it cannot carry over; the message says what to change first."""


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; return True if created."""
    target = make_url(normalize_database_url(url))
    server = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            )
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{target.database}"'))
            return not exists
    finally:
        server.dispose()


def alembic_config(url: str) -> AlembicConfig:
    url = normalize_database_url(url)
    config = AlembicConfig(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Apply every pending migration, then create the stored functions this code calls."""
    command.upgrade(alembic_config(url), "head")
    engine = create_engine(url)
    try:
        # Straight to the driver, with no parameters: PL/pgSQL's %ROWTYPE must not be read as
        # a placeholder.
        with (
            engine.begin() as connection,
            connection.connection.driver_connection.cursor() as cursor,
        ):  # type: ignore[union-attr]
            for function in STORED_FUNCTIONS:
                cursor.execute(function.create_sql)
    finally:
        engine.dispose()
