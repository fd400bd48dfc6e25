"""Query counts of the live retry worker: a wave of attempts is claimed, renewed and recorded
in a fixed number of statements, however many attempts the wave holds."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from closure.choices import MetadataKind
from closure.connectors import SendOutcome
from closure.evidence.ledger import evidence_verify
from closure.models import AlertDelivery, Evidence, ExecutionRecord, RetryDecision
from closure.services.attempts import attempts_claim, attempts_record
from closure.worker import Worker, WorkerOptions
from tests.conftest import using_postgres
from tests.factories import (
    make_alert,
    make_connector,
    make_decision,
    make_delivery,
    make_execution,
    make_retry_plan,
)
from tests.receivers import Answer, LocalReceiver

pytestmark = pytest.mark.django_db

CONNECTORS = 2


@pytest.fixture
def live_receiver():
    with LocalReceiver() as receiver:
        yield receiver


def _due_retries(operator, report, base_url, count):
    """`count` failed deliveries over two connectors, each with a due `retry` decision."""
    an_hour_ago = timezone.now() - timedelta(hours=1)
    connectors = [make_connector(f"hook-{n}", f"{base_url}/hook/{n}") for n in range(CONNECTORS)]
    plan = make_retry_plan(actor=operator, alert_level="critical")
    for number in range(count):
        if number % CONNECTORS == 0:
            alert = make_alert(report=report, actor=operator, created_at=an_hour_ago)
        delivery = make_delivery(
            alert=alert, connector=connectors[number % CONNECTORS], created_at=an_hour_ago
        )
        make_execution(delivery=delivery, actor=operator, executed_at=an_hour_ago)
        make_decision(plan=plan, delivery=delivery, next_retry_at=an_hour_ago)
    return plan


def _one_wave(operator, plan, count) -> Worker:
    """A live run whose one claim and one wave take all `count` decisions."""
    return Worker(
        actor=operator,
        options=WorkerOptions(
            execute=True,
            retry_plan_id=plan.retry_plan_id,
            max_retry_deliveries=count,
            send_concurrency=count,
        ),
    )


# Statements of a live run of one wave (the test runs in a transaction, so every durable
# transaction of the worker is a SAVEPOINT … RELEASE pair):
#   reap stale runs: savepoint, select stale runs, release in-flight decisions, release   4
#   the named plan and its evidence row                                                  2
#   create the run: savepoint, insert, release                                           3
#   claim: savepoint, lock due decisions, lock their deliveries, create missing circuits,
#          lock circuits, heartbeat, mark decisions in flight, take the leases, release  9
#   (no renewal: the wave goes out right after its claim)
#   load connectors and payloads for the sends                                           1
#   record: savepoint, lock deliveries, lock decisions, insert execution records,
#           count the attempts on the deliveries, close the decisions, lock circuits,
#           ledger head, insert evidence rows, release                                   10
#   finish the run: savepoint, lock the run (with its user and plan), update it,
#           ledger head, insert its evidence row, release                                6
# On PostgreSQL each of the two evidence appends also takes the ledger's advisory lock.
ONE_WAVE_QUERIES = 4 + 2 + 3 + 9 + 1 + 10 + 6


@pytest.mark.parametrize("count", [3, 8])
def test_worker_wave_of_attempts_issues_the_same_queries_whatever_its_size(
    operator, report, live_receiver, django_assert_num_queries, count
):
    # given `count` due retries to a receiver that answers 200
    plan = _due_retries(operator, report, live_receiver.url, count)
    worker = _one_wave(operator, plan, count)
    evidence_before = Evidence.objects.count()

    # when one live run sends them all in one wave
    expected = ONE_WAVE_QUERIES + (2 if using_postgres() else 0)
    with django_assert_num_queries(expected):
        outcome = worker.run()

    # then each attempt was sent once and has its own record, evidence row and decision state
    assert len(live_receiver.requests) == count
    assert outcome.run.status == "succeeded"
    assert outcome.run.summary["delivered_count"] == count
    records = ExecutionRecord.objects.filter(trigger="retry")
    assert records.count() == count
    assert set(records.values_list("execution_status", "attempt_number", "worker_run")) == {
        ("delivered", 2, outcome.run.pk)
    }
    rows = Evidence.objects.filter(sequence__gt=evidence_before).order_by("sequence")
    kinds = [row.metadata_kind for row in rows]
    assert kinds == [MetadataKind.EXECUTION_RECORD] * count + [MetadataKind.WORKER_RUN]
    assert {row.session_id for row in rows[:count]} == set(
        records.values_list("execution_id", flat=True)
    )
    assert {row.payload["subject"]["worker_run_id"] for row in rows[:count]} == {outcome.run.run_id}
    assert set(RetryDecision.objects.values_list("status", flat=True)) == {"executed"}
    assert set(
        AlertDelivery.objects.values_list(
            "status", "attempt_count", "lease_owner", "leased_until", "lease_version"
        )
    ) == {("delivered", 2, "", None, 1)}
    assert evidence_verify().ok is True


# A further wave of the same claim: renew (savepoint, heartbeat, renew the leases, release),
# load its connectors and payloads, and record it as above.
FURTHER_WAVE_QUERIES = 4 + 1 + 10


def test_worker_further_wave_adds_a_fixed_number_of_queries(
    operator, report, live_receiver, django_assert_num_queries
):
    # given 6 due retries, claimed together and sent 3 at a time
    plan = _due_retries(operator, report, live_receiver.url, 6)
    worker = Worker(
        actor=operator,
        options=WorkerOptions(
            execute=True,
            retry_plan_id=plan.retry_plan_id,
            max_retry_deliveries=6,
            send_concurrency=3,
        ),
    )

    # when one live run sends them in two waves
    expected = ONE_WAVE_QUERIES + FURTHER_WAVE_QUERIES + (3 if using_postgres() else 0)
    with django_assert_num_queries(expected):
        outcome = worker.run()

    # then every attempt was sent once and recorded once
    assert len(live_receiver.requests) == 6
    assert outcome.run.summary["delivered_count"] == 6
    records = ExecutionRecord.objects.filter(trigger="retry", execution_status="delivered")
    assert records.count() == 6
    assert Evidence.objects.filter(metadata_kind=MetadataKind.EXECUTION_RECORD).count() == 6
    assert set(RetryDecision.objects.values_list("status", flat=True)) == {"executed"}
    assert evidence_verify().ok is True


def test_worker_wave_with_mixed_outcomes_counts_each_attempt_and_each_circuit_once(
    operator, report, live_receiver, django_assert_num_queries, settings
):
    # given 8 due retries over two connectors; hook-0 answers 500, hook-1 answers 200, and
    # four failures in a row open a circuit
    settings.CAVRA_CIRCUIT_FAILURE_THRESHOLD = 4
    plan = _due_retries(operator, report, live_receiver.url, 8)
    live_receiver.answer = lambda request: Answer(
        status=500 if request.path == "/hook/0" else 200, body=b"ok"
    )
    worker = _one_wave(operator, plan, 8)
    evidence_before = Evidence.objects.count()

    # when one live run sends them all in one wave
    # (one UPDATE of deliveries per distinct outcome: delivered and failed, and one UPDATE of
    # the circuit that changed; the healthy connector's circuit is not written)
    expected = ONE_WAVE_QUERIES + 1 + 1 + (2 if using_postgres() else 0)
    with django_assert_num_queries(expected):
        outcome = worker.run()

    # then every attempt is recorded with its own outcome
    assert (outcome.run.status, outcome.run.summary["failed_count"]) == ("partial", 4)
    by_provider = {
        provider: sorted(statuses)
        for provider, statuses in [
            ("hook-0", AlertDelivery.objects.filter(provider="hook-0").values_list("status")),
            ("hook-1", AlertDelivery.objects.filter(provider="hook-1").values_list("status")),
        ]
    }
    assert by_provider == {"hook-0": [("failed",)] * 4, "hook-1": [("delivered",)] * 4}
    assert set(AlertDelivery.objects.values_list("attempt_count", flat=True)) == {2}
    assert (
        sorted(
            ExecutionRecord.objects.filter(trigger="retry").values_list("provider", "error_class")
        )
        == [("hook-0", "http_5xx")] * 4 + [("hook-1", "")] * 4
    )
    # and the circuit opened once, its evidence right after the attempt that opened it
    rows = list(Evidence.objects.filter(sequence__gt=evidence_before).order_by("sequence"))
    circuit_rows = [r for r in rows if r.metadata_kind == MetadataKind.CONNECTOR_CIRCUIT]
    assert [r.payload["subject"]["state"] for r in circuit_rows] == ["open"]
    assert circuit_rows[0].payload["subject"]["consecutive_failures"] == 4
    after = rows[rows.index(circuit_rows[0]) + 1]
    assert after.metadata_kind == MetadataKind.EXECUTION_RECORD
    assert after.payload["subject"]["provider"] == "hook-0"
    assert len(rows) == 8 + 1 + 1  # attempts, circuit transition, run
    assert evidence_verify().ok is True


def test_attempts_record_fences_each_attempt_of_a_wave_on_its_own(operator, report):
    # given a wave of three claimed attempts, one of whose leases was taken over meanwhile
    plan = _due_retries(operator, report, "https://hooks.example.invalid", 3)
    decisions = list(RetryDecision.objects.filter(plan=plan).select_related("delivery"))
    with transaction.atomic():
        claims = attempts_claim(
            deliveries=[d.delivery for d in decisions],
            owner="test-run",
            trigger="retry",
            now=timezone.now(),
            decision_pks=[d.pk for d in decisions],
        )
    taken = claims[1]
    AlertDelivery.objects.filter(pk=taken.delivery_pk).update(lease_version=taken.lease_version + 1)
    delivered = SendOutcome(delivered=True, http_status=200)

    # when the wave's outcomes are recorded together
    records = attempts_record(sent=[(claim, delivered) for claim in claims], actor=operator)

    # then the taken-over attempt is superseded and changes nothing (its delivery stays failed,
    # its decision stays as it was); the others count
    assert [r.execution_status for r in records] == ["delivered", "superseded", "delivered"]
    statuses = dict(AlertDelivery.objects.values_list("pk", "status"))
    assert [statuses[c.delivery_pk] for c in claims] == ["delivered", "failed", "delivered"]
    decision_statuses = dict(RetryDecision.objects.values_list("pk", "status"))
    assert [decision_statuses[c.decision_pk] for c in claims] == ["executed", "pending", "executed"]
    assert Evidence.objects.filter(metadata_kind=MetadataKind.EXECUTION_RECORD).count() == 3
    assert evidence_verify().ok is True
