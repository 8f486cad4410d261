"""Create the database if it is missing and bring its schema up to date.

Alembic migrations for the tables, then the stored functions of the hot path (CREATE OR
REPLACE; each name carries a digest of its definition, see database.StoredFunction). The
functions are installed by migrations/env.py at the end of any run that reaches the newest
revision, so ``flask init-db`` and a plain ``alembic upgrade head`` leave the same database.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from booking_service import services
from booking_service.config import normalize_database_url
from booking_service.database import StoredFunction

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


def stored_functions() -> tuple[StoredFunction, ...]:
    """Every StoredFunction the services define, as they register themselves.

    Each services module is imported first, so that none is missed for not having been
    imported yet (tests/migrations/test_stored_functions.py checks that no other module
    defines one).
    """
    for module in pkgutil.iter_modules(services.__path__, f"{services.__name__}."):
        importlib.import_module(module.name)
    return tuple(StoredFunction.defined)


def install_stored_functions(connection: Connection) -> None:
    """Create (or replace) every stored function, in the connection's transaction."""
    # Straight to the driver, with no parameters: PL/pgSQL's %ROWTYPE must not be read as a
    # placeholder.
    with connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        for function in stored_functions():
            cursor.execute(function.create_sql)


def upgrade(url: str) -> None:
    """Apply every pending migration and install the stored functions (migrations/env.py)."""
    command.upgrade(alembic_config(url), "head")
