"""Concurrent live worker runs on PostgreSQL: row locks, attempt leases and fencing.

Every test here runs real threads, each with its own database connection, against committed
data (`transaction=True`), and closes its connections when it ends.
"""

import logging
import threading
from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Count
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.ledger import evidence_append, evidence_verify
from closure.models import (
    AlertDelivery,
    Evidence,
    ExecutionRecord,
    RetryDecision,
    RetryPlan,
    WorkerRun,
)
from closure.services.alerts import health_alert_send
from closure.services.attempts import attempt_claim, attempt_record, attempt_send, attempts_renew
from closure.services.health import HealthParameters, health_report_build
from closure.services.retries import RetryPolicy, retry_plan_create
from closure.worker import WorkerOptions, worker_run_execute
from tests.factories import make_connector
from tests.receivers import Answer, LocalReceiver

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# Retry as soon as a delivery has failed, so no clock has to move for decisions to be due.
IMMEDIATE = RetryPolicy(retry_delay_minutes=0, allow_immediate_retry=True)
# Generous bound on how long a healthy run of any test's threads may take.
THREAD_DEADLINE_SECONDS = 60


@pytest.fixture
def live_receiver():
    """A threaded receiver, so concurrent runs really send concurrently."""
    with LocalReceiver() as receiver:
        yield receiver


def _failed_deliveries(actor, receiver: LocalReceiver, count: int) -> list[AlertDelivery]:
    """`count` deliveries of one alert, one per connector, each failed once; the receiver then
    forgets those requests and accepts everything."""
    receiver.answer = lambda request: Answer(status=500, body=b"down")
    for number in range(count):
        make_connector(f"hook-{number:02d}", receiver.url_for(f"/hook/{number:02d}"))
    report = health_report_build(actor=actor, parameters=HealthParameters())
    result = health_alert_send(actor=actor, health_id=report.health_id)
    deliveries = [delivery for delivery, _ in result.attempts]
    assert [d.status for d in deliveries] == ["failed"] * count
    assert len(receiver.requests) == count
    receiver.requests.clear()
    receiver.answer = lambda request: Answer(status=200, body=b"ok")
    return deliveries


def _run_threads(targets: list) -> list[BaseException]:
    """Start every target at once (barrier); each closes its connections when it ends."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def wrapped(target):
        try:
            barrier.wait(timeout=THREAD_DEADLINE_SECONDS)
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wrapped, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=THREAD_DEADLINE_SECONDS)
    assert [t.is_alive() for t in threads] == [False] * len(threads)
    return errors


def _close_after(target) -> None:
    """Run `target` in this thread, then close the thread's own database connections."""
    try:
        target()
    finally:
        connections.close_all()


def test_worker_concurrent_live_runs_execute_each_decision_exactly_once(operator, live_receiver):
    # given 40 failed deliveries, each with a due retry decision in one plan
    deliveries = _failed_deliveries(operator, live_receiver, 40)
    plan, _ = retry_plan_create(actor=operator, policy=IMMEDIATE)
    assert plan.retryable_count == 40
    runs_by_thread: dict[int, list[WorkerRun]] = {n: [] for n in range(4)}

    def drain(thread_number: int):
        # Small batches, so that the four threads keep competing for the same decisions.
        for _ in range(40):
            outcome = worker_run_execute(
                actor=operator,
                options=WorkerOptions(
                    execute=True, retry_plan_id=plan.retry_plan_id, max_retry_deliveries=3
                ),
            )
            runs_by_thread[thread_number].append(outcome.run)
            if outcome.run.status == "no_work":
                return
        raise AssertionError("the worker never ran out of work")

    # when four live worker runs drain the plan concurrently
    errors = _run_threads([lambda n=n: drain(n) for n in range(4)])

    # then no run failed and every decision was executed exactly once
    assert errors == []
    assert Counter(RetryDecision.objects.filter(plan=plan).values_list("status", flat=True)) == {
        "executed": 40
    }
    retries = ExecutionRecord.objects.filter(trigger="retry")
    assert sorted(retries.values_list("decision_id", flat=True)) == sorted(
        RetryDecision.objects.filter(plan=plan).values_list("pk", flat=True)
    )
    assert Counter(retries.values_list("attempt_number", "execution_status")) == {
        (2, "delivered"): 40
    }
    # and there is exactly one execution record per attempt of each delivery
    per_attempt = (
        ExecutionRecord.objects.values("delivery_id", "attempt_number")
        .annotate(records=Count("id"))
        .order_by()
    )
    assert len(per_attempt) == 80
    assert {row["records"] for row in per_attempt} == {1}
    assert Counter(AlertDelivery.objects.values_list("status", "attempt_count", "lease_owner")) == {
        ("delivered", 2, ""): 40
    }
    # and the receiver got exactly one retry request per webhook-id
    received_ids = [request.headers["webhook-id"] for request in live_receiver.requests]
    assert sorted(received_ids) == sorted(d.delivery_id for d in deliveries)
    # and the runs' own accounts add up; work done by more than one thread shows that the
    # runs really overlapped
    runs = [run for thread_runs in runs_by_thread.values() for run in thread_runs]
    assert sum(run.summary["delivered_count"] for run in runs) == 40
    assert {run.status for run in runs} <= {"succeeded", "no_work"}
    assert WorkerRun.objects.filter(status="running").count() == 0
    working_threads = [
        n
        for n, thread_runs in runs_by_thread.items()
        if any(run.summary["delivered_count"] for run in thread_runs)
    ]
    assert len(working_threads) >= 2
    # and the evidence chain, appended to concurrently, verifies with no gap
    result = evidence_verify()
    assert result.ok is True, result
    sequences = list(Evidence.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, result.count + 1))
    kinds = Counter(Evidence.objects.values_list("metadata_kind", flat=True))
    assert kinds[MetadataKind.EXECUTION_RECORD] == 40
    assert kinds[MetadataKind.WORKER_RUN] == len(runs) == WorkerRun.objects.count()


