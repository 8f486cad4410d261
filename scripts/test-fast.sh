#!/usr/bin/env bash
# Fast loop: the tests not marked slow (no gunicorn, Redis, PgBouncer, Prometheus or Chromium
# started), against the PostgreSQL and Redis already running. Installs nothing: the virtualenv
# is used as it is (created with pip only if missing). The whole suite: scripts/test.sh.
#   scripts/test-fast.sh [pytest args]   e.g. scripts/test-fast.sh tests/api -x
#   scripts/test-fast.sh --unit [args]   tests/unit only: needs no PostgreSQL and no Redis
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

[ -x "$VENV/bin/python" ] || ensure_venv "$ROOT/requirements-dev.txt"

if [ "${1:-}" = "--unit" ]; then
    shift
    exec "$VENV/bin/python" -m pytest tests/unit -q "$@"
fi
DATABASE_URL="${TEST_DATABASE_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/booking_service_test}" \
REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}" check_services
exec "$VENV/bin/python" -m pytest -m "not slow" -q "$@"
