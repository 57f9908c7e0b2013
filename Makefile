# make demo : set up .venv and run the demo end to end (see README)
# make test : set up .venv and run lint + the test suite
SHELL := /bin/bash
VENV := .venv/bin
OUT ?= demo_output

.PHONY: setup demo test test-unit lint bench clean

setup:
	./scripts/setup.sh

demo: setup
	$(VENV)/python scripts/run_demo.py --out $(OUT)

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/lint-imports

test: lint
	$(VENV)/python -m pytest -q -ra --durations=25

test-unit: setup
	$(VENV)/python -m pytest -q -ra tests/unit

bench: setup
	$(VENV)/python benchmarks/bench_ig_engine.py

clean:
	rm -rf $(OUT) .pytest_cache
