"""Many workers against one PostgreSQL, as separate processes: no duplicates, nothing lost,
crash-safe. Also: 50 concurrent identical POSTs with one Idempotency-Key create one resource."""

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from closure.evidence.ledger import evidence_verify
from closure.models import (
    AlertDelivery,
    ExecutionRecord,
    HealthAlert,
    HealthReport,
    RetryDecision,
    WorkerRun,
)
from closure.services.retries import RetryPolicy, retry_plan_create
from closure.worker import WorkerOptions, worker_run_execute
from tests.conftest import R
from tests.factories import make_connector, make_health_report
from tests.receivers import Answer, LocalReceiver

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMMEDIATE = RetryPolicy(retry_delay_minutes=0, allow_immediate_retry=True, max_retry_attempts=10)
PROCESS_DEADLINE_SECONDS = 600


def _bucket(webhook_id: str) -> int:
    """A stable 0-99 bucket per delivery, so the expected outcome of each one is known."""
    return int(hashlib.sha256(webhook_id.encode()).hexdigest()[:8], 16) % 100


def _seed_due_retries(actor, receiver: LocalReceiver, *, connectors: int, alerts: int) -> str:
    """`connectors × alerts` deliveries whose first attempt failed an hour ago, planned for an
    immediate retry by the real planner. Returns the plan's public ID."""
    hooks = [
        make_connector(f"hook-{n:02d}", receiver.url_for(f"/hook/{n:02d}"))
        for n in range(connectors)
    ]
    report = make_health_report(actor=actor)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    alert_rows = HealthAlert.objects.bulk_create(
        [
            HealthAlert(health=report, created_at=an_hour_ago, created_by=actor)
            for _ in range(alerts)
        ]
    )
    AlertDelivery.objects.bulk_create(
        [
            AlertDelivery(
                alert=alert,
                connector=hook,
                provider=hook.name,
                status="failed",
                attempt_count=1,
                last_attempt_at=an_hour_ago,
                created_at=an_hour_ago,
                updated_at=an_hour_ago,
            )
            for alert in alert_rows
            for hook in hooks
        ],
        batch_size=1000,
    )
    plan, _ = retry_plan_create(actor=actor, policy=IMMEDIATE)
    assert plan.retryable_count == connectors * alerts
    return plan.retry_plan_id


def _worker_env(**extra: str) -> dict:
    settings_dict = connection.settings_dict
    url = (
        f"postgres://{settings_dict['USER']}@{settings_dict['HOST'] or '127.0.0.1'}:"
        f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
    )
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "cavra.test_settings",
        "CAVRA_LOG_LEVEL": "ERROR",
        **extra,
    }


