#!/usr/bin/env bash
# Test command: install what the suite needs (virtualenv, pip packages, Debian packages for the
# browser, Prometheus, PgBouncer, Redis Cluster and Kubernetes manifest tests), check
# PostgreSQL and Redis, lint (scripts/lint.sh), then run the whole suite, slow tests included.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/api -x
# The fast loop, which installs nothing and leaves the slow tests out: scripts/test-fast.sh.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

# Debian packages the suite drives as real processes.
needed=()
command -v redis-server >/dev/null || needed+=(redis-server)
command -v redis-cli >/dev/null || needed+=(redis-tools)
# Debian puts pgbouncer in /usr/sbin, which a non-root PATH may lack.
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || needed+=(pgbouncer)
command -v chromium >/dev/null || needed+=(chromium)
command -v promtool >/dev/null || needed+=(prometheus)
# tests/deploy renders deploy/k8s with `kubectl kustomize` (no cluster needed).
command -v kubectl >/dev/null || needed+=(kubernetes-client)
if [ ${#needed[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages: ${needed[*]} (install them: apt-get install ${needed[*]})" >&2
        exit 1
    fi
    echo "==> installing Debian packages: ${needed[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" >/dev/null
    if [[ " ${needed[*]} " == *" pgbouncer "* ]]; then
        # The package may start a system pgbouncer on port 6432; the tests start their own
        # on free ports and never use it.
        systemctl disable --now pgbouncer >/dev/null 2>&1 \
            || service pgbouncer stop >/dev/null 2>&1 || true
    fi
fi

ensure_venv "$ROOT/requirements-dev.txt"
# tests/bench runs the benchmark harness in smoke mode: wrk, pgbench, matplotlib.
ensure_bench_tools
DATABASE_URL="${TEST_DATABASE_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/booking_service_test}" \
REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}" check_services

"$ROOT/scripts/lint.sh"
echo "==> pytest"
exec "$VENV/bin/python" -m pytest "$@"
