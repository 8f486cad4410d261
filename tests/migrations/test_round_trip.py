"""Every migration goes down and up again on a database with data in it."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from tests.migrations.conftest import downgrade_to, migrate_to


def test_every_migration_downgrades_and_upgrades_again(scratch: Engine) -> None:
    migrate_to("head")
    with scratch.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (username, username_key, email, password_hash, role) "
                "VALUES ('Olga', 'olga', 'o@example.com', '!', 'customer')"
            )
        )
    tables = set(inspect(scratch).get_table_names())

    downgrade_to("0001")
    migrate_to("head")

    assert set(inspect(scratch).get_table_names()) == tables
    with scratch.connect() as connection:
        assert connection.execute(text("SELECT username_key FROM users")).all() == [("olga",)]
