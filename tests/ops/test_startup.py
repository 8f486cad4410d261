"""Starting the service: the usual DATABASE_URL forms work, a bad setting is one clear line.

Real processes, as an operator starts them: the ``flask`` command, gunicorn, the scripts' check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from harness.processes import PROJECT_ROOT, free_port
from tests.conftest import TEST_DATABASE_URL
from tests.support.instances import instance_env

pytestmark = pytest.mark.slow

FLASK = [sys.executable, "-m", "flask", "--app", "wsgi"]
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
SCRATCH = make_url(TEST_DATABASE_URL).set(
    database=f"{make_url(TEST_DATABASE_URL).database}_url_forms"
)


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **instance_env(), **env}
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=90
    )


@pytest.fixture
def scratch_database() -> Iterator[None]:
    yield
    server = create_engine(SCRATCH.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{SCRATCH.database}" WITH (FORCE)'))
    server.dispose()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_the_usual_database_url_forms_make_a_working_app(
    scratch_database: None, scheme: str
) -> None:
    url = SCRATCH.set(drivername=scheme).render_as_string(hide_password=False)
    assert url.startswith(f"{scheme}://")

    init = run([*FLASK, "init-db"], DATABASE_URL=url)
    check = run([*FLASK, "check-invariants"], DATABASE_URL=url)

    assert init.returncode == 0, init.stderr
    assert "schema is up to date" in init.stdout
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("ok:")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_the_scripts_service_check_takes_the_usual_forms(app: Flask, scheme: str) -> None:
    url = make_url(TEST_DATABASE_URL).set(drivername=scheme).render_as_string(hide_password=False)
    venv = Path(sys.executable).parent.parent
    result = subprocess.run(
        ["bash", "-c", "source scripts/common.sh && check_services"],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "VENV": str(venv),
            "DATABASE_URL": url,
            "REDIS_URL": app.config["REDIS_URL"],
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


BAD_SETTINGS = [
    ({"LOCK_WAIT_SECONDS": "abc"}, "LOCK_WAIT_SECONDS must be a number, got 'abc'"),
    (
        {"DB_STATEMENT_TIMEOUT_MS": "20000"},
        "DB_STATEMENT_TIMEOUT_MS must be shorter than LOCK_EXPIRE_SECONDS",
    ),
    ({"DATABASE_URL": "mysql://root:hunter2@db/app"}, "DATABASE_URL must be a PostgreSQL URL"),
]


def assert_one_line(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip().splitlines()
    assert len(output) == 1, output
    assert output[0].startswith(f"booking-service: configuration error: {reason}"), output
    assert "hunter2" not in output[0]


@pytest.mark.parametrize(("settings", "reason"), BAD_SETTINGS)
def test_a_bad_setting_stops_the_flask_command_in_one_line(
    settings: dict[str, str], reason: str
) -> None:
    assert_one_line(run([*FLASK, "init-db"], **settings), reason)


@pytest.mark.parametrize(("settings", "reason"), BAD_SETTINGS)
def test_a_bad_setting_stops_gunicorn_in_one_line(settings: dict[str, str], reason: str) -> None:
    result = run(GUNICORN, BIND=f"127.0.0.1:{free_port()}", **settings)

    assert_one_line(result, reason)


def test_a_flask_command_makes_a_missing_metrics_directory(tmp_path: Path) -> None:
    # The variable comes with the service's environment; gunicorn makes the directory at
    # start, a one-off command must not fail for want of it.
    missing = tmp_path / "not" / "yet"

    result = run([*FLASK, "init-db"], PROMETHEUS_MULTIPROC_DIR=str(missing))

    assert result.returncode == 0, result.stderr
    assert "schema is up to date" in result.stdout
    assert "Traceback" not in result.stderr
    assert missing.is_dir()


def test_a_metrics_directory_that_cannot_be_made_stops_a_flask_command_in_one_line(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    result = run([*FLASK, "init-db"], PROMETHEUS_MULTIPROC_DIR=str(blocker / "metrics"))

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"booking-service: configuration error: PROMETHEUS_MULTIPROC_DIR "
        f"'{blocker / 'metrics'}' is not a directory and cannot be made one: Not a directory"
    ]
