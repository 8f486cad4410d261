#!/usr/bin/env bash
# Lint: ruff's checks and formatting over all the code, and the import contracts (setup.cfg,
# [importlinter]). No network, no database.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

echo "==> ruff check"
"$VENV/bin/ruff" check .
echo "==> ruff format --check"
"$VENV/bin/ruff" format --check .
echo "==> lint-imports"
# The package is not installed: it is imported from this checkout.
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/lint-imports" setup.cfg --no-cache --no-logo
