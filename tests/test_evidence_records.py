"""Records agree with the ledger: a record changed outside the product is named.

The fixture walks the whole flow through the real services (connectors, ingest, health, alert,
failures that open circuits, plans that wait, exhaust and retry, a waiver, a live and a dry
worker run, acknowledgements, a closure review); each test then edits one record in the
database, as someone with database access would, and checks what verification says.
"""

import json
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from werkzeug import Response

from closure.choices import EventKind, EventStatus, MetadataKind
from closure.evidence.records import evidence_records_verify
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    Connector,
    ConnectorCircuit,
    Evidence,
    ExecutionRecord,
    HealthAlert,
    HealthReport,
    RetryDecision,
    RetryPlan,
    WorkerRun,
)
from closure.services.alerts import acknowledgement_create, delivery_waive, health_alert_send
from closure.services.connectors import connector_save
from closure.services.events import delivery_events_ingest
from closure.services.health import HealthParameters, health_report_build
from closure.services.retries import RetryPolicy, retry_plan_create
from closure.services.reviews import closure_review_create
from closure.worker import WorkerOptions, worker_run_execute
from tests.conftest import assert_invalid, client_for, closure_counts
from tests.test_evidence import SET_PAYLOAD, _tamper

CONNECTORS = ("ops-webhook", "pager-hook", "chat-hook")
EVERY_KIND = {
    "HealthReport": 1,
    "HealthAlert": 1,
    "AlertDelivery": 3,
    "ExecutionRecord": 4,
    "Acknowledgement": 2,
    "RetryPlan": 3,
    "WorkerRun": 2,
    "Connector": 3,
    "ConnectorCircuit": 3,
    "ClosureReview": 1,
}


@pytest.fixture
def ledger_flow(settings, operator, platform_owner, receiver):
    """The flow through the services: every record kind, written with its evidence.

    ops-webhook fails, then delivers on a worker retry (its circuit opens, half-opens, closes);
    pager-hook fails and is waived; chat-hook fails, is exhausted by a plan, then suppressed by
    an acknowledgement. Returns the records by name.
    """
    settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS = True
    settings.CAVRA_CIRCUIT_FAILURE_THRESHOLD = 1
    for name in CONNECTORS:
        connector_save(
            actor=platform_owner,
            name=name,
            kind="webhook",
            private_config={"url": receiver.url_for(f"/{name}")},
        )
    now = timezone.now()
    delivery_events_ingest(
        actor=operator,
        events=[
            {
                "event_id": "run-1",
                "kind": EventKind.RETRY_WORKER_RUN,
                "status": EventStatus.SUCCEEDED,
                "occurred_at": now - timedelta(minutes=5),
                "provider": "",
                "run_id": "",
                "executive_report_id": "",
                "schedule_enabled": True,
                "details": {},
            },
            {
                "event_id": "delivery-1",
                "kind": EventKind.REPORT_DELIVERY,
                "status": EventStatus.FAILED,
                "occurred_at": now - timedelta(minutes=3),
                "provider": "slack-exec",
                "run_id": "drill-7",
                "executive_report_id": "exec-7",
                "schedule_enabled": None,
                "details": {"attempt": 1},
            },
        ],
    )
    report = health_report_build(actor=operator, parameters=HealthParameters())
    for name in CONNECTORS:
        receiver.expect_oneshot_request(f"/{name}").respond_with_data("down", status=503)
    sent = health_alert_send(actor=operator, health_id=report.health_id)
    deliveries = {delivery.provider: delivery for delivery, _ in sent.attempts}
    ops, pager, chat = (deliveries[name] for name in CONNECTORS)
    retry_plan_create(actor=operator, policy=RetryPolicy())
    delivery_waive(actor=operator, delivery_id=pager.delivery_id, reason="paged by phone")
    retry_plan_create(
        actor=operator, policy=RetryPolicy(max_retry_attempts=1), providers=["chat-hook"]
    )
    with time_machine.travel(timezone.now() + timedelta(minutes=20), tick=True):
        plan = retry_plan_create(actor=operator, policy=RetryPolicy())[0]
        worker_run_execute(actor=operator, options=WorkerOptions(retry_plan_id=plan.retry_plan_id))
        receiver.expect_oneshot_request("/ops-webhook").respond_with_response(Response("ok"))
        worker_run_execute(
            actor=operator,
            options=WorkerOptions(execute=True, retry_plan_id=plan.retry_plan_id),
        )
        acknowledgement_create(
            actor=operator,
            health_id=report.health_id,
            provider="ops-webhook",
            state="acknowledged",
            external_ref="INC-7",
            notes="paged the on-call",
        )
        acknowledgement_create(
            actor=operator, health_id=report.health_id, provider="chat-hook", state="resolved"
        )
        review = closure_review_create(
            actor=operator,
            decision="accept_open_risks",
            risk_notes={
                "executive_retry_health_alert_connector_circuit_open": "two channels retired"
            },
            note="closed after the drill",
        )
    return {
        "report": report,
        "alert": sent.alert,
        "ops": ops,
        "pager": pager,
        "chat": chat,
        "plan": plan,
        "review": review,
    }


