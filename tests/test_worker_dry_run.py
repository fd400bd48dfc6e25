"""A dry run shows what a live run would do, and a Retry-After date is never run early."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import time_machine

from closure.connectors.http import parse_retry_after
from closure.models import Connector, ConnectorCircuit, ExecutionRecord, RetryDecision, WorkerRun
from closure.services.retries import RetryPolicy, retry_plan_create
from closure.worker import WorkerOptions, worker_run_execute
from tests.receivers import Answer, LocalReceiver
from tests.test_worker_scale import _failed

pytestmark = pytest.mark.django_db

IMMEDIATE = RetryPolicy(retry_delay_minutes=0, allow_immediate_retry=True, max_retry_attempts=10)


@pytest.fixture
def failing_receiver():
    with LocalReceiver(lambda request: Answer(status=500, body=b"down")) as receiver:
        yield receiver


def _dry(operator, **options):
    return worker_run_execute(
        actor=operator, options=WorkerOptions(retry_policy=IMMEDIATE, **options)
    )


@pytest.mark.parametrize("with_plan", [False, True], ids=["preview", "stored-plan"])
def test_dry_run_holds_retries_whose_connector_circuit_is_open(
    operator, failing_receiver, with_plan
):
    # given two failed deliveries, one to a connector whose circuit is open for ten minutes
    _failed(operator, failing_receiver, ["open-hook", "fine-hook"])
    open_hook = ConnectorCircuit.objects.get(connector__name="open-hook")
    ConnectorCircuit.objects.filter(pk=open_hook.pk).update(
        state="open", open_until=datetime.now(UTC) + timedelta(minutes=10)
    )
    plan_id = ""
    if with_plan:
        plan, _ = retry_plan_create(actor=operator, policy=IMMEDIATE, providers=[])
        plan_id = plan.retry_plan_id
    requests_before = len(failing_receiver.requests)
    records_before = ExecutionRecord.objects.count()

    # when an operator asks for a dry run
    outcome = _dry(operator, retry_plan_id=plan_id)

    # then only the retry a live run would send is selected; the other is held with its reason
    assert [d["provider"] for d in outcome.run.selected_retries] == ["fine-hook"]
    held = {r.decision["provider"]: r.skipped for r in outcome.results}
    assert held == {"open-hook": "circuit_open", "fine-hook": ""}
    summary = outcome.run.summary
    assert (summary["selected_retry_count"], summary["skipped_count"]) == (1, 0)
    assert summary["held_retry_count"] == 1
    # and nothing was sent, recorded or claimed
    assert len(failing_receiver.requests) == requests_before
    assert ExecutionRecord.objects.count() == records_before
    assert set(RetryDecision.objects.values_list("status", flat=True)) <= {"pending", "done"}
    assert ConnectorCircuit.objects.get(pk=open_hook.pk).state == "open"


def test_dry_run_selects_a_connector_whose_cool_down_is_over(operator, failing_receiver):
    # given an open circuit whose cool-down ended a minute ago (a live run would send a probe)
    _failed(operator, failing_receiver, ["cooled-hook"])
    ConnectorCircuit.objects.update(
        state="open", open_until=datetime.now(UTC) - timedelta(minutes=1)
    )

    # when a dry run looks at it
    outcome = _dry(operator)

    # then it would be sent, and the circuit is left as it was
    assert [d["provider"] for d in outcome.run.selected_retries] == ["cooled-hook"]
    assert outcome.run.summary["held_retry_count"] == 0
    assert ConnectorCircuit.objects.get().state == "open"


def test_dry_run_predicts_the_skip_of_a_delivery_whose_connector_was_disabled(
    operator, failing_receiver
):
    # given a stored plan with a due retry, and the connector disabled after planning
    _failed(operator, failing_receiver, ["gone-hook"])
    plan, _ = retry_plan_create(actor=operator, policy=IMMEDIATE, providers=[])
    Connector.objects.filter(name="gone-hook").update(enabled=False)

    # when a dry run of that plan runs
    outcome = _dry(operator, retry_plan_id=plan.retry_plan_id)

    # then it says the live run would skip it, and why, and selects nothing
    assert [(r.decision["provider"], r.skipped) for r in outcome.results] == [
        ("gone-hook", "connector_disabled")
    ]
    assert outcome.run.selected_retries == []
    assert outcome.run.summary["skipped_count"] == 1
    assert outcome.run.status == "no_work"
    assert WorkerRun.objects.get().dry_run is True


@pytest.mark.parametrize("fraction_us", [1, 400_000, 999_999])
def test_retry_after_date_is_rounded_up_so_the_retry_never_comes_early(settings, fraction_us):
    # given a receiver that allows a retry at a whole-second HTTP date, 90 s ahead
    settings.CAVRA_RETRY_AFTER_MAX_SECONDS = 3600
    allowed = datetime(2026, 3, 2, 9, 31, 30, tzinfo=UTC)
    now = allowed - timedelta(seconds=90) + timedelta(microseconds=fraction_us)

    # when the header is parsed a fraction of a second after the whole second
    with time_machine.travel(now, tick=False):
        seconds = parse_retry_after(format_datetime(allowed, usegmt=True))

    # then the wait reaches the allowed instant, not a second before it
    assert seconds == 90
    assert now + timedelta(seconds=seconds) >= allowed
