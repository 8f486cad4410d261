"""The layering of the package (setup.cfg, [importlinter]): imports only ever point down."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Check the contracts in ``root``/setup.cfg against the package found in ``root``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "setup.cfg", "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_layers() -> None:
    result = lint_imports(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    # The contract must bite: the same check on a copy with one service importing a view.
    shutil.copytree(PROJECT_ROOT / "booking_service", tmp_path / "booking_service")
    shutil.copy(PROJECT_ROOT / "setup.cfg", tmp_path / "setup.cfg")
    history = tmp_path / "booking_service" / "services" / "history.py"
    history.write_text("from booking_service.api import access  # noqa\n" + history.read_text())
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "booking_service.services.history -> booking_service.api.access" in result.stdout


def _lint_with_change(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """Run the contracts on a copy of the package with ``line`` prepended to ``module``."""
    shutil.copytree(PROJECT_ROOT / "booking_service", tmp_path / "booking_service")
    shutil.copy(PROJECT_ROOT / "setup.cfg", tmp_path / "setup.cfg")
    path = tmp_path / "booking_service" / module
    path.write_text(line + "\n" + path.read_text())
    return lint_imports(tmp_path)


def test_a_view_importing_another_view_breaks_the_contract(tmp_path: Path) -> None:
    result = _lint_with_change(
        tmp_path, "api/holds.py", "from booking_service.api import bookings  # noqa"
    )
    assert result.returncode != 0
    assert "booking_service.api.holds -> booking_service.api.bookings" in result.stdout


def test_a_service_reaching_flask_through_a_helper_breaks_the_contract(tmp_path: Path) -> None:
    # Indirect: the services import the errors; Flask there reaches them through it.
    result = _lint_with_change(tmp_path, "errors.py", "import flask  # noqa")
    assert result.returncode != 0
    assert "Nothing below the HTTP layer imports Flask" in result.stdout
    assert "BROKEN" in result.stdout


def test_a_service_importing_the_ledger_from_below_breaks_the_contract(tmp_path: Path) -> None:
    result = _lint_with_change(
        tmp_path, "services/prechecks.py", "from booking_service.services import ledger  # noqa"
    )
    assert result.returncode != 0
    assert "booking_service.services.prechecks -> booking_service.services.ledger" in result.stdout


# Tooling stays beside the product: the harness imports neither the tests nor the bench, the
# bench does not import the tests, and the product imports none of them.
FORBIDDEN_IMPORTS = {
    "harness": ("tests", "bench"),
    "bench": ("tests",),
    "booking_service": ("tests", "bench", "harness"),
}


def forbidden_imports(root: Path) -> list[str]:
    """``file: module`` for every import under ``root`` of a package it must not import."""
    found = []
    for package, forbidden in FORBIDDEN_IMPORTS.items():
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                found += [
                    f"{path.relative_to(root)}: {module}"
                    for module in modules
                    if module.split(".")[0] in forbidden
                ]
    return found


def test_tooling_and_product_keep_apart() -> None:
    assert forbidden_imports(PROJECT_ROOT) == []


def test_a_bench_importing_a_test_module_is_found(tmp_path: Path) -> None:
    for package in FORBIDDEN_IMPORTS:
        skip = shutil.ignore_patterns("__pycache__", "results", "static")
        shutil.copytree(PROJECT_ROOT / package, tmp_path / package, ignore=skip)
    cluster = tmp_path / "bench" / "cluster.py"
    cluster.write_text("from tests.support import instances  # noqa\n" + cluster.read_text())
    assert forbidden_imports(tmp_path) == ["bench/cluster.py: tests.support"]
