"""The benchmarks in bench/ keep working: each runs end to end at a tiny scale on PostgreSQL.

Their figures at full scale are in docs/performance.md; here only what does not depend on the
machine's speed is asserted: the exit status, the reference rows matching, the query counts.
Each run uses a database of its own (`cavra_bench_smoke_*`), dropped afterwards.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pg_server() -> str:
    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"


@pytest.fixture
def bench(pg_server):
    """Runs `bench/<script>.py` with its own scratch database; returns its output."""
    created = []

    def run(script: str, *args: str) -> str:
        database = f"cavra_bench_smoke_{script}"
        created.append(database)
        finished = subprocess.run(  # noqa: S603
            [
                sys.executable,
                f"bench/{script}.py",
                "--pg",
                pg_server,
                "--database",
                database,
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
        return finished.stdout

    yield run
    with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
        for database in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


SMALL_DATASET = ("--deliveries", "300", "--executions", "1500", "--evidence", "400")


def test_dashboard_benchmark_runs_at_most_ten_queries_per_request(bench):
    out = bench("dashboard", *SMALL_DATASET, "--rounds", "1")

    assert "reference: one hand-written SQL statement" in out
    api_queries = int(re.search(r"api: closure dashboard, token \((\d+) queries\)", out)[1])
    assert api_queries == 10
    assert "closure_dashboard() alone: 8 queries" in out


def test_list_pages_benchmark_finds_no_full_table_count(bench):
    out = bench("list_pages", *SMALL_DATASET, "--rounds", "1")

    assert re.search(r"admin executions \(7 q\)", out)
    assert re.search(r"console executions \(6 q\)", out)
    assert "target: every page under 300 ms, no full-table COUNT(*)" in out
    assert "; 0 full-table COUNT(*);" in out


def test_retry_planning_benchmark_matches_its_reference_rows(bench):
    out = bench("retry_planning", "--deliveries", "300", "--rounds", "1")

    assert "reference rows identical: True" in out
    assert re.search(r"service retry_plan_create \(\d+ queries\)", out)


def test_ingest_benchmark_ingests_over_http(bench):
    out = bench("ingest", "--events", "2000", "--batch", "1000", "--rounds", "1")

    assert re.search(r"api over HTTP .* events/s", out)
    assert "in-process: service (5 queries a batch)" in out


def test_evidence_benchmark_verifies_the_chain(bench):
    out = bench("evidence_throughput", "--rows", "2000", "--rounds", "1")

    assert re.search(r"verify_evidence, median\s+[\d,.]+ rows/s", out)
    assert re.search(r"reference \(psycopg read\), same run\s+[\d,.]+ rows/s", out)


def test_records_verify_benchmark_checks_every_record(bench):
    out = bench("records_verify", "--deliveries", "100", "--rounds", "1")

    assert (
        "records checked: 2 HealthReport, 20 HealthAlert, 100 AlertDelivery, "
        "150 ExecutionRecord, 20 Connector" in out
    )
    assert re.search(r"records verification \(292 records\), median\s+[\d,.]+ rows/s", out)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_load_benchmark_answers_every_request(bench):
    out = bench("load", *SMALL_DATASET, "--duration", "2")

    results = re.findall(r"errors\s+(\d+)", out)
    assert results == ["0", "0"]
    assert "closure dashboard: GET" in out
    assert "retry plan: POST" in out
