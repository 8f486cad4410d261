.PHONY: run test test-fast test-unit lint bench bench-smoke

run:  ## set up, migrate, seed demo data and serve on :8000
	./scripts/run.sh

test:  ## set up, lint and run the whole test suite (slow tests included): what CI runs
	./scripts/test.sh

test-fast:  ## the tests not marked slow; installs nothing, needs PostgreSQL and Redis running
	./scripts/test-fast.sh

test-unit:  ## tests/unit: pure rules, no PostgreSQL, no Redis, no server
	./scripts/test-fast.sh --unit

bench:  ## full benchmark (~5 min): table, bench/results/<time>.json and .png
	./scripts/bench.sh run

bench-smoke:  ## the same harness with tiny sizes (~1 min): works, invariants hold
	./scripts/bench.sh run --smoke

lint:  ## ruff check, ruff format --check and the import contracts (lint-imports)
	./scripts/lint.sh