def _start_worker(plan_id: str, env: dict, *, max_deliveries: int, batch: int) -> subprocess.Popen:
    return subprocess.Popen(  # noqa: S603 (our own manage.py with fixed arguments)
        [
            sys.executable,
            "manage.py",
            "run_retry_worker",
            "--execute",
            "--user",
            "olivia",
            "--retry-plan-id",
            plan_id,
            "--max-retry-deliveries",
            str(max_deliveries),
            "--batch",
            str(batch),
            "--timeout-seconds",
            "1",
            "--drain",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_four_worker_processes_deliver_2000_retries_once_each(operator):
    # given 2,000 due retries over 20 connectors, and a receiver that answers 2xx 80%, 500 10%,
    # 429 with Retry-After 5% and hangs past the timeout 5%, by a stable bucket per delivery
    def answer(request):
        bucket = _bucket(request.headers["webhook-id"])
        if bucket < 80:
            return Answer(status=200, body=b"ok")
        if bucket < 90:
            return Answer(status=500, body=b"down")
        if bucket < 95:
            return Answer(status=429, headers=(("Retry-After", "120"),), body=b"slow down")
        return receiver.hang(request)

    with LocalReceiver(answer) as receiver:
        plan_id = _seed_due_retries(operator, receiver, connectors=20, alerts=100)
        # Circuits stay closed here: this test is about claims, not about breakers.
        env = _worker_env(CAVRA_CIRCUIT_FAILURE_THRESHOLD="100000")

        # when four worker processes run the plan at once
        workers = [_start_worker(plan_id, env, max_deliveries=500, batch=20) for _ in range(4)]
        outputs = [worker.communicate(timeout=PROCESS_DEADLINE_SECONDS) for worker in workers]

    # then every process succeeded
    assert [worker.returncode for worker in workers] == [0, 0, 0, 0], outputs
    # zero duplicates: the receiver saw each webhook-id exactly once
    per_id = Counter(request.headers["webhook-id"] for request in receiver.requests)
    assert len(per_id) == 2000
    assert set(per_id.values()) == {1}
    # zero lost: every decision was executed, with exactly one record per attempt
    assert Counter(RetryDecision.objects.values_list("status", flat=True)) == {"executed": 2000}
    records = ExecutionRecord.objects.filter(trigger="retry")
    assert records.count() == 2000
    assert set(records.values_list("attempt_number", flat=True)) == {2}
    # each outcome is the one the receiver chose for that delivery
    expected = Counter()
    for delivery_id in per_id:
        bucket = _bucket(delivery_id)
        expected["delivered" if bucket < 80 else "failed"] += 1
    assert Counter(AlertDelivery.objects.values_list("status", flat=True)) == expected
    classes = Counter(records.exclude(error_class="").values_list("error_class", flat=True))
    assert classes == {
        "http_5xx": sum(80 <= _bucket(i) < 90 for i in per_id),
        "rate_limited": sum(90 <= _bucket(i) < 95 for i in per_id),
        "timeout": sum(_bucket(i) >= 95 for i in per_id),
    }
    # the work was really shared
    busy_runs = [
        run
        for run in WorkerRun.objects.filter(dry_run=False)
        if run.summary["selected_retry_count"]
    ]
    assert len(busy_runs) >= 2
    assert sum(run.summary["selected_retry_count"] for run in busy_runs) == 2000
    assert evidence_verify().ok is True


@pytest.mark.parametrize("iteration", range(10))
def test_a_worker_killed_at_a_random_point_loses_nothing_and_duplicates_no_effect(
    operator, settings, iteration
):
    # given 60 due retries and a receiver that takes a little time per request and applies
    # each webhook-id's effect once (de-duplicating, as Standard Webhooks receivers do)
    def slow_ok(request):
        time.sleep(0.02)
        return Answer(status=200, body=b"ok")

    settings.CAVRA_ATTEMPT_LEASE_SECONDS = 2
    with LocalReceiver(slow_ok) as receiver:
        plan_id = _seed_due_retries(operator, receiver, connectors=3, alerts=20)
        env = _worker_env(CAVRA_ATTEMPT_LEASE_SECONDS="2")

        # when two workers start and one is SIGKILLed at a random moment
        victim = _start_worker(plan_id, env, max_deliveries=60, batch=5)
        survivor = _start_worker(plan_id, env, max_deliveries=60, batch=5)
        time.sleep(random.Random(iteration).uniform(0.5, 3.0))  # noqa: S311 (when to kill)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=PROCESS_DEADLINE_SECONDS)
        survivor.communicate(timeout=PROCESS_DEADLINE_SECONDS)
        assert survivor.returncode == 0

        # and after the leases expire, a worker finishes whatever is left
        later = timezone.now() + timedelta(seconds=5)
        with time_machine.travel(later, tick=True):
            for _ in range(5):
                outcome = worker_run_execute(
                    actor=operator,
                    options=WorkerOptions(
                        execute=True, retry_plan_id=plan_id, max_retry_deliveries=100
                    ),
                )
                if outcome.run.status == "no_work":
                    break
        requests = list(receiver.requests)

    # then every decision ended executed and every delivery is delivered
    assert Counter(RetryDecision.objects.values_list("status", flat=True)) == {"executed": 60}
    assert Counter(AlertDelivery.objects.values_list("status", flat=True)) == {"delivered": 60}
    # no duplicate effect: every webhook-id reached the receiver, at most twice (a resend after
    # the kill keeps the same webhook-id, so the receiver applies it once)
    per_id = Counter(request.headers["webhook-id"] for request in requests)
    assert set(per_id) == set(AlertDelivery.objects.values_list("delivery_id", flat=True))
    assert max(per_id.values()) <= 2
    # one counted record per delivery attempt; a run the kill interrupted ends abandoned
    counted = ExecutionRecord.objects.filter(trigger="retry", execution_status="delivered")
    assert counted.count() == 60
    assert WorkerRun.objects.filter(status="running").count() == 0
    assert evidence_verify().ok is True


def test_fifty_concurrent_identical_posts_with_one_key_create_one_report(operator):
    # given 50 clients of the same operator sending the same request with the same key
    login = Client()
    login.force_login(operator)
    clients = []
    for _ in range(50):
        client = Client()
        client.cookies = login.cookies
        clients.append(client)
    barrier = threading.Barrier(len(clients))
    responses = []
    lock = threading.Lock()

    def post(client):
        try:
            barrier.wait(timeout=60)
            response = client.post(
                f"{R}/delivery-retry-health",
                {},
                content_type="application/json",
                HTTP_IDEMPOTENCY_KEY="build-once",
            )
            with lock:
                responses.append(response)
        finally:
            connections.close_all()

    # when they all post at once
    threads = [threading.Thread(target=post, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # then exactly one report exists; every answer is that report (new or replayed) or a 409
    assert len(responses) == 50
    assert HealthReport.objects.count() == 1
    health_id = HealthReport.objects.get().health_id
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {201, 409}
    created = [r for r in responses if r.status_code == 201]
    assert len([r for r in created if "Idempotent-Replayed" not in r]) == 1
    assert {r.json()["health"]["health_id"] for r in created} == {health_id}
    assert {r.json()["code"] for r in responses if r.status_code == 409} <= {
        "idempotency_in_progress"
    }