def mismatches() -> list[dict]:
    return [m.as_dict() for m in evidence_records_verify().mismatches]


def sequence_of(session_id: str) -> int:
    return Evidence.objects.filter(session_id=session_id).order_by("-sequence")[0].sequence


def test_records_verify_an_untouched_flow_is_ok(ledger_flow):
    # given the whole flow written by the services

    # when the records are verified
    result = evidence_records_verify()

    # then every record agrees with its latest evidence
    assert result.as_dict() == {
        "ok": True,
        "checked": EVERY_KIND,
        "mismatch_count": 0,
        "mismatches": [],
    }
    flow = ledger_flow
    assert AlertDelivery.objects.get(pk=flow["ops"].pk).status == "delivered"
    assert AlertDelivery.objects.get(pk=flow["pager"].pk).suppression_reason == "waived"
    assert AlertDelivery.objects.get(pk=flow["chat"].pk).suppression_reason == "acknowledged"
    assert set(ConnectorCircuit.objects.values_list("state", flat=True)) == {"closed", "open"}


def latest_sequence(session_id: str, kind: str = "") -> int:
    rows = Evidence.objects.filter(session_id=session_id)
    if kind:
        rows = rows.filter(metadata_kind=kind)
    return rows.order_by("-sequence").values_list("sequence", flat=True)[0]


def assert_named(model: str, public_id: str, fields: list[str], sequence: int | None) -> None:
    """Verification fails and names exactly this record, nothing else."""
    result = evidence_records_verify()
    assert result.ok is False
    assert result.mismatch_count == 1
    assert [m.as_dict() for m in result.mismatches] == [
        {"model": model, "public_id": public_id, "fields": fields, "sequence": sequence}
    ]


def test_records_verify_names_an_edited_health_report(ledger_flow):
    # given a report whose level was lowered in the database
    report = ledger_flow["report"]
    HealthReport.objects.filter(pk=report.pk).update(alert_level="healthy", alert_count=0)

    # when / then verification names the report, both fields and its evidence row
    assert_named(
        "HealthReport",
        report.health_id,
        ["alert_level", "alert_count"],
        latest_sequence(report.health_id),
    )


def test_records_verify_names_an_edited_alert(ledger_flow):
    # given an alert marked forced after the fact
    alert = ledger_flow["alert"]
    HealthAlert.objects.filter(pk=alert.pk).update(forced=True)

    # when / then
    assert_named("HealthAlert", alert.alert_id, ["forced"], latest_sequence(alert.alert_id))


def test_records_verify_names_an_edited_alert_message(ledger_flow):
    # given an alert whose stored message (what connectors render) now says healthy
    alert = HealthAlert.objects.get(pk=ledger_flow["alert"].pk)
    HealthAlert.objects.filter(pk=alert.pk).update(
        payload={**alert.payload, "alert_level": "healthy"}
    )

    # when / then
    assert_named("HealthAlert", alert.alert_id, ["payload"], latest_sequence(alert.alert_id))


def test_records_verify_names_a_delivery_whose_status_was_edited(ledger_flow):
    # given the delivered delivery set back to failed
    ops = ledger_flow["ops"]
    AlertDelivery.objects.filter(pk=ops.pk).update(status="failed", delivered_at=None)
    retry = ExecutionRecord.objects.get(delivery=ops, attempt_number=2)

    # when / then it is named against its latest change: the delivered attempt
    assert_named(
        "AlertDelivery",
        ops.delivery_id,
        ["status", "delivered_at"],
        latest_sequence(retry.execution_id),
    )


def test_records_verify_names_a_waived_delivery_whose_note_was_edited(ledger_flow):
    # given the waiver's reason rewritten on the delivery
    pager = ledger_flow["pager"]
    AlertDelivery.objects.filter(pk=pager.pk).update(suppression_note="never mind")

    # when / then it is named against the waiver's evidence row
    assert_named(
        "AlertDelivery", pager.delivery_id, ["suppression_note"], latest_sequence(pager.delivery_id)
    )


