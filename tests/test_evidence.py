"""The evidence ledger: append-only everywhere, verifiable, and written with its change."""

import json
from datetime import timedelta

import pytest
import time_machine
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.canonical import canonical_json, sha256_hex
from closure.evidence.chain import chain_hash
from closure.evidence.ledger import evidence_append, evidence_verify
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    Evidence,
    ExecutionRecord,
    HealthAlert,
    HealthReport,
    RetryDecision,
    RetryPlan,
    WorkerRun,
)
from closure.models.evidence import EvidenceImmutableError
from closure.services.alerts import (
    acknowledgement_create,
    delivery_retry_now,
    delivery_waive,
    health_alert_send,
)
from closure.services.health import HealthParameters, health_report_build
from closure.services.retries import RetryPolicy, retry_plan_create
from closure.worker import WorkerOptions, worker_run_execute
from tests.conftest import using_postgres

pytestmark = pytest.mark.django_db

TRIGGER = "closure_evidence_append_only"


def _append_rows(count: int) -> list[Evidence]:
    rows = []
    for number in range(1, count + 1):
        with transaction.atomic():
            rows.append(
                evidence_append(
                    kind=MetadataKind.CLOSURE_REVIEW,
                    session_id=f"gordackfinalclosurereview-{number:016x}",
                    signer="arthur",
                    subject={"closure_state": "open", "number": number},
                )
            )
    return rows


def _stored(row: Evidence) -> tuple:
    return Evidence.objects.filter(pk=row.pk).values_list(
        "sequence", "signer", "payload", "payload_sha256", "previous_hash", "chain_hash"
    )[0]


# Tampering statements; PostgreSQL needs the JSON parameter cast to jsonb.
SET_PAYLOAD = {
    "sqlite": "UPDATE closure_evidence SET payload = %s WHERE sequence = %s",
    "postgresql": "UPDATE closure_evidence SET payload = %s::jsonb WHERE sequence = %s",
}
DELETE_ROW = "DELETE FROM closure_evidence WHERE sequence = %s"


def _tamper(statements: dict | str, params: list) -> None:
    """Change evidence behind the application's back, as an attacker with SQL access could.

    On PostgreSQL that attacker must first disable the append-only trigger (table owner only).
    """
    sql = statements if isinstance(statements, str) else statements[connection.vendor]
    with connection.cursor() as cursor:
        if using_postgres():
            cursor.execute("ALTER TABLE closure_evidence DISABLE TRIGGER " + TRIGGER)
        try:
            cursor.execute(sql, params)
        finally:
            if using_postgres():
                cursor.execute("ALTER TABLE closure_evidence ENABLE TRIGGER " + TRIGGER)


# The columns a thorough rewrite keeps equal to the payload (created_at is left as it is).
REWRITTEN_COLUMNS = (
    "metadata_kind",
    "session_id",
    "signer",
    "health_id",
    "provider",
    "execution_status",
    "dry_run",
    "decision_count",
    "blocked_count",
    "approval_required_count",
)


def _rewrite_row(sequence: int, payload: dict, previous_hash: str) -> str:
    """Rewrite a row as a thorough attacker would: its payload, its stored text and the columns
    copied from it changed together, and its own hashes recomputed. Returns its chain hash."""
    text = canonical_json(payload)
    payload_sha = sha256_hex(text)
    row_chain = chain_hash(previous_hash, payload_sha)
    cast = "::jsonb" if using_postgres() else ""
    columns = ", ".join(f"{name} = %s" for name in REWRITTEN_COLUMNS)
    _tamper(  # the interpolated names are the constant column names above
        f"UPDATE closure_evidence SET payload = %s{cast}, payload_text = %s, {columns}, "  # noqa: S608
        "payload_sha256 = %s, chain_hash = %s WHERE sequence = %s",
        [
            json.dumps(payload),
            text.decode(),
            *(payload[name] for name in REWRITTEN_COLUMNS),
            payload_sha,
            row_chain,
            sequence,
        ],
    )
    return row_chain


class EvidenceStoreDown(Exception):
    """Stands in for any failure while writing evidence."""


def _evidence_fails(*args, **kwargs):
    raise EvidenceStoreDown("evidence could not be written")


# -- append-only --------------------------------------------------------------------------------


