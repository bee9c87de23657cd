# Developer entry points: `make demo` and `make test` are the README's two commands.
# Each creates .venv, installs the project and starts the services it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CODE := processors streams seeds tests deploy/local bench

.PHONY: install services services-down tools demo test lint unit chaos

# Every dependency from the lock, each checked against its sha256 hashes; then
# the project itself, editable, with --no-deps: nothing unpinned is resolved
# (docs/operations.md says how to regenerate the lock).
$(BIN)/.installed: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

install: $(BIN)/.installed

# Start (or reuse) a local Kafka broker on 127.0.0.1:9092 and Redis on 127.0.0.1:6379.
services:
	bash deploy/local/services.sh up

# Prometheus, promtool and headless Chromium for the ops tests (apt; instant when present).
tools:
	bash deploy/local/tools.sh

# Stop what `make services` started.
services-down:
	bash deploy/local/services.sh down

# Start a worker, replay the first-hour recording, print the report table.
demo: install services
	$(BIN)/python deploy/local/demo.py

lint: install
	$(BIN)/ruff check $(wildcard $(CODE))
	$(BIN)/ruff format --check $(wildcard $(CODE))
	$(BIN)/mypy

# Unit tests only: no services needed.
unit: install tools
	$(BIN)/python -m pytest -q -m "not integration"

# The whole suite: lint, types, unit, integration and replay tests on real services.
test: install services tools lint
	$(BIN)/python -m pytest -q

# The fault-injection tests with more faults: 20 kills instead of 5.
chaos: install services
	PRESALE_CHAOS_KILLS=20 $(BIN)/python -m pytest -q tests/integration/test_exactly_once.py

# The throughput benchmark of issue 5: presale's worker against three peers on a
# 2M-event workload, freshness, 2 workers vs 1 (docs/performance.md; ~7 min).
bench: $(BIN)/.bench-installed services
	$(BIN)/python -m bench.run

# How one campaign's Redis work spreads over a Redis Cluster of 1, 3 and 6
# masters of our own: Redis CPU per event on each master, the hottest one's
# share and the ceiling it projects (docs/performance.md; ~8 min).
bench-scale: $(BIN)/.bench-installed services
	$(BIN)/python -m bench.scale

# One worker over a 10M-event soak: does its RSS stay flat within 10%?
bench-soak: $(BIN)/.bench-installed services
	$(BIN)/python -m bench.soak

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

.PHONY: bench bench-scale bench-soak
