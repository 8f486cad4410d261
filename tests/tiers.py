"""The ``slow`` marker, enforced: a test not marked ``slow`` cannot start a server or a browser.

``make test-fast`` runs ``-m "not slow"``; it stays fast only if every test that starts
gunicorn, Redis, PgBouncer, Prometheus or Chromium (directly or through the harness package) is
marked. Rather than trust that, every ``subprocess.Popen`` made while a test runs (its
fixtures included) is checked: starting a server from a test without the marker fails that
test with the reason, before anything starts. Short one-shot commands (lint-imports,
``kubectl kustomize``, ``flask init-db``) are not servers and stay allowed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Generator, Sequence
from typing import Any

import pytest

# Long-running programs: servers, the browser, and the scripts that serve (scripts/run.sh,
# scripts/bench.sh).
SERVER_PROGRAMS = frozenset(
    {
        "gunicorn",
        "redis-server",
        "redis-sentinel",
        "pgbouncer",
        "prometheus",
        "postgres",
        "chromium",
        "chromium-browser",
        "google-chrome",
        "run.sh",
        "bench.sh",
    }
)
# ``python -m`` modules that serve, or start servers of their own (the benchmark: every
# subcommand of ``python -m bench`` starts gunicorn instances).
SERVER_MODULES = frozenset({"gunicorn", "bench"})
SHELLS = frozenset({"sh", "bash", "dash"})


def server_started_by(args: Any, *, shell: bool = False) -> str | None:
    """The server or browser that ``Popen(args)`` would start, or None for anything else."""
    if isinstance(args, str | bytes | os.PathLike):
        text = os.fsdecode(args)
        return _script_server(text) if shell else _command_server([text])
    return _command_server([os.fsdecode(arg) for arg in args])


def _command_server(argv: Sequence[str]) -> str | None:
    if not argv:
        return None
    program = os.path.basename(argv[0])
    if program in SERVER_PROGRAMS:
        return program
    if program.startswith("python"):
        return _python_server(argv[1:])
    if program in SHELLS and "-c" in argv[1:-1]:
        return _script_server(argv[argv.index("-c") + 1])
    return None


def _script_server(script: str) -> str | None:
    """A shell script starts a server if any of its commands does (every word is tried)."""
    try:
        words = shlex.split(script, comments=True)
    except ValueError:  # unbalanced quotes: the shell would refuse it too
        return None
    for at in range(len(words)):
        server = _command_server(words[at:])
        if server is not None:
            return server
    return None


def _python_server(options: Sequence[str]) -> str | None:
    if "-m" not in options:
        return None
    module_at = options.index("-m") + 1
    if module_at >= len(options):
        return None
    module, rest = options[module_at], options[module_at + 1 :]
    if module in SERVER_MODULES:
        return f"python -m {module}"
    if module == "flask" and "run" in rest:
        return "flask run"
    return None


class ServerGuard:
    """Pytest plugin: fails a test not marked ``slow`` that starts a server (see the module)."""

    def __init__(self) -> None:
        self.item: pytest.Item | None = None
        self._original_init: Any = None

    def install(self) -> None:
        original = subprocess.Popen.__init__
        guard = self

        def guarded_init(popen: subprocess.Popen[Any], args: Any, *a: Any, **kw: Any) -> None:
            guard.check(args, shell=bool(kw.get("shell", False)))
            original(popen, args, *a, **kw)

        self._original_init = original
        subprocess.Popen.__init__ = guarded_init  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._original_init is not None:
            subprocess.Popen.__init__ = self._original_init  # type: ignore[method-assign]
            self._original_init = None

    def check(self, args: Any, *, shell: bool = False) -> None:
        item = self.item
        if item is None or item.get_closest_marker("slow") is not None:
            return
        server = server_started_by(args, shell=shell)
        if server is not None:
            pytest.fail(
                f"{item.nodeid} starts {server} but is not marked slow: add "
                "`pytestmark = pytest.mark.slow` (or @pytest.mark.slow) so that "
                '`pytest -m "not slow"` (make test-fast) leaves it out',
                pytrace=False,
            )

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        self.item = item
        try:
            return (yield)
        finally:
            self.item = None