def test_records_verify_names_a_suppressed_delivery_whose_attempts_were_edited(ledger_flow):
    # given the delivery an acknowledgement suppressed, with one attempt more and re-opened
    chat = ledger_flow["chat"]
    AlertDelivery.objects.filter(pk=chat.pk).update(
        attempt_count=2, status="exhausted", suppression_reason=""
    )
    ack = Acknowledgement.objects.get(provider="chat-hook")

    # when / then it is named against the acknowledgement that suppressed it
    assert_named(
        "AlertDelivery",
        chat.delivery_id,
        ["status", "suppression_reason", "attempt_count"],
        latest_sequence(ack.ack_id),
    )


def test_records_verify_names_a_delivery_moved_to_an_alert_without_evidence(ledger_flow, operator):
    # given an alert inserted straight into the table, and a delivery re-pointed at it
    from tests.factories import make_alert

    ops = ledger_flow["ops"]
    other = make_alert(report=ledger_flow["report"], actor=operator)
    AlertDelivery.objects.filter(pk=ops.pk).update(alert=other)

    # when
    result = evidence_records_verify()

    # then both are named: no evidence row speaks for either
    assert [m.as_dict() for m in result.mismatches] == [
        {"model": "HealthAlert", "public_id": other.alert_id, "fields": [], "sequence": None},
        {"model": "AlertDelivery", "public_id": ops.delivery_id, "fields": [], "sequence": None},
    ]


def test_records_verify_names_an_execution_record_whose_status_was_edited(ledger_flow):
    # given chat-hook's failed first attempt rewritten as delivered
    record = ExecutionRecord.objects.get(provider="chat-hook")
    ExecutionRecord.objects.filter(pk=record.pk).update(
        execution_status="delivered", http_status=200, error_class=""
    )

    # when / then only the record is named: the delivery's state comes from the ledger
    assert_named(
        "ExecutionRecord",
        record.execution_id,
        ["execution_status", "http_status", "error_class"],
        latest_sequence(record.execution_id),
    )


def test_records_verify_names_an_acknowledgement_whose_notes_were_edited(ledger_flow):
    # given the notes of an acknowledgement rewritten (the ledger holds only their hash)
    ack = Acknowledgement.objects.get(provider="ops-webhook")
    Acknowledgement.objects.filter(pk=ack.pk).update(notes="nobody was paged")

    # when / then
    assert_named("Acknowledgement", ack.ack_id, ["notes"], latest_sequence(ack.ack_id))


def test_records_verify_names_an_acknowledgement_whose_notes_were_added_before_the_hash(
    ledger_flow,
):
    # given an acknowledgement recorded before the ledger held the notes' hash: only whether
    # there were notes can be checked (its evidence row is rewritten to look like one, the
    # append-only trigger disabled for that statement on PostgreSQL)
    ack = Acknowledgement.objects.get(provider="chat-hook")
    Acknowledgement.objects.filter(pk=ack.pk).update(notes="added later")
    row = Evidence.objects.get(session_id=ack.ack_id)
    subject = {k: v for k, v in row.payload["subject"].items() if k != "notes_sha256"}
    _tamper(SET_PAYLOAD, [json.dumps({**row.payload, "subject": subject}), row.sequence])

    # when / then
    assert_named("Acknowledgement", ack.ack_id, ["notes"], row.sequence)


def test_records_verify_names_an_edited_retry_plan(ledger_flow):
    # given a plan whose policy was edited
    plan = ledger_flow["plan"]
    RetryPlan.objects.filter(pk=plan.pk).update(policy={**plan.policy, "max_retry_attempts": 9})

    # when / then
    assert_named("RetryPlan", plan.retry_plan_id, ["policy"], latest_sequence(plan.retry_plan_id))


def test_records_verify_names_an_edited_retry_decision(ledger_flow):
    # given one decision of a plan moved to another time
    plan = ledger_flow["plan"]
    decision = RetryDecision.objects.select_related("delivery").get(plan=plan)
    RetryDecision.objects.filter(pk=decision.pk).update(next_retry_at=None, retry_count=0)

    # when / then it is named by plan and delivery
    assert_named(
        "RetryDecision",
        f"{plan.retry_plan_id}/{decision.delivery.delivery_id}",
        ["retry_count", "next_retry_at"],
        latest_sequence(plan.retry_plan_id),
    )


def test_records_verify_names_a_plan_with_a_decision_added(ledger_flow):
    # given a decision inserted into a plan
    from tests.factories import make_decision

    plan = ledger_flow["plan"]
    make_decision(plan=plan, delivery=ledger_flow["pager"], action="wait")

    # when / then
    assert_named(
        "RetryPlan", plan.retry_plan_id, ["decisions"], latest_sequence(plan.retry_plan_id)
    )


