#!/usr/bin/env bash
# Run command: set up the virtualenv, create and migrate the database, seed demo data and
# start gunicorn on 127.0.0.1:8000 (override with BIND; anything reachable from outside needs a
# buffering reverse proxy in front, see README). Settings come from the environment (README).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

ensure_venv "$ROOT/requirements.txt"
check_services
export FLASK_APP=wsgi.py
"$VENV/bin/flask" init-db
"$VENV/bin/flask" seed-demo
echo "==> serving on ${BIND:-127.0.0.1:8000}: API docs at /api/docs on that address"
exec "$VENV/bin/gunicorn" -c gunicorn.conf.py wsgi:app