def test_worker_claim_skips_decisions_locked_by_another_transaction(operator, live_receiver):
    # given six due decisions, three of them locked by another run's open claim transaction
    _failed_deliveries(operator, live_receiver, 6)
    plan, _ = retry_plan_create(actor=operator, policy=IMMEDIATE)
    locked_pks = list(
        RetryDecision.objects.filter(plan=plan).order_by("id").values_list("pk", flat=True)[:3]
    )
    locked, release = threading.Event(), threading.Event()

    def hold_locks():
        with transaction.atomic():
            list(RetryDecision.objects.select_for_update().filter(pk__in=locked_pks))
            locked.set()
            release.wait(THREAD_DEADLINE_SECONDS)

    holder = threading.Thread(target=lambda: _close_after(hold_locks))
    holder.start()
    try:
        assert locked.wait(THREAD_DEADLINE_SECONDS)
        # A run that waited for the locks would fail here instead of hanging the test.
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")

        # when a live run claims at the same time
        outcome = worker_run_execute(
            actor=operator, options=WorkerOptions(execute=True, retry_plan_id=plan.retry_plan_id)
        )
    finally:
        release.set()
        holder.join(THREAD_DEADLINE_SECONDS)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")

    # then it skipped the locked decisions without waiting and executed the other three
    assert outcome.run.status == "succeeded"
    assert outcome.run.summary["delivered_count"] == 3
    decisions = RetryDecision.objects.filter(plan=plan)
    assert sorted(decisions.filter(status="pending").values_list("pk", flat=True)) == locked_pks
    assert decisions.filter(status="executed").count() == 3
    executed_ids = sorted(
        decisions.filter(status="executed").values_list("delivery__delivery_id", flat=True)
    )
    assert sorted(r.headers["webhook-id"] for r in live_receiver.requests) == executed_ids


def test_evidence_concurrent_appends_keep_one_gap_free_chain():
    # given eight threads that each append ten evidence rows, one transaction per row
    def append_ten(thread_number: int):
        for number in range(10):
            with transaction.atomic(durable=True):
                evidence_append(
                    kind=MetadataKind.CLOSURE_REVIEW,
                    session_id=f"t{thread_number}-{number}",
                    signer="arthur",
                    subject={"thread": thread_number, "number": number},
                )

    # when they all run at once
    errors = _run_threads([lambda n=n: append_ten(n) for n in range(8)])

    # then every row was appended once, in one gap-free chain that verifies
    assert errors == []
    result = evidence_verify()
    assert (result.ok, result.count, result.first_broken_sequence) == (True, 80, None)
    assert list(Evidence.objects.order_by("sequence").values_list("sequence", flat=True)) == list(
        range(1, 81)
    )
    assert sorted(Evidence.objects.values_list("session_id", flat=True)) == sorted(
        f"t{t}-{n}" for t in range(8) for n in range(10)
    )


