"""A scratch database for migration tests: its own, next to the suite's, dropped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from booking_service import migrate
from tests.conftest import TEST_DATABASE_URL

SCRATCH_URL = make_url(TEST_DATABASE_URL).set(
    database=f"{make_url(TEST_DATABASE_URL).database}_migrations"
)
URL = SCRATCH_URL.render_as_string(hide_password=False)


@pytest.fixture
def scratch() -> Iterator[Engine]:
    """An empty scratch database (its own, not the suite's), dropped afterwards."""
    migrate.ensure_database(URL)
    engine = create_engine(URL)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    yield engine
    engine.dispose()
    server = create_engine(SCRATCH_URL.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{SCRATCH_URL.database}" WITH (FORCE)'))
    server.dispose()


def migrate_to(revision: str) -> None:
    command.upgrade(migrate.alembic_config(URL), revision)


def downgrade_to(revision: str) -> None:
    command.downgrade(migrate.alembic_config(URL), revision)
