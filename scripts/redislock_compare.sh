#!/usr/bin/env bash
# python-redis-lock at run time against the service's own lock calls (issue 20, item 6):
# Redis round trips per uncontended booking both ways, then the benchmark's S1 and S3
# alternating the two ways (service, library, service, library, ...), then the ratios.
#   scripts/redislock_compare.sh [PAIRS]     (default 2 pairs, a few minutes per run)
# BENCH_DATABASE_URL and BENCH_REDIS_URL choose where, as for scripts/bench.sh; results go
# to bench/results/redislock/<pair>-<way>/. Nothing in the product changes: the library
# way is a gunicorn worker class the benchmark's instances load (bench/redislock.py).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

PAIRS="${1:-2}"
OUT="bench/results/redislock"
"$VENV/bin/python" -m bench redislock round-trips --bookings 200
for pair in $(seq "$PAIRS"); do
    for way in service library; do
        if [ "$way" = library ]; then
            export GUNICORN_CMD_ARGS="--worker-class bench.redislock_worker.Worker"
        else
            unset GUNICORN_CMD_ARGS
        fi
        echo "==> pair $pair: $way"
        # A run whose baseline failed (say, PostgreSQL out of connections) still has its S1
        # and S3: carry on, the summary shows what is missing.
        "$VENV/bin/python" -m bench run --scenarios S1,S3 \
            --out "$OUT/$pair-$way" || echo "==> pair $pair: $way: the run exited $?"
    done
done
unset GUNICORN_CMD_ARGS
"$VENV/bin/python" -m bench redislock summary "$OUT"
