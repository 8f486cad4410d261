"""Migration 0003 (username key) on a scratch database: fill, refuse collisions, go back."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from booking_service import migrate
from booking_service.usernames import username_key
from harness.processes import PROJECT_ROOT
from tests.migrations.conftest import URL, downgrade_to, migrate_to


def add_users(engine: Engine, *names: str) -> None:
    with engine.begin() as connection:
        for name in names:
            connection.execute(
                text(
                    "INSERT INTO users (username, email, password_hash, role) "
                    "VALUES (:name, 'x@example.com', '!', 'customer')"
                ),
                {"name": name},
            )


def rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(text(sql)))


def indexes(engine: Engine) -> set[str]:
    return {index["name"] for index in inspect(engine).get_indexes("users")}


def columns(engine: Engine) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns("users")}


def test_upgrade_fills_the_key_with_the_services_function_and_downgrade_restores(
    scratch: Engine,
) -> None:
    migrate_to("0002")
    names = ["Alice", "İzmir", "ΟΔΥΣΣΕΑΣ", " bob ", "Straße"]
    add_users(scratch, *names)

    migrate_to("0003")

    stored = dict(rows(scratch, "SELECT username, username_key FROM users"))
    assert stored == {name: username_key(name) for name in names}
    assert "uq_users_username_key" in indexes(scratch)
    assert "uq_users_username_lower" not in indexes(scratch)
    with pytest.raises(IntegrityError, match="uq_users_username_key"):
        add_users_with_key(scratch, "ALICE", "alice")

    downgrade_to("0002")

    assert "username_key" not in columns(scratch)
    assert "uq_users_username_lower" in indexes(scratch)
    assert sorted(r.username for r in rows(scratch, "SELECT username FROM users")) == sorted(names)


def add_users_with_key(engine: Engine, name: str, key: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (username, username_key, email, password_hash, role) "
                "VALUES (:name, :key, 'x@example.com', '!', 'customer')"
            ),
            {"name": name, "key": key},
        )


def test_upgrade_stops_on_colliding_usernames_and_names_every_group(scratch: Engine) -> None:
    migrate_to("0002")
    # Distinct under the old lower() index, one account each under the new rule.
    add_users(scratch, "alice", "carol", "\uff41\uff4c\uff49\uff43\uff45", "ΟΔΥΣΣΕΑΣ")
    add_users(scratch, "οδυσσεας", "alice ", "dave")

    with pytest.raises(migrate.MigrationRefused) as refused:
        migrate_to("0003")

    message = str(refused.value)
    assert "2 group(s)" in message
    lines = message.splitlines()
    assert "  'alice' (id 1), '\uff41\uff4c\uff49\uff43\uff45' (id 3), 'alice ' (id 6)" in lines
    assert "  'ΟΔΥΣΣΕΑΣ' (id 4), 'οδυσσεας' (id 5)" in lines
    assert "Rename" in message and "run the migration again" in message
    assert "carol" not in message and "dave" not in message
    # Nothing changed: still at 0002, no half-added column.
    assert rows(scratch, "SELECT version_num FROM alembic_version") == [("0002",)]
    assert "username_key" not in columns(scratch)

    with scratch.begin() as connection:
        connection.execute(text("UPDATE users SET username = 'alice-2' WHERE id = 3"))
        connection.execute(text("UPDATE users SET username = 'alice-3' WHERE id = 6"))
        connection.execute(text("UPDATE users SET username = 'odysseas' WHERE id = 5"))
    migrate_to("0003")

    assert rows(scratch, "SELECT version_num FROM alembic_version") == [("0003",)]


def test_init_db_reports_the_collisions_without_a_traceback(scratch: Engine) -> None:
    migrate_to("0002")
    add_users(scratch, "alice", "Alice ")
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "init-db"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": URL},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "'alice' (id 1), 'Alice ' (id 2)" in result.stderr
    assert "Traceback" not in result.stderr
