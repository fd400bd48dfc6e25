"""Worker behaviour that a deployment with many workers relies on: circuit breakers, stopping
cleanly, reaping abandoned runs, batches, superseded attempts and idempotency-key pruning."""

from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.ledger import evidence_verify
from closure.models import (
    AlertDelivery,
    ConnectorCircuit,
    Evidence,
    ExecutionRecord,
    IdempotencyRecord,
    RetryDecision,
    WorkerRun,
)
from closure.selectors import closure_dashboard
from closure.services.alerts import health_alert_send
from closure.services.health import HealthParameters, health_report_build
from closure.services.idempotency import idempotency_begin
from closure.services.retries import RetryPolicy, retry_plan_create
from closure.worker import Worker, WorkerOptions, worker_run_execute
from tests.factories import make_connector
from tests.receivers import Answer, LocalReceiver

pytestmark = pytest.mark.django_db

IMMEDIATE = RetryPolicy(retry_delay_minutes=0, allow_immediate_retry=True, max_retry_attempts=10)


@pytest.fixture
def local_receiver():
    with LocalReceiver(lambda request: Answer(status=500, body=b"down")) as receiver:
        yield receiver


def _failed(operator, receiver, names):
    """One alert to each named connector, every first attempt failing (500)."""
    for name in names:
        make_connector(name, receiver.url_for(f"/{name}"))
    report = health_report_build(actor=operator, parameters=HealthParameters())
    result = health_alert_send(actor=operator, health_id=report.health_id)
    assert [d.status for d, _ in result.attempts] == ["failed"] * len(names)
    return report


def _live(operator, **options):
    return worker_run_execute(
        actor=operator, options=WorkerOptions(execute=True, retry_policy=IMMEDIATE, **options)
    )


def test_circuit_opens_after_consecutive_failures_and_stops_calls(
    operator, local_receiver, settings
):
    # given a threshold of 2 failures and a connector that keeps failing
    settings.CAVRA_CIRCUIT_FAILURE_THRESHOLD = 2
    _failed(operator, local_receiver, ["dead-hook"])
    assert ConnectorCircuit.objects.get().state == "closed"

    # when a live run fails the second attempt
    outcome = _live(operator)

    # then the circuit opens, with its evidence, and the dashboard shows it
    assert outcome.run.summary["failed_count"] == 1
    circuit = ConnectorCircuit.objects.get()
    assert (circuit.state, circuit.consecutive_failures) == ("open", 2)
    transition = Evidence.objects.get(metadata_kind=MetadataKind.CONNECTOR_CIRCUIT)
    assert transition.payload["subject"]["previous_state"] == "closed"
    assert transition.payload["subject"]["state"] == "open"
    assert transition.payload["subject"]["cause"] == "consecutive_failures"
    dashboard = closure_dashboard()
    risk = next(r for r in dashboard["risks"] if r["code"].endswith("circuit_open"))
    assert (risk["severity"], risk["count"], risk["refs"]) == ("warning", 1, ["dead-hook"])

    # when the next run comes during the cool-down
    requests_before = len(local_receiver.requests)
    outcome = _live(operator)

    # then the connector is not called and the decision waits, pending
    assert len(local_receiver.requests) == requests_before
    assert outcome.run.status == "no_work"
    assert RetryDecision.objects.filter(status="pending", action="retry").count() == 1
    assert AlertDelivery.objects.get().status == "failed"


def test_circuit_lets_one_probe_through_after_the_cool_down_and_closes_on_success(
    operator, local_receiver, settings
):
    # given an open circuit on a connector with two failed deliveries
    settings.CAVRA_CIRCUIT_FAILURE_THRESHOLD = 2
    _failed(operator, local_receiver, ["dead-hook"])
    second = health_report_build(actor=operator, parameters=HealthParameters())
    health_alert_send(actor=operator, health_id=second.health_id)
    assert ConnectorCircuit.objects.get().state == "open"
    assert AlertDelivery.objects.filter(status="failed").count() == 2

    cool_down = timedelta(seconds=settings.CAVRA_CIRCUIT_COOLDOWN_SECONDS + 1)

    # when the cool-down is over but the connector still fails
    with time_machine.travel(timezone.now() + cool_down, tick=True):
        probe_run = _live(operator)

    # then exactly one probe went out, not two, and the circuit opened again
    assert probe_run.run.summary["failed_count"] == 1
    assert len(local_receiver.requests) == 2 + 1
    assert ConnectorCircuit.objects.get().state == "open"

    # when the next cool-down is over and the receiver works again
    local_receiver.answer = lambda request: Answer(status=200, body=b"ok")
    with time_machine.travel(timezone.now() + 2 * cool_down, tick=True):
        recovery_run = _live(operator)

    # then the probe delivered, closed the circuit, and the same run delivered the rest
    assert recovery_run.run.summary["delivered_count"] == 2
    assert len(local_receiver.requests) == 3 + 2
    circuit = ConnectorCircuit.objects.get()
    assert (circuit.state, circuit.consecutive_failures) == ("closed", 0)
    states = [
        e.payload["subject"]["state"]
        for e in Evidence.objects.filter(metadata_kind=MetadataKind.CONNECTOR_CIRCUIT).order_by(
            "sequence"
        )
    ]
    assert states == ["open", "half_open", "open", "half_open", "closed"]
    assert AlertDelivery.objects.filter(status="delivered").count() == 2
    assert evidence_verify().ok is True