def test_records_verify_names_an_edited_worker_run(ledger_flow):
    # given the live run's outcome rewritten
    run = WorkerRun.objects.get(dry_run=False)
    WorkerRun.objects.filter(pk=run.pk).update(
        status="failed", summary={**run.summary, "delivered_count": 0}
    )

    # when / then
    assert_named("WorkerRun", run.run_id, ["status", "summary"], latest_sequence(run.run_id))


def test_records_verify_skips_a_live_run_still_running(ledger_flow, operator):
    # given a live run that has started and not finished: its evidence comes when it ends
    from tests.factories import make_worker_run

    make_worker_run(actor=operator, dry_run=False, status="running")

    # when
    result = evidence_records_verify()

    # then it is counted, and not a mismatch
    assert result.ok is True
    assert result.checked["WorkerRun"] == 3


def test_records_verify_names_an_edited_connector(ledger_flow):
    # given a connector re-enabled under another description, outside connector_save
    Connector.objects.filter(name="pager-hook").update(enabled=False, description="quiet")

    # when / then
    assert_named(
        "Connector",
        "pager-hook",
        ["enabled", "description"],
        latest_sequence("pager-hook", MetadataKind.CONNECTOR_CHANGE),
    )


def test_records_verify_names_a_connector_without_evidence(ledger_flow):
    # given a connector inserted straight into the table
    from tests.factories import make_connector

    make_connector("side-door", "https://hooks.example.invalid/x")

    # when / then
    assert_named("Connector", "side-door", [], None)


def test_records_verify_names_an_edited_circuit(ledger_flow):
    # given the closed circuit forced open, and an open one closed, with no transition recorded
    ConnectorCircuit.objects.filter(connector__name="ops-webhook").update(
        state="open", open_until=timezone.now()
    )
    ConnectorCircuit.objects.filter(connector__name="pager-hook").update(
        state="closed", open_until=None
    )
    result = evidence_records_verify()

    # then both are named against their latest transition
    assert [m.as_dict() for m in result.mismatches] == [
        {
            "model": "ConnectorCircuit",
            "public_id": "ops-webhook",
            "fields": ["state", "open_until"],
            "sequence": latest_sequence("ops-webhook", MetadataKind.CONNECTOR_CIRCUIT),
        },
        {
            "model": "ConnectorCircuit",
            "public_id": "pager-hook",
            "fields": ["state", "open_until"],
            "sequence": latest_sequence("pager-hook", MetadataKind.CONNECTOR_CIRCUIT),
        },
    ]


def test_records_verify_names_an_edited_closure_review(ledger_flow):
    # given a review's note rewritten with raw SQL (the model refuses every update)
    review = ledger_flow["review"]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE closure_closurereview SET note = %s WHERE id = %s", ["all fine", review.pk]
        )

    # when / then
    assert_named("ClosureReview", review.review_id, ["note"], latest_sequence(review.review_id))


def test_records_verify_reads_in_chunks_with_the_same_result(ledger_flow):
    # given an edited delivery, and chunks of one record
    pager = ledger_flow["pager"]
    AlertDelivery.objects.filter(pk=pager.pk).update(attempt_count=5)

    # when
    result = evidence_records_verify(chunk_rows=1)

    # then every record is still read once and the same one is named
    assert result.checked == EVERY_KIND
    assert [m.as_dict() for m in result.mismatches] == [
        {
            "model": "AlertDelivery",
            "public_id": pager.delivery_id,
            "fields": ["attempt_count"],
            "sequence": latest_sequence(pager.delivery_id),
        }
    ]


def test_records_verify_runs_a_fixed_number_of_queries(ledger_flow, django_assert_num_queries):
    # given the flow (every kind fits in one chunk)
    # PostgreSQL: a savepoint, the snapshot's SET LOCAL, and its release around the reads.
    around = 3 if connection.vendor == "postgresql" else 0

    # when / then: per kind, its records and their latest evidence (20); alerts add their
    # reports' evidence (1); deliveries read their alerts' evidence in place of their own, and
    # add their attempts' evidence, the plans' suppress decisions, waivers and
    # acknowledgements (4); plans add their decisions (1)
    with django_assert_num_queries(2 * 10 + 1 + 4 + 1 + around):
        evidence_records_verify()


