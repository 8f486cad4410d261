# Shared by scripts/run.sh and scripts/test.sh: virtualenv set-up and dependency checks.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"

# Create the virtualenv and install a requirements file, skipping pip when nothing changed.
ensure_venv() {
    local requirements="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating virtualenv in $VENV"
        "$PYTHON_BIN" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip
    fi
    local stamp="$VENV/.installed-$(basename "$requirements")"
    if [ ! -f "$stamp" ] || [ "$requirements" -nt "$stamp" ] || [ "$ROOT/requirements.txt" -nt "$stamp" ]; then
        echo "==> installing $(basename "$requirements")"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
        touch "$stamp"
    fi
}

# Fail with the exact reason and the command that fixes it when PostgreSQL or Redis is down.
check_services() {
    "$VENV/bin/python" - <<'PY'
import os, sys
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
import redis

from booking_service.config import ConfigError, normalize_database_url

try:
    url = make_url(normalize_database_url(os.environ.get("DATABASE_URL",
        "postgresql+psycopg2://postgres@127.0.0.1:5432/booking_service")))
except ConfigError as error:
    sys.exit(f"booking-service: configuration error: {error}")
redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
problems = []
try:
    engine = create_engine(url.set(database="postgres"), connect_args={"connect_timeout": 3})
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
except Exception as error:  # report any failure, with its first line
    problems.append(
        f"PostgreSQL is not reachable at {url.host}:{url.port or 5432} "
        f"({str(error).splitlines()[0]}).\n"
        "  Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    )
try:
    redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
except Exception as error:
    problems.append(
        f"Redis is not reachable at {redis_url} ({error}).\n"
        '  Start it with: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 '
        '--save "" --appendonly no'
    )
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
PY
}

# The benchmark's tools: wrk (Debian), pgbench (comes with PostgreSQL) and the pip packages in
# bench/requirements.txt (own stamp: ensure_venv's is named after the file's basename).
ensure_bench_tools() {
    if ! command -v wrk >/dev/null; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "missing Debian package: wrk (install it: apt-get install wrk)" >&2
            exit 1
        fi
        echo "==> installing Debian package: wrk"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    fi
    if ! command -v pgbench >/dev/null; then
        echo "pgbench is missing: it ships with PostgreSQL (apt-get install postgresql-client)" >&2
        exit 1
    fi
    local requirements="$ROOT/bench/requirements.txt"
    local stamp="$VENV/.installed-bench-requirements.txt"
    if [ ! -f "$stamp" ] || [ "$requirements" -nt "$stamp" ]; then
        echo "==> installing bench/requirements.txt"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
        touch "$stamp"
    fi
}
