"""The test tiers hold: a test not marked ``slow`` cannot start a server (tests/tiers.py).

These tests are not marked slow themselves, so the guard is live around them: a command that
would start a server must be refused before it runs. Each command only prints a version, so
a broken guard makes the test fail (nothing is raised) without leaving a server behind.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.tiers import server_started_by

REFUSED = [
    pytest.param([sys.executable, "-m", "gunicorn", "--version"], id="python -m gunicorn"),
    pytest.param(["redis-server", "--version"], id="redis-server"),
    pytest.param(["/usr/bin/redis-server", "--version"], id="redis-server by path"),
    pytest.param(["chromium", "--version"], id="chromium"),
    pytest.param(["prometheus", "--version"], id="prometheus"),
    pytest.param(["/usr/sbin/pgbouncer", "--version"], id="pgbouncer"),
]


@pytest.mark.parametrize("argv", REFUSED)
def test_a_test_not_marked_slow_cannot_start_a_server(argv: list[str]) -> None:
    with pytest.raises(pytest.fail.Exception, match="is not marked slow"):
        subprocess.run(argv, capture_output=True, timeout=30)


def test_a_shell_command_is_read_as_the_shell_would() -> None:
    with pytest.raises(pytest.fail.Exception, match="starts redis-server"):
        subprocess.run("redis-server --version", shell=True, capture_output=True, timeout=30)


def test_a_one_shot_command_may_run_in_any_tier() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "print('ran')"], capture_output=True, text=True, timeout=30
    )
    assert result.stdout == "ran\n"


@pytest.mark.slow
def test_a_test_marked_slow_may_start_a_server() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "gunicorn" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "shell", "server"),
    [
        (["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], False, "gunicorn"),
        (["redis-server", "--sentinel"], False, "redis-server"),
        (["python3", "-m", "bench", "run", "--smoke"], False, "python -m bench"),
        (["python", "-m", "flask", "--app", "wsgi", "run"], False, "flask run"),
        ("chromium --headless --dump-dom x", True, "chromium"),
        ("cd /srv && exec redis-server --port 0", True, "redis-server"),
        (["bash", "-c", "source scripts/common.sh && ./scripts/run.sh"], False, "run.sh"),
        (["bash", "-c", "source scripts/common.sh && check_services"], False, None),
        (["python", "-m", "flask", "--app", "wsgi", "init-db"], False, None),
        (["kubectl", "kustomize", "deploy/k8s/base"], False, None),
        (["lint-imports", "setup.cfg"], False, None),
        (["python", "-m", "tests.support.combining_worker", "{}"], False, None),
        (["python", "-m"], False, None),
        ([], False, None),
    ],
)
def test_what_counts_as_a_server(args: list[str] | str, shell: bool, server: str | None) -> None:
    assert server_started_by(args, shell=shell) == server
