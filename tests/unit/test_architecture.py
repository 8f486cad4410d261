"""The layering of the package (setup.cfg, [importlinter]): imports only ever point down."""

from __future__ import annotations

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
    history.write_text("from booking_service.api import common  # noqa\n" + history.read_text())
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "booking_service.services.history -> booking_service.api.common" in result.stdout