def test_evidence_save_of_existing_row_is_refused():
    # given a stored evidence row
    [row] = _append_rows(1)
    before = _stored(row)

    # when it is changed and saved
    row.signer = "mallory"
    row.payload = {**row.payload, "signer": "mallory"}
    with pytest.raises(EvidenceImmutableError, match="never updated"):
        row.save()

    # then the stored row is unchanged
    assert _stored(row) == before


def test_evidence_delete_of_row_is_refused():
    # given a stored evidence row
    [row] = _append_rows(1)

    # when it is deleted
    with pytest.raises(EvidenceImmutableError, match="never deleted"):
        row.delete()

    # then it is still there
    assert Evidence.objects.filter(pk=row.pk).exists()


def test_evidence_queryset_update_is_refused():
    # given stored evidence rows
    rows = _append_rows(2)
    before = [_stored(row) for row in rows]

    # when the queryset is updated
    with pytest.raises(EvidenceImmutableError, match="never updated"):
        Evidence.objects.filter(sequence__gte=1).update(signer="mallory")

    # then nothing changed
    assert [_stored(row) for row in rows] == before


def test_evidence_queryset_delete_is_refused():
    # given stored evidence rows
    _append_rows(2)

    # when the queryset is deleted
    with pytest.raises(EvidenceImmutableError, match="never deleted"):
        Evidence.objects.all().delete()

    # then both rows remain
    assert list(Evidence.objects.order_by("sequence").values_list("sequence", flat=True)) == [1, 2]


def test_evidence_bulk_update_is_refused():
    # given a stored evidence row changed in memory
    [row] = _append_rows(1)
    before = _stored(row)
    row.signer = "mallory"

    # when it is bulk-updated
    with pytest.raises(EvidenceImmutableError, match="never updated"):
        Evidence.objects.bulk_update([row], ["signer"])

    # then the stored row is unchanged
    assert _stored(row) == before


