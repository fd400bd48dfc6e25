"""Idempotency-Keys survive crashes: a key whose request died is taken over once its lease runs
out, and a request that merely outlived its lease cannot overwrite the new holder's response."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.db import connection, connections
from django.utils import timezone

from closure.models import (
    AlertDelivery,
    ApiToken,
    ExecutionRecord,
    HealthReport,
    IdempotencyRecord,
    RetryDecision,
    WorkerRun,
)
from closure.services.errors import Conflict
from closure.services.idempotency import (
    idempotency_begin,
    idempotency_complete,
    idempotency_release,
    request_fingerprint,
)
from tests.conftest import A, R
from tests.factories import (
    make_alert,
    make_connector,
    make_decision,
    make_delivery,
    make_execution,
    make_health_report,
    make_retry_plan,
)
from tests.receivers import HANG_LIMIT_SECONDS, Answer, LocalReceiver

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HEALTH = f"{R}/delivery-retry-health"
LEASE = timedelta(hours=1)  # CAVRA_IDEMPOTENCY_LEASE_SECONDS's default
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def reserve(user, key: str):
    """Reserve `key` for an empty health build, as a request that has not finished yet."""
    fingerprint = request_fingerprint(method="POST", path=HEALTH, body={})
    return idempotency_begin(user=user, key=key, fingerprint=fingerprint)


def build_health(client, key: str):
    return client.post(HEALTH, {}, format="json", HTTP_IDEMPOTENCY_KEY=key)


# -- a controlled clock ------------------------------------------------------------------------


@pytest.mark.django_db
def test_repeat_within_the_lease_is_409_naming_the_lease_end_and_runs_nothing(api, operator):
    # given a request that reserved its key at T0 and is still running
    with time_machine.travel(T0, tick=False):
        reserve(operator, "k-running")

    # when the same request is repeated a second before its lease runs out
    with time_machine.travel(T0 + LEASE - timedelta(seconds=1), tick=False):
        response = build_health(api, "k-running")

    # then it is refused and the key still belongs to the first request
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_in_progress"
    assert response.json()["detail"] == (
        "a request with this Idempotency-Key is still being processed; it holds the key until "
        "2026-11-27T10:00:00.000000Z"
    )
    assert HealthReport.objects.count() == 0
    record = IdempotencyRecord.objects.get()
    assert (record.completed, record.lease_version) == (False, 1)
    assert record.leased_until == T0 + LEASE


@pytest.mark.django_db
def test_repeat_after_the_lease_takes_the_key_over_runs_once_then_replays(api, operator):
    # given a request that reserved its key at T0 and died
    with time_machine.travel(T0, tick=False):
        reserve(operator, "k-dead")

    # when the request is repeated after the lease ran out, and then once more
    later = T0 + LEASE + timedelta(seconds=1)
    with time_machine.travel(later, tick=False):
        taken_over = build_health(api, "k-dead")
        replayed = build_health(api, "k-dead")

    # then the repeat ran the request, and the next one replays its response
    assert taken_over.status_code == 201
    assert "Idempotent-Replayed" not in taken_over
    assert replayed.status_code == 201
    assert replayed["Idempotent-Replayed"] == "true"
    assert replayed.json() == taken_over.json()
    assert HealthReport.objects.count() == 1
    record = IdempotencyRecord.objects.get()
    assert (record.completed, record.lease_version, record.leased_until) == (True, 2, None)
    assert record.response_status == 201
    assert record.response_body == taken_over.json()
    # the key lives its full lifetime from the takeover, so it cannot expire under the new holder
    assert record.expires_at == later + timedelta(hours=24)


@pytest.mark.django_db
def test_a_late_original_completion_cannot_overwrite_the_new_holders_response(api, operator):
    # given a request that reserved its key, outlived its lease, and lost the key to a repeat
    with time_machine.travel(T0, tick=False):
        original = reserve(operator, "k-slow")
    with time_machine.travel(T0 + LEASE + timedelta(seconds=1), tick=False):
        repeat = build_health(api, "k-slow")

    # when the original finally completes, and then reports a server error
    idempotency_complete(
        record=original, status=201, body={"from": "original"}, content_type="application/json"
    )
    idempotency_complete(record=original, status=500, body={}, content_type="application/json")

    # then the repeat's response is the one kept
    record = IdempotencyRecord.objects.get()
    assert record.response_body == repeat.json()
    assert (record.completed, record.lease_version, record.response_status) == (True, 2, 201)


@pytest.mark.django_db
def test_a_late_original_cannot_store_or_release_a_key_the_repeat_still_holds(operator):
    # given a key taken over by a repeat that is still running
    with time_machine.travel(T0, tick=False):
        original = reserve(operator, "k-both-running")
    with time_machine.travel(T0 + LEASE + timedelta(seconds=1), tick=False):
        holder = reserve(operator, "k-both-running")
    assert (holder.pk, holder.lease_version) == (original.pk, 2)

    # when the original completes, then releases
    idempotency_complete(
        record=original, status=201, body={"from": "original"}, content_type="application/json"
    )
    idempotency_release(record=original)

    # then the key is still the repeat's, in progress; its own completion is the one stored
    record = IdempotencyRecord.objects.get()
    assert (record.completed, record.lease_version, record.response_body) == (False, 2, None)
    idempotency_complete(
        record=holder, status=201, body={"from": "repeat"}, content_type="application/json"
    )
    record.refresh_from_db()
    assert (record.completed, record.response_body) == (True, {"from": "repeat"})


@pytest.mark.django_db
def test_a_key_reserved_before_leases_existed_is_leased_from_its_creation(api, operator):
    # given a key in progress reserved by the previous release (no lease on the row)
    IdempotencyRecord.objects.create(
        user=operator,
        key="k-old",
        request_sha256=request_fingerprint(method="POST", path=HEALTH, body={}),
        created_at=T0,
        expires_at=T0 + timedelta(hours=24),
    )

    # when it is repeated within a lease of its creation, then after
    with time_machine.travel(T0 + LEASE - timedelta(seconds=1), tick=False):
        within = build_health(api, "k-old")
    with time_machine.travel(T0 + LEASE, tick=False):
        after = build_health(api, "k-old")

    # then the first repeat waits and the second takes the key over
    assert within.status_code == 409
    assert after.status_code == 201
    assert HealthReport.objects.count() == 1
    record = IdempotencyRecord.objects.get()
    assert (record.completed, record.lease_version) == (True, 2)


@pytest.mark.django_db
def test_an_unhandled_error_frees_the_key_for_the_next_try(api, monkeypatch):
    # given a health build that fails with an error no handler turns into a response
    def broken(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("closure.api.views.health_report_build", broken)

    # when it is posted with a key
    with pytest.raises(RuntimeError):
        build_health(api, "k-broken")

    # then the key is free again, and a repeat once the fault is gone runs the request
    assert IdempotencyRecord.objects.count() == 0
    monkeypatch.undo()
    assert build_health(api, "k-broken").status_code == 201
    assert HealthReport.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_only_one_of_many_concurrent_repeats_takes_an_abandoned_key_over(operator):
    # given a key whose request died an hour ago
    with time_machine.travel(T0, tick=False):
        reserve(operator, "k-race")
    barrier = threading.Barrier(12)
    outcomes = []
    lock = threading.Lock()

    def repeat():
        try:
            barrier.wait(timeout=30)
            try:
                outcome = reserve(operator, "k-race").lease_version
            except Conflict as exc:
                outcome = exc.code
            with lock:
                outcomes.append(outcome)
        finally:
            connections.close_all()

    # when twelve repeats find it at the same moment
    with time_machine.travel(T0 + LEASE + timedelta(seconds=1), tick=False):
        threads = [threading.Thread(target=repeat) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    # then exactly one holds it (the fence token moved once) and the others are told to wait
    assert sorted(outcomes, key=str) == [2] + ["idempotency_in_progress"] * 11
    assert IdempotencyRecord.objects.get().lease_version == 2


# -- a real server, killed mid-request ---------------------------------------------------------

CRASH_LEASE_SECONDS = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, tmp_path: Path) -> subprocess.Popen:
    """gunicorn on the test database, in its own process group so that one signal kills all."""
    params = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{params['USER']}@{params['HOST'] or '127.0.0.1'}:"
            f"{params['PORT'] or 5432}/{params['NAME']}"
        ),
        "DJANGO_SETTINGS_MODULE": "cavra.test_settings",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"prometheus-{port}"),
        "CAVRA_IDEMPOTENCY_LEASE_SECONDS": str(CRASH_LEASE_SECONDS),
        # The killed run's attempt is reclaimed by the next run as soon as possible.
        "CAVRA_ATTEMPT_LEASE_SECONDS": "1",
        "CAVRA_LOG_LEVEL": "ERROR",
    }
    server = subprocess.Popen(  # noqa: S603 (our own gunicorn with fixed arguments)
        [str(Path(sys.executable).with_name("gunicorn")), "-c", "cavra/gunicorn.conf.py"]
        + ["cavra.wsgi"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, "gunicorn exited at start-up"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            pass
        assert time.monotonic() < deadline, "gunicorn did not start"
        time.sleep(0.1)


def kill_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=10)


def post(port: int, path: str, body: dict, headers: dict, *, timeout: float = 60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    response = conn.getresponse()
    return response, json.loads(response.read())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_key_whose_server_was_killed_mid_run_is_taken_over_and_nothing_runs_twice(
    operator, tmp_path
):
    # given a due retry to a receiver that never answers the first attempt, and an API token
    def first_attempt_hangs(request):
        if len(receiver.requests) == 1:
            receiver.stopping.wait(HANG_LIMIT_SECONDS)
        return Answer(status=200, body=b"ok")

    with LocalReceiver(first_attempt_hangs) as receiver:
        hook = make_connector("ops-webhook", receiver.url_for("/hook"))
        an_hour_ago = timezone.now() - timedelta(hours=1)
        alert = make_alert(
            report=make_health_report(actor=operator), actor=operator, created_at=an_hour_ago
        )
        delivery = make_delivery(alert=alert, connector=hook, created_at=an_hour_ago)
        make_execution(delivery=delivery, actor=operator, executed_at=an_hour_ago)
        plan = make_retry_plan(actor=operator, alert_level="critical")
        make_decision(plan=plan, delivery=delivery, next_retry_at=an_hour_ago)
        _, raw = ApiToken.issue(user=operator, name="crash test")
        headers = {
            "Authorization": f"Bearer {raw}",
            "Content-Type": "application/json",
            "Idempotency-Key": "live-run-1",
        }
        body = {"execute": True, "retry_plan_id": plan.retry_plan_id, "timeout_seconds": 30}
        path = f"{A}/retry-worker-run"

        # when a live run is posted, and its server is SIGKILLed while the connector call hangs
        port = free_port()
        server = start_server(port, tmp_path)
        try:
            lost = []

            def first_request():
                try:
                    post(port, path, body, headers)
                except OSError as exc:
                    lost.append(exc)

            first = threading.Thread(target=first_request)
            first.start()
            deadline = time.monotonic() + 20
            while not receiver.requests:
                assert time.monotonic() < deadline, "the run never called the receiver"
                time.sleep(0.05)
        finally:
            kill_server(server)
        first.join(timeout=10)
        assert len(lost) == 1  # the client saw its connection die, not an answer
        record = IdempotencyRecord.objects.get()
        assert (record.completed, record.lease_version) == (False, 1)
        assert list(WorkerRun.objects.values_list("status", flat=True)) == ["running"]

        # and the same request is repeated on a fresh server, within the lease and after it
        server = start_server(port, tmp_path)
        try:
            remaining = (record.leased_until - timezone.now()).total_seconds()
            assert remaining > 1, "the server restart outlasted the lease; raise it"
            early, early_body = post(port, path, body, headers)
            # The server's clock cannot be controlled: wait for its lease to run out.
            time.sleep((record.leased_until - timezone.now()).total_seconds() + 0.2)
            late, late_body = post(port, path, body, headers)
            again, again_body = post(port, path, body, headers)
        finally:
            kill_server(server)
        requests = list(receiver.requests)

    # then the early repeat waited, the late one ran the run again, the last one replayed it
    assert early.status == 409
    assert early_body["code"] == "idempotency_in_progress"
    assert late.status == 201
    assert late.getheader("Idempotent-Replayed") is None
    assert late_body["run"]["status"] == "succeeded"
    assert late_body["run"]["summary"]["delivered_count"] == 1
    assert again.status == 201
    assert again.getheader("Idempotent-Replayed") == "true"
    assert again_body == late_body
    # and nothing ran twice: one abandoned run, one that delivered, one delivered attempt, the
    # resend carrying the same webhook-id so the receiver applies it once
    assert sorted(WorkerRun.objects.values_list("status", flat=True)) == [
        "abandoned",
        "succeeded",
    ]
    assert list(
        ExecutionRecord.objects.filter(trigger="retry").values_list("execution_status", flat=True)
    ) == ["delivered"]
    assert AlertDelivery.objects.get().status == "delivered"
    assert RetryDecision.objects.get().status == "executed"
    assert [request.headers["webhook-id"] for request in requests] == [delivery.delivery_id] * 2
    record = IdempotencyRecord.objects.get()
    assert (record.completed, record.lease_version, record.response_status) == (True, 2, 201)
    assert record.response_body == late_body
