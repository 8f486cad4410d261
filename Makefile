.PHONY: run test lint bench bench-smoke

run:  ## set up, migrate, seed demo data and serve on :8000
	./scripts/run.sh

test:  ## set up and run the whole test suite
	./scripts/test.sh

bench:  ## full benchmark (~5 min): table, bench/results/<time>.json and .png
	./scripts/bench.sh run

bench-smoke:  ## the same harness with tiny sizes (~1 min): works, invariants hold
	./scripts/bench.sh run --smoke

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check booking_service tests harness bench
