.PHONY: run test lint bench

run:  ## set up, migrate, seed demo data and serve on :8000
	./scripts/run.sh

test:  ## set up and run the whole test suite
	./scripts/test.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check booking_service tests