def test_worker_cannot_claim_a_delivery_whose_attempt_lease_is_held(operator, live_receiver):
    # given a failed delivery with a due retry decision, whose lease a manual retry holds
    [delivery] = _failed_deliveries(operator, live_receiver, 1)
    plan, _ = retry_plan_create(actor=operator, policy=IMMEDIATE)
    with transaction.atomic():
        locked = AlertDelivery.objects.select_for_update().get(pk=delivery.pk)
        manual = attempt_claim(
            delivery=locked, owner=f"manual:{operator.pk}", trigger="manual", now=timezone.now()
        )

    # when a live worker run executes the plan
    outcome = worker_run_execute(
        actor=operator, options=WorkerOptions(execute=True, retry_plan_id=plan.retry_plan_id)
    )

    # then it claims nothing, calls no connector and leaves the decision and the lease alone
    assert outcome.run.status == "no_work"
    assert outcome.results == []
    assert live_receiver.requests == []
    decision = RetryDecision.objects.get(plan=plan)
    assert (decision.status, decision.claimed_by_run_id) == ("pending", None)
    delivery.refresh_from_db()
    assert delivery.lease_owner == f"manual:{operator.pk}"
    assert delivery.lease_version == manual.lease_version
    assert ExecutionRecord.objects.count() == 1

    # and when the manual attempt then delivers, the next run skips the decision
    record = attempt_record(
        claim=manual, outcome=attempt_send(manual, timeout_seconds=5), actor=operator
    )
    assert (record.trigger, record.attempt_number, record.execution_status) == (
        "manual",
        2,
        "delivered",
    )
    outcome = worker_run_execute(
        actor=operator, options=WorkerOptions(execute=True, retry_plan_id=plan.retry_plan_id)
    )
    [result] = outcome.results
    assert result.skipped == "already_delivered"
    assert result.execution.execution_status == "skipped"
    assert RetryDecision.objects.get(plan=plan).status == "skipped"
    assert [r.headers["webhook-id"] for r in live_receiver.requests] == [delivery.delivery_id]


def test_attempt_record_with_a_stale_lease_version_is_superseded_and_changes_nothing(
    operator, live_receiver, caplog
):
    # given attempt A claimed a delivery, and after its lease expired attempt B took it over
    [delivery] = _failed_deliveries(operator, live_receiver, 1)
    claimed_at = timezone.now()
    with transaction.atomic():
        locked = AlertDelivery.objects.select_for_update().get(pk=delivery.pk)
        attempt_a = attempt_claim(delivery=locked, owner="run-a", trigger="manual", now=claimed_at)
    outcome_a = attempt_send(attempt_a, timeout_seconds=5)
    expired = claimed_at + timedelta(seconds=settings.CAVRA_ATTEMPT_LEASE_SECONDS + 1)
    with time_machine.travel(expired), transaction.atomic():
        locked = AlertDelivery.objects.select_for_update().get(pk=delivery.pk)
        assert locked.lease_is_held(timezone.now()) is False
        attempt_b = attempt_claim(
            delivery=locked, owner="run-b", trigger="manual", now=timezone.now()
        )
    assert attempt_b.lease_version == attempt_a.lease_version + 1
    evidence_before = Evidence.objects.count()

    # when A's result arrives late
    with caplog.at_level(logging.WARNING, logger="closure.services.attempts"):
        late = attempt_record(claim=attempt_a, outcome=outcome_a, actor=operator)

    # then it is recorded as superseded (with its evidence) and changes nothing else:
    # the delivery still belongs to B, with its status and attempt count untouched
    assert (late.execution_status, late.attempt_number) == ("superseded", 2)
    assert ExecutionRecord.objects.count() == 2
    assert Evidence.objects.count() == evidence_before + 1
    assert Evidence.objects.order_by("-sequence").first().execution_status == "superseded"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == ("failed", 1)
    assert (delivery.lease_owner, delivery.lease_version) == ("run-b", attempt_b.lease_version)
    assert f"attempt 2 of {delivery.delivery_id} lost its lease" in caplog.text
    # and A may not even renew its lease to send again
    assert attempts_renew([attempt_a]) == [False]

    # and B, the lease holder, records its attempt as attempt 2
    record = attempt_record(
        claim=attempt_b, outcome=attempt_send(attempt_b, timeout_seconds=5), actor=operator
    )
    assert (record.attempt_number, record.execution_status) == (2, "delivered")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, delivery.lease_owner) == (
        "delivered",
        2,
        "",
    )
    assert evidence_verify().ok is True


def test_concurrent_planners_never_deadlock_and_leave_one_pending_decision_each(
    operator, live_receiver
):
    # given 40 failed deliveries and a first plan of them
    deliveries = _failed_deliveries(operator, live_receiver, 40)
    retry_plan_create(actor=operator, policy=IMMEDIATE)

    # when eight planners plan the same deliveries five times each, all at once
    def plan_five_times():
        for _ in range(5):
            retry_plan_create(actor=operator, policy=IMMEDIATE)

    errors = _run_threads([plan_five_times] * 8)

    # then none of them failed (no deadlock, no lock timeout), and every delivery has exactly
    # one pending decision: the one of the last plan, the 40 others superseded
    assert errors == []
    pending = Counter(
        RetryDecision.objects.filter(status="pending").values_list("delivery_id", flat=True)
    )
    assert pending == Counter({delivery.pk: 1 for delivery in deliveries})
    assert RetryDecision.objects.filter(status="superseded").count() == 40 * 40
    last = RetryDecision.objects.filter(status="pending").values_list("plan_id", flat=True)
    assert set(last) == {RetryPlan.objects.latest("generated_at", "id").pk}