@pytest.mark.postgres
def test_evidence_raw_sql_update_is_refused_by_the_database_trigger():
    # given a stored evidence row
    [row] = _append_rows(1)
    before = _stored(row)

    # when raw SQL updates it, bypassing every model guard
    with (
        pytest.raises(DatabaseError, match="evidence is append-only: UPDATE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE closure_evidence SET signer = 'mallory' WHERE id = %s", [row.pk])

    # then the database refused it
    assert _stored(row) == before


@pytest.mark.postgres
def test_evidence_raw_sql_delete_is_refused_by_the_database_trigger():
    # given stored evidence rows
    _append_rows(2)

    # when raw SQL deletes them
    with (
        pytest.raises(DatabaseError, match="evidence is append-only: DELETE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM closure_evidence")

    # then both rows remain
    assert Evidence.objects.count() == 2


def test_evidence_append_outside_a_transaction_is_refused(transactional_db):
    # given no transaction is open (autocommit)
    assert connection.in_atomic_block is False

    # when evidence is appended on its own
    with pytest.raises(RuntimeError, match="inside the transaction of its change"):
        evidence_append(
            kind=MetadataKind.CLOSURE_REVIEW, session_id="x", signer="arthur", subject={}
        )

    # then nothing was written
    assert Evidence.objects.count() == 0


# -- verification -------------------------------------------------------------------------------


def test_evidence_verify_accepts_an_intact_chain():
    # given three rows appended one after the other
    rows = _append_rows(3)

    # when the chain is verified
    result = evidence_verify()

    # then it is intact, links each row to the one before, and ends at the last row
    assert result.ok is True
    assert result.count == 3
    assert result.first_broken_sequence is None
    assert result.problem == ""
    assert result.head == rows[-1].chain_hash
    assert rows[0].previous_hash == "0" * 64
    assert [r.previous_hash for r in rows[1:]] == [r.chain_hash for r in rows[:-1]]
    assert all(
        r.payload_sha256 == sha256_hex(canonical_json(r.payload))
        and r.chain_hash == chain_hash(r.previous_hash, r.payload_sha256)
        for r in rows
    )


def test_evidence_verify_names_the_first_row_whose_payload_was_altered():
    # given three rows, the second and third altered in the database afterwards
    rows = _append_rows(3)
    for row in rows[1:]:
        altered = {**row.payload, "signer": "mallory"}
        _tamper(SET_PAYLOAD, [json.dumps(altered), row.sequence])

    # when the chain is verified
    result = evidence_verify()

    # then the second row is named as the first broken one
    assert result.ok is False
    assert result.first_broken_sequence == 2
    assert result.problem == "payload does not match payload_sha256"
    assert result.count == 1
    assert result.head == rows[0].chain_hash


def test_evidence_verify_names_the_row_after_a_rehashed_alteration():
    # given a second row altered by someone who also recomputed its own hashes
    rows = _append_rows(3)
    _rewrite_row(2, {**rows[1].payload, "decision_count": 99}, rows[0].chain_hash)

    # when the chain is verified
    result = evidence_verify()

    # then the break shows at the third row, which still points at the original second row
    assert result.ok is False
    assert result.first_broken_sequence == 3
    assert result.problem == "previous_hash does not match the preceding row"
    assert result.count == 2


def test_evidence_verify_names_the_gap_left_by_a_deleted_row():
    # given three rows, the second deleted in the database
    _append_rows(3)
    _tamper(DELETE_ROW, [2])

    # when the chain is verified
    result = evidence_verify()

    # then the missing sequence number is named
    assert result.ok is False
    assert result.first_broken_sequence == 2
    assert result.problem == "sequence gap: expected 2"
    assert result.count == 1


# -- a change and its evidence commit together --------------------------------------------------


@pytest.fixture
def sent_failed_delivery(operator, receiver, webhook) -> AlertDelivery:
    """One alert delivery whose initial send failed with a 500, 20 minutes ago."""
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data("boom", status=500)
    with time_machine.travel(timezone.now() - timedelta(minutes=20)):
        report = health_report_build(actor=operator, parameters=HealthParameters())
        result = health_alert_send(actor=operator, health_id=report.health_id)
    [(delivery, record)] = result.attempts
    assert delivery.status == "failed"
    assert record.http_status == 500
    return delivery


def _ledger() -> list[tuple[int, str]]:
    return list(Evidence.objects.order_by("sequence").values_list("sequence", "session_id"))


def test_health_report_build_writes_nothing_when_its_evidence_fails(operator, monkeypatch):
    # given writing evidence fails
    monkeypatch.setattr("closure.services.health.evidence_append", _evidence_fails)

    # when a health report is built
    with pytest.raises(EvidenceStoreDown):
        health_report_build(actor=operator, parameters=HealthParameters())

    # then neither the report nor evidence exists
    assert HealthReport.objects.count() == 0
    assert Evidence.objects.count() == 0


def test_health_alert_send_writes_and_sends_nothing_when_its_evidence_fails(
    operator, receiver, webhook, monkeypatch
):
    # given a critical report, and writing the alert's evidence fails
    report = health_report_build(actor=operator, parameters=HealthParameters())
    ledger = _ledger()
    monkeypatch.setattr("closure.services.alerts.evidence_append", _evidence_fails)

    # when the alert is sent
    with pytest.raises(EvidenceStoreDown):
        health_alert_send(actor=operator, health_id=report.health_id)

    # then no alert or delivery was stored, no evidence added, and no connector called
    assert HealthAlert.objects.count() == 0
    assert AlertDelivery.objects.count() == 0
    assert _ledger() == ledger
    assert receiver.log == []


def test_retry_plan_create_writes_nothing_when_its_evidence_fails(
    operator, sent_failed_delivery, monkeypatch
):
    # given a failed delivery with a pending decision of an earlier plan
    earlier, _ = retry_plan_create(actor=operator, policy=RetryPolicy(retry_delay_minutes=60))
    ledger = _ledger()
    monkeypatch.setattr("closure.services.retries.evidence_append", _evidence_fails)

    # when a plan that would exhaust the delivery (one attempt allowed) fails to write evidence
    with pytest.raises(EvidenceStoreDown):
        retry_plan_create(actor=operator, policy=RetryPolicy(max_retry_attempts=1))

    # then no plan or decision was stored, the earlier decision is not superseded, the delivery
    # is not exhausted, and no evidence was added
    assert list(RetryPlan.objects.values_list("pk", flat=True)) == [earlier.pk]
    assert list(RetryDecision.objects.values_list("plan_id", "action", "status")) == [
        (earlier.pk, "wait", "pending")
    ]
    sent_failed_delivery.refresh_from_db()
    assert sent_failed_delivery.status == "failed"
    assert _ledger() == ledger


def test_acknowledgement_create_writes_nothing_when_its_evidence_fails(
    operator, sent_failed_delivery, monkeypatch
):
    # given a failed delivery with a pending retry decision
    retry_plan_create(actor=operator, policy=RetryPolicy())
    ledger = _ledger()
    monkeypatch.setattr("closure.services.alerts.evidence_append", _evidence_fails)

    # when the recipient's acknowledgement fails to write evidence
    with pytest.raises(EvidenceStoreDown):
        acknowledgement_create(
            actor=operator,
            health_id=sent_failed_delivery.alert.health.health_id,
            provider="ops-webhook",
            state="acknowledged",
        )

    # then no acknowledgement exists and neither the delivery nor its decision was closed
    assert Acknowledgement.objects.count() == 0
    sent_failed_delivery.refresh_from_db()
    assert (sent_failed_delivery.status, sent_failed_delivery.suppression_reason) == ("failed", "")
    assert list(RetryDecision.objects.values_list("action", "status")) == [("retry", "pending")]
    assert _ledger() == ledger


def test_delivery_waive_writes_nothing_when_its_evidence_fails(
    operator, sent_failed_delivery, monkeypatch
):
    # given a failed delivery with a pending retry decision
    retry_plan_create(actor=operator, policy=RetryPolicy())
    ledger = _ledger()
    monkeypatch.setattr("closure.services.alerts.evidence_append", _evidence_fails)

    # when an operator's waiver fails to write evidence
    with pytest.raises(EvidenceStoreDown):
        delivery_waive(
            actor=operator,
            delivery_id=sent_failed_delivery.delivery_id,
            reason="recipient on leave",
        )

    # then the delivery is still failed and its decision still pending
    sent_failed_delivery.refresh_from_db()
    assert sent_failed_delivery.status == "failed"
    assert sent_failed_delivery.suppression_note == ""
    assert list(RetryDecision.objects.values_list("status", flat=True)) == ["pending"]
    assert _ledger() == ledger


def test_attempt_record_writes_nothing_when_its_evidence_fails(
    operator, sent_failed_delivery, receiver, monkeypatch
):
    # given a receiver that now accepts, and recording an attempt's evidence fails
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data("ok", status=200)
    ledger = _ledger()
    monkeypatch.setattr("closure.services.attempts.evidence_append_many", _evidence_fails)

    # when an operator retries the delivery by hand
    with pytest.raises(EvidenceStoreDown):
        delivery_retry_now(actor=operator, delivery_id=sent_failed_delivery.delivery_id)

    # then the connector was called, but no execution record was kept and the delivery is not
    # marked delivered: the attempt is as lost as if the worker had died; its lease expires
    assert len(receiver.log) == 2
    assert list(ExecutionRecord.objects.values_list("attempt_number", "execution_status")) == [
        (1, "failed")
    ]
    sent_failed_delivery.refresh_from_db()
    assert sent_failed_delivery.status == "failed"
    assert sent_failed_delivery.attempt_count == 1
    assert sent_failed_delivery.delivered_at is None
    assert sent_failed_delivery.lease_owner == f"manual:{operator.pk}"
    assert _ledger() == ledger


def test_worker_dry_run_writes_no_run_when_its_evidence_fails(
    operator, sent_failed_delivery, monkeypatch
):
    # given a plan with a due retry, and writing the run's evidence fails
    plan, _ = retry_plan_create(actor=operator, policy=RetryPolicy())
    ledger = _ledger()
    monkeypatch.setattr("closure.services.worker_runs.evidence_append", _evidence_fails)

    # when a dry run reports what it would do
    with pytest.raises(EvidenceStoreDown):
        worker_run_execute(actor=operator, options=WorkerOptions(retry_plan_id=plan.retry_plan_id))

    # then no run was recorded and the decision is untouched
    assert WorkerRun.objects.count() == 0
    assert list(RetryDecision.objects.values_list("status", flat=True)) == ["pending"]
    assert _ledger() == ledger
