#!/usr/bin/env bash
# Benchmark command: install what the harness needs (virtualenv, bench/requirements.txt, wrk),
# check PostgreSQL and Redis, then run `python -m bench`. Arguments go to it; without a
# subcommand first, `run` (the scenario table) is meant, e.g.
#   scripts/bench.sh --smoke                 (about a minute; checks the harness and the invariants)
#   scripts/bench.sh run --scenarios S1,S3   (a subset)
#   scripts/bench.sh scaleout --instances 12 --via-pgbouncer
#   scripts/bench.sh metrics-overhead
#   scripts/bench.sh --help                  (the subcommands)
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

ensure_venv "$ROOT/requirements-dev.txt"
ensure_bench_tools
DATABASE_URL="${BENCH_DATABASE_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/booking_bench}" \
REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/7}" check_services
case "${1:-}" in
    -h|--help) ;;
    ""|-*) set -- run "$@" ;;
esac
exec "$VENV/bin/python" -m bench "$@"