def test_worker_stop_finishes_the_current_attempt_and_releases_the_rest(operator, local_receiver):
    # given three due retries
    _failed(operator, local_receiver, ["hook-a", "hook-b", "hook-c"])
    local_receiver.answer = lambda request: Answer(status=200, body=b"ok")
    retry_plan_create(actor=operator, policy=IMMEDIATE)
    stop_after_first = iter([False, True, True, True])

    # when the worker is asked to stop after its first attempt
    outcome = Worker(
        actor=operator,
        options=WorkerOptions(execute=True, retry_policy=IMMEDIATE, send_concurrency=1),
        should_stop=lambda: next(stop_after_first),
    ).run()

    # then one attempt was made and recorded, and the other two went back, unleased
    assert outcome.run.summary["delivered_count"] == 1
    assert outcome.run.summary["stopped_early"] is True
    assert outcome.run.status == "succeeded"
    assert len(local_receiver.requests) == 3 + 1
    pending = RetryDecision.objects.filter(status="pending", action="retry")
    assert pending.count() == 2
    assert all(d.claimed_by_run_id is None for d in pending)
    assert AlertDelivery.objects.filter(status="failed", lease_owner="").count() == 2


def test_worker_reaps_an_abandoned_run_and_claims_its_decision_again(
    operator, local_receiver, settings
):
    # given a live run that claimed a decision and died (no heartbeat, lease held)
    _failed(operator, local_receiver, ["hook-a"])
    retry_plan_create(actor=operator, policy=IMMEDIATE)
    dead = Worker(actor=operator, options=WorkerOptions(execute=True, retry_policy=IMMEDIATE))
    from django.db import transaction

    with transaction.atomic():
        dead_run = dead._create_run(None, timezone.now(), dry_run=False)
    [(claim, _)], _ = dead._claim(dead_run, 10)
    delivery = AlertDelivery.objects.get()
    assert delivery.lease_owner == dead_run.run_id
    local_receiver.answer = lambda request: Answer(status=200, body=b"ok")

    # when another worker runs after the lease has expired
    later = timezone.now() + timedelta(seconds=settings.CAVRA_ATTEMPT_LEASE_SECONDS + 1)
    with time_machine.travel(later, tick=True):
        outcome = _live(operator)

    # then the dead run is abandoned with evidence, and its decision was retried and delivered
    dead_run.refresh_from_db()
    assert dead_run.status == "abandoned"
    abandoned = Evidence.objects.filter(
        metadata_kind=MetadataKind.WORKER_RUN, session_id=dead_run.run_id
    ).get()
    assert abandoned.payload["subject"]["status"] == "abandoned"
    assert outcome.run.summary["delivered_count"] == 1
    record = ExecutionRecord.objects.get(worker_run=outcome.run)
    assert (record.execution_status, record.attempt_number) == ("delivered", 2)
    # the resend kept the delivery's webhook-id
    assert local_receiver.requests[-1].headers["webhook-id"] == delivery.delivery_id

    # and the paused worker, waking up, cannot commit: its lease is gone
    result = dead._attempt(dead_run, claim, {"delivery_id": delivery.delivery_id})
    assert result.skipped == "lease_lost"
    assert result.execution is None
    assert len(local_receiver.requests) == 2
    assert ExecutionRecord.objects.filter(delivery=delivery).count() == 2


def test_worker_claims_in_batches_up_to_the_maximum(operator, local_receiver):
    # given five due retries
    _failed(operator, local_receiver, [f"hook-{n}" for n in range(5)])
    local_receiver.answer = lambda request: Answer(status=200, body=b"ok")

    # when a run may take four, two per claim
    outcome = _live(operator, max_retry_deliveries=4, batch_size=2)

    # then four were delivered over two claims and one is left for the next run
    assert outcome.run.summary["delivered_count"] == 4
    assert outcome.run.parameters["batch_size"] == 2
    assert len({r.execution.execution_id for r in outcome.results}) == 4
    assert RetryDecision.objects.filter(status="pending", action="retry").count() == 1


def test_prune_idempotency_keys_deletes_only_expired_keys(operator, capsys):
    idempotency_begin(user=operator, key="old", fingerprint="a" * 64)
    idempotency_begin(user=operator, key="fresh", fingerprint="b" * 64)
    IdempotencyRecord.objects.filter(key="old").update(expires_at=timezone.now())

    call_command("prune_idempotency_keys")

    assert capsys.readouterr().out.strip() == "pruned 1 expired idempotency keys"
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["fresh"]


def test_worker_run_count_is_unchanged_by_a_dry_run_of_the_circuit(operator, local_receiver):
    # a dry run never touches circuits: no row, no transition
    _failed(operator, local_receiver, ["hook-a"])
    circuits_before = list(ConnectorCircuit.objects.values_list("state", "consecutive_failures"))

    worker_run_execute(actor=operator, options=WorkerOptions(retry_policy=IMMEDIATE))

    assert list(ConnectorCircuit.objects.values_list("state", "consecutive_failures")) == (
        circuits_before
    )
    assert WorkerRun.objects.get().dry_run is True
