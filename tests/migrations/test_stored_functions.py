"""The stored functions of the hot path: installed by any migration run that reaches head,
``alembic upgrade head`` included, from the registry every StoredFunction joins."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import Engine, text

from booking_service import migrate
from harness.processes import PROJECT_ROOT
from tests.migrations.conftest import URL, downgrade_to, migrate_to


def installed(engine: Engine) -> set[str]:
    names = [function.name for function in migrate.stored_functions()]
    with engine.connect() as connection:
        found = connection.scalars(
            text("SELECT proname FROM pg_proc WHERE proname = ANY(:names)"), {"names": names}
        )
        return set(found)


def test_plain_alembic_upgrade_head_installs_every_stored_function(scratch: Engine) -> None:
    environment = {**os.environ, "DATABASE_URL": URL}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    # Each name carries the digest of its definition: present means this code's definition.
    assert installed(scratch) == {function.name for function in migrate.stored_functions()}
    # And the function the hot path calls first answers (no such token: no user).
    session = next(f for f in migrate.stored_functions() if f.name.startswith("user_by_live"))
    with scratch.connect() as connection:
        assert session.execute(connection, {"token_hash": "0" * 64}).all() == []


def test_a_run_that_stops_short_of_head_installs_none(scratch: Engine) -> None:
    migrate_to("0007")
    assert installed(scratch) == set()

    migrate_to("head")
    assert len(installed(scratch)) == len(migrate.stored_functions())

    downgrade_to("0007")  # a downgrade leaves what it finds
    assert len(installed(scratch)) == len(migrate.stored_functions())


REGISTRY_CHECK = """
import importlib, pkgutil
import booking_service
from booking_service import migrate
from booking_service.database import StoredFunction
read = {f.name for f in migrate.stored_functions()}
for module in pkgutil.walk_packages(booking_service.__path__, "booking_service."):
    importlib.import_module(module.name)
everywhere = {f.name for f in StoredFunction.defined}
print(len(read), sorted(everywhere - read))
"""


def test_migrate_reads_every_stored_function_the_package_defines() -> None:
    # A fresh interpreter: what migrate finds on its own, against what importing every module
    # of the package registers.
    result = subprocess.run(
        [sys.executable, "-c", REGISTRY_CHECK],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    count, missed = result.stdout.split(" ", 1)
    assert int(count) >= 2
    assert missed.strip() == "[]"
