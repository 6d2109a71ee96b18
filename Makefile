# Convenience targets; the scripts are the source of truth (they also work without make).
PYTHON ?= .venv/bin/python
BENCH_ARGS ?=

.PHONY: help test bench bench-quick run lint

help:
	@echo "make test         run every test (./scripts/test.sh; extra pytest args: make test ARGS='-k dedupe')"
	@echo "make bench        ingest benchmark, full run (~3-4 min): see docs/benchmark.md"
	@echo "make bench-quick  ingest benchmark smoke run (seconds; figures not meaningful)"
	@echo "make run          run BillingWatch (./scripts/run.sh)"
	@echo "make lint         ruff check and mypy"

test:
	./scripts/test.sh $(ARGS)

# The benchmark needs the venv the test script installs.
.venv/bin/python:
	./scripts/test.sh --collect-only -q >/dev/null

bench: .venv/bin/python
	$(PYTHON) -m bench.ingest $(BENCH_ARGS)

bench-quick: .venv/bin/python
	$(PYTHON) -m bench.ingest --quick $(BENCH_ARGS)

run:
	./scripts/run.sh

lint: .venv/bin/python
	.venv/bin/ruff check exporter tests bench scripts examples
	.venv/bin/mypy
