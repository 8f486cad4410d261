"""Alembic environment: URL from the caller or DATABASE_URL, metadata from the models."""

from alembic import context
from sqlalchemy import create_engine

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
    finally:
        engine.dispose()  # also when a migration refuses: no session left behind


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
