"""Alembic environment: URL from the caller or DATABASE_URL, metadata from the models.

A run that leaves the database at the newest revision (``alembic upgrade head``, ``flask
init-db``) also installs the stored functions this code calls, in the same transaction: the
hot path needs them, and without them every request would answer 503 schema_outdated.
"""

from alembic import context
from sqlalchemy import create_engine

from booking_service import migrate
from booking_service.config import from_environment
from booking_service.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or from_environment()["DATABASE_URL"]


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=Base.metadata)
            with context.begin_transaction():
                context.run_migrations()
                if _moved_to_head():
                    migrate.install_stored_functions(connection)
    finally:
        engine.dispose()  # also when a migration refuses: no session left behind


def _moved_to_head() -> bool:
    """Whether this run was an upgrade or stamp that left the database at the newest revision
    (not ``alembic current``, which has no destination, nor a downgrade)."""
    migration = context.get_context()
    if migration.opts.get("destination_rev") is None or migration.script is None:
        return False
    return set(migration.get_current_heads()) == set(migration.script.get_heads())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