# -- where it is run: the command, the API, the console ------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_verify_evidence_records_passes_on_an_untouched_flow(ledger_flow, capsys):
    # given the flow, committed (the command reads it in a snapshot of its own)

    # when
    call_command("verify_evidence", "--records")

    # then the chain's report gains the records', and both hold
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is True
    assert body["count"] == Evidence.objects.count()
    assert body["first_broken_sequence"] is None
    assert body["records"] == {
        "ok": True,
        "checked": EVERY_KIND,
        "mismatch_count": 0,
        "mismatches": [],
    }


def test_verify_evidence_records_fails_and_lists_each_changed_record(ledger_flow, capsys):
    # given two records changed in the database; the chain itself is intact
    ops = ledger_flow["ops"]
    AlertDelivery.objects.filter(pk=ops.pk).update(attempt_count=1)
    Connector.objects.filter(name="chat-hook").update(description="rogue")
    delivery_sequence = latest_sequence(
        ExecutionRecord.objects.get(delivery=ops, attempt_number=2).execution_id
    )
    connector_sequence = latest_sequence("chat-hook", MetadataKind.CONNECTOR_CHANGE)

    # when / then the command exits 1 and names both
    with pytest.raises(CommandError) as failure:
        call_command("verify_evidence", "--records")
    assert str(failure.value) == (
        "2 records disagree with the ledger:\n"
        f"  AlertDelivery {ops.delivery_id}: attempt_count differ from evidence sequence "
        f"{delivery_sequence}\n"
        f"  Connector chat-hook: description differ from evidence sequence {connector_sequence}"
    )
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is False
    assert body["first_broken_sequence"] is None
    assert body["records"]["mismatch_count"] == 2
    assert [m["public_id"] for m in body["records"]["mismatches"]] == [ops.delivery_id, "chat-hook"]


def test_verify_evidence_without_records_ignores_changed_records(ledger_flow, capsys):
    # given a changed record
    Connector.objects.filter(name="chat-hook").update(description="rogue")

    # when the chain alone is verified, as before
    call_command("verify_evidence")

    # then it passes and says nothing of records
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is True
    assert "records" not in body


def test_api_evidence_verify_with_records_names_the_changed_record(ledger_flow, auditor):
    # given an acknowledgement whose notes were rewritten
    ack = Acknowledgement.objects.get(provider="ops-webhook")
    Acknowledgement.objects.filter(pk=ack.pk).update(notes="nobody was paged")
    before = closure_counts()

    # when an auditor verifies with records
    response = client_for(auditor).get("/api/v1/evidence/verify/?records=true")

    # then the answer is not ok, names the record, and nothing was written
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False
    assert body["first_broken_sequence"] is None
    assert body["records"] == {
        "ok": False,
        "checked": EVERY_KIND,
        "mismatch_count": 1,
        "mismatches": [
            {
                "model": "Acknowledgement",
                "public_id": ack.ack_id,
                "fields": ["notes"],
                "sequence": latest_sequence(ack.ack_id),
            }
        ],
    }
    assert closure_counts() == before


def test_api_evidence_verify_without_records_checks_only_the_chain(ledger_flow, auditor):
    Acknowledgement.objects.filter(provider="ops-webhook").update(notes="nobody was paged")

    response = client_for(auditor).get("/api/v1/evidence/verify/?records=false")

    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert "records" not in response.json()


def test_api_evidence_verify_refuses_a_bad_or_unknown_parameter(auditor):
    client = client_for(auditor)

    assert_invalid(
        client.get("/api/v1/evidence/verify/?records=yes"),
        {"records": ["Must be true or false."]},
    )
    response = client.get("/api/v1/evidence/verify/?record=true")
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_query_parameter"
    assert response.json()["errors"] == {
        "record": ["Unknown query parameter. Allowed: format, records."]
    }


def test_console_evidence_verify_offers_and_shows_the_records_check(ledger_flow, operator):
    # given a closure review changed outside the product
    review = ledger_flow["review"]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE closure_closurereview SET note = %s WHERE id = %s", ["all fine", review.pk]
        )
    client = client_for(operator)

    # when the page is opened, then it offers the check
    page = client.get("/console/evidence/verify/").content.decode()
    assert '<a class="button" href="?records=1">Also check records</a>' in page

    # when the check is asked for, then the review is listed with its evidence row
    response = client.get("/console/evidence/verify/?records=1")
    page = response.content.decode()
    sequence = latest_sequence(review.review_id)
    assert response.context["records"].mismatch_count == 1
    assert "1 changed outside the product" in page
    assert "<td>ClosureReview</td><td>note</td>" in page
    assert f'<a href="/console/evidence/{sequence}/">#{sequence}</a>' in page
    assert review.review_id in page
