"""Migration 0008 (username skeleton) on a scratch database: fill, keep look-alikes, go back."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from booking_service.usernames import username_key, username_skeleton
from tests.migrations.conftest import downgrade_to, migrate_to


def add_user(engine: Engine, name: str, skeleton: str | None = None) -> None:
    columns = "username, username_key, email, password_hash, role"
    values = ":name, :key, 'x@example.com', '!', 'customer'"
    if skeleton is not None:
        columns, values = f"{columns}, username_skeleton", f"{values}, :skeleton"
    with engine.begin() as connection:
        connection.execute(
            text(f"INSERT INTO users ({columns}) VALUES ({values})"),
            {"name": name, "key": username_key(name), "skeleton": skeleton},
        )


def skeletons(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT username, username_skeleton FROM users")).all()
    return {name: skeleton for name, skeleton in rows}


def test_upgrade_fills_skeletons_keeps_existing_look_alikes_and_downgrade_restores(
    scratch: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    migrate_to("0007")
    # Registered before look-alikes were refused: two groups that look alike, in id order.
    names = ["carol", "Olga", "c\u0430rol", "paypal", "C\u0430R\u043eL", "paypa1"]
    for name in names:
        add_user(scratch, name)

    with caplog.at_level(logging.WARNING):
        migrate_to("0008")

    assert skeletons(scratch) == {
        "carol": "carol",
        "Olga": "olga",
        "c\u0430rol": None,  # the oldest of its group holds the skeleton
        "paypal": "paypal",
        "C\u0430R\u043eL": None,
        "paypa1": None,
    }
    assert {name: username_skeleton(name) for name in ("carol", "Olga", "paypal")} == {
        "carol": "carol",
        "Olga": "olga",
        "paypal": "paypal",
    }
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "2 group(s)" in warning
    assert "'carol' (id 1), 'c\u0430rol' (id 3), 'C\u0430R\u043eL' (id 5)" in warning
    assert "'paypal' (id 4), 'paypa1' (id 6)" in warning
    # A new look-alike of any of them is refused by the index.
    with pytest.raises(IntegrityError, match="uq_users_username_skeleton"):
        add_user(scratch, "carol\u200b", skeleton="carol")

    downgrade_to("0007")

    assert "username_skeleton" not in {c["name"] for c in inspect(scratch).get_columns("users")}
    with scratch.connect() as connection:
        kept = connection.execute(text("SELECT username FROM users ORDER BY id")).scalars().all()
    assert kept == names
