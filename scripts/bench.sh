#!/usr/bin/env bash
# Benchmark command: install what the harness needs (virtualenv, bench/requirements.txt, wrk),
# check PostgreSQL and Redis, then run bench/run.py. Extra arguments go to it, e.g.
#   scripts/bench.sh --smoke            (about a minute; checks the harness and the invariants)
#   scripts/bench.sh --scenarios S1,S3  (a subset)
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

ensure_venv "$ROOT/requirements-dev.txt"
ensure_bench_tools
DATABASE_URL="${BENCH_DATABASE_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/booking_bench}" \
REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/7}" check_services
exec "$VENV/bin/python" -m bench.run "$@"
