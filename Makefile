# CAVRA closure — the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
# The schema is generated with the production settings (HTTPS on: the `__Host-` session cookie)
# and one database backend (integer ranges in it come from the backend).
SCHEMA_ENV := DJANGO_SETTINGS_MODULE=cavra.settings CAVRA_HTTPS=1 CAVRA_ALLOW_INSECURE_DEV_KEY=1 DATABASE_URL=sqlite://:memory:

.PHONY: demo test test-postgres test-all lint install clean openapi openapi-check check-deploy audit serve docs-screenshots bench

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
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/lint-imports --no-logo

## Regenerate the committed OpenAPI schema (openapi.yaml) from the code.
openapi: install
	$(SCHEMA_ENV) $(PY) manage.py spectacular --file openapi.yaml --validate --fail-on-warn

## Fail if openapi.yaml differs from what the code generates, or does not validate.
openapi-check: install
	@mkdir -p var
	$(SCHEMA_ENV) $(PY) manage.py spectacular --file var/openapi.generated.yaml --validate --fail-on-warn
	diff -u openapi.yaml var/openapi.generated.yaml

## Django's deployment checks with production settings (fails on any warning).
check-deploy: install
	PY=$(PY) scripts/check-deploy

## Known vulnerabilities in the installed dependencies (see docs/deployment.md).
audit: install
	$(PY) scripts/audit_dependencies.py

## Production-style serving on 127.0.0.1:8000: gunicorn + whitenoise (needs the env of docs/deployment.md).
serve: install
	$(PY) manage.py collectstatic --noinput -v0
	$(VENV)/bin/gunicorn -c cavra/gunicorn.conf.py cavra.wsgi

## Refresh docs/screenshots/ from the browser tests (needs Chromium; see scripts/docs-screenshots).
docs-screenshots: install
	PY=$(PY) scripts/docs-screenshots

## Every benchmark at full scale on PostgreSQL, one after another (about an hour; needs wrk).
## Figures and how to read them: docs/performance.md.
bench: install
	$(PY) bench/dashboard.py
	$(PY) bench/list_pages.py --database cavra_bench_dashboard --reuse  # the dashboard's data
	$(PY) bench/retry_planning.py
	$(PY) bench/ingest.py
	$(PY) bench/worker_throughput.py
	$(PY) bench/worker_throughput.py --receiver-latency-ms 50
	$(PY) bench/evidence_throughput.py
	$(PY) bench/load.py

clean:
	rm -rf $(VENV) var
