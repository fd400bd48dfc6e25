# CAVRA closure — the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PG_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: demo test test-postgres test-all lint install clean

$(VENV)/.installed: pyproject.toml
	@interpreter=$$(scripts/find-python) || exit 1; \
	  [ -x $(PY) ] || "$$interpreter" -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

## Run the product: migrate a SQLite database, load the demo flow, serve on 127.0.0.1:8000.
demo: install
	DJANGO_DEBUG=1 CAVRA_ALLOW_LOOPBACK_CONNECTORS=1 $(PY) manage.py run_demo

## Run the whole test suite on SQLite (no services needed).
test: install
	$(PY) -m pytest

## Run the whole test suite on PostgreSQL (PostgreSQL-only tests included, none skipped).
test-postgres: install
	DATABASE_URL=$(PG_URL) CAVRA_REQUIRE_POSTGRES=1 $(PY) -m pytest

test-all: test test-postgres

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	CAVRA_ALLOW_INSECURE_DEV_KEY=1 $(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) var
