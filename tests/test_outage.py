"""PostgreSQL goes away and comes back: the API answers 503 problem+json with Retry-After and
writes nothing, the probes tell the orchestrator, and a looping worker backs off and resumes
within 10 seconds of the database's return.

The outage is real but confined to the test database: an admin connection refuses new
connections to it (`ALTER DATABASE … ALLOW_CONNECTIONS false`) and terminates every backend
connected to it (`pg_terminate_backend`). The shared server keeps running.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.test import Client

from closure.evidence.ledger import evidence_verify
from closure.models import ApiToken, Evidence, RetryPlan, WorkerRun
from closure.roles import OPERATORS
from tests.conftest import PROBLEM_CONTENT_TYPE, A, B
from tests.factories import make_user

ROOT = Path(__file__).resolve().parent.parent
RESUME_WITHIN_SECONDS = 10

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def admin_connection() -> psycopg.Connection:
    params = connection.settings_dict
    return psycopg.connect(
        host=params["HOST"] or "127.0.0.1",
        port=params["PORT"] or 5432,
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )


class Outage:
    """Takes the test database away from every client, and gives it back."""

    def __init__(self) -> None:
        self.name = connection.settings_dict["NAME"]
        self.admin = admin_connection()

    def begin(self) -> int:
        self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        terminated = self.admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.name],
        ).fetchone()[0]
        connection.close()  # this process's own connection was one of them
        return terminated

    def end(self) -> None:
        self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def close(self) -> None:
        self.end()
        self.admin.close()


def start_worker(username: str) -> subprocess.Popen:
    params = connection.settings_dict
    url = (
        f"postgres://{params['USER']}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}"
        f"/{params['NAME']}"
    )
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "cavra.test_settings"}
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_retry_worker",
            "--user",
            username,
            "--execute",
            "--loop",
            "--interval",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_api_answers_503_during_an_outage_and_recovers_after_it(roles):
    operator = make_user("olivia", OPERATORS)
    _, raw = ApiToken.issue(user=operator, name="outage")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    client = Client(raise_request_exception=False)
    plans_before, evidence_before = RetryPlan.objects.count(), Evidence.objects.count()

    outage = Outage()
    try:
        outage.begin()
        planned = client.post(
            f"{A}/retry-plan", {"retry_policy": {}}, content_type="application/json", **bearer
        )
        dashboard = client.get(f"{B}/final-reporting-closure-dashboard", **bearer)
        ready = client.get("/readyz")
        alive = client.get("/healthz")
    finally:
        outage.close()

    for response in (planned, dashboard):
        assert response.status_code == 503
        assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
        assert response["Retry-After"] == "5"
        assert response.json() == {
            "type": "https://cavra.invalid/problems/database-unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": "The database is unavailable. Nothing was changed; retry later.",
            "code": "database_unavailable",
        }
        assert b"Traceback" not in response.content
    assert ready.status_code == 503
    assert ready.json()["code"] == "database_unavailable"
    assert alive.status_code == 200

    # Nothing was half-written, and the next request succeeds on a fresh connection.
    assert (RetryPlan.objects.count(), Evidence.objects.count()) == (
        plans_before,
        evidence_before,
    )
    recovered = client.post(
        f"{A}/retry-plan", {"retry_policy": {}}, content_type="application/json", **bearer
    )
    assert recovered.status_code == 201
    assert RetryPlan.objects.count() == plans_before + 1
    assert client.get("/readyz").status_code == 200


def test_a_looping_worker_backs_off_during_an_outage_and_resumes_within_10_seconds(roles):
    make_user("wanda", OPERATORS)
    worker = start_worker("wanda")
    outage = Outage()
    try:
        deadline = time.monotonic() + 60
        while WorkerRun.objects.count() == 0:
            assert time.monotonic() < deadline, "the worker never ran"
            assert worker.poll() is None, worker.stderr.read()
            time.sleep(0.2)

        terminated = outage.begin()
        assert terminated >= 1  # at least the worker's own connection
        time.sleep(3)  # the worker polls every second: several failed cycles
        assert worker.poll() is None, "the worker died during the outage"
        outage.end()
        returned = time.monotonic()
        runs_at_return = WorkerRun.objects.count()
        while WorkerRun.objects.count() == runs_at_return:
            assert time.monotonic() - returned < RESUME_WITHIN_SECONDS, "no run after return"
            time.sleep(0.2)
        resumed_after = time.monotonic() - returned
    finally:
        outage.close()
        worker.send_signal(signal.SIGTERM)
        try:
            out, err = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, err = worker.communicate()

    assert resumed_after < RESUME_WITHIN_SECONDS
    assert '{"event": "database_unavailable"}' in err
    assert worker.returncode == 0, err
    # The ledger the worker wrote around the outage is whole: no half-written chain.
    verification = evidence_verify()
    assert verification.ok, verification.as_dict()
    assert verification.count == Evidence.objects.count() > 0
