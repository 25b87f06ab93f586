# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PACKAGES := -e '.[test]' -e 'plugins/segment[test]' -e 'plugins/posthog[test]'

.PHONY: install test lint typecheck unit demo bench dist clean

$(STAMP): pyproject.toml plugins/segment/pyproject.toml plugins/posthog/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("event-router needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PACKAGES)
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Two processes, each taking whole test files (module fixtures and servers stay together).
unit: install
	$(BIN)/pytest -n 2 --dist loadfile

test: lint typecheck unit

demo: install
	$(BIN)/event-router demo

# `make bench BENCH_ARGS="--quick"` for a smoke run; see docs/benchmarks.md.
bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# Wheels and sdists of the core and both plugins, in dist/ (each wheel is built from its sdist,
# in an isolated environment, as a package index would build it).
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m build --outdir dist plugins/segment
	$(BIN)/python -m build --outdir dist plugins/posthog
	@ls -1 dist

clean:
	rm -rf $(VENV) dist .mypy_cache .ruff_cache .pytest_cache
