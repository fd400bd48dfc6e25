"""One delivery attempt, shared by the initial send, the retry worker and manual retries.

claim (short transaction, delivery row locked, lease taken) → send (no transaction, no lock) →
record (short transaction: execution record, delivery, decision and evidence together, written
only if the lease version still matches).
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from closure.choices import (
    DecisionStatus,
    DeliveryStatus,
    ExecutionStatus,
    ExecutionTrigger,
    MetadataKind,
)
from closure.connectors import AlertMessage, SendOutcome, send_alert
from closure.evidence import EvidenceFilters, canonical_json, evidence_append, isoformat, sha256_hex
from closure.models import AlertDelivery, Connector, ExecutionRecord, RetryDecision
from closure.services.circuits import circuit_record
from closure.services.common import signer_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimedAttempt:
    """Everything the send step needs, taken while the delivery row was locked."""

    delivery_pk: int
    delivery_id: str
    lease_version: int
    attempt_number: int
    trigger: str
    decision_pk: int | None = None
    worker_run_pk: int | None = None


def lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.CAVRA_ATTEMPT_LEASE_SECONDS)


def attempt_claim(
    *,
    delivery: AlertDelivery,
    owner: str,
    trigger: str,
    now: datetime,
    decision_pk: int | None = None,
    worker_run_pk: int | None = None,
) -> ClaimedAttempt:
    """Take the attempt lease on a delivery the caller has locked inside its transaction."""
    version = delivery.claim(owner=owner, until=lease_until(now))
    return ClaimedAttempt(
        delivery_pk=delivery.pk,
        delivery_id=delivery.delivery_id,
        lease_version=version,
        attempt_number=delivery.attempt_count + 1,
        trigger=trigger,
        decision_pk=decision_pk,
        worker_run_pk=worker_run_pk,
    )


def attempt_renew(claim: ClaimedAttempt) -> bool:
    """Extend a claimed lease just before sending; False if it was lost (do not send)."""
    renewed = AlertDelivery.objects.filter(
        pk=claim.delivery_pk, lease_version=claim.lease_version
    ).update(leased_until=lease_until(timezone.now()))
    return renewed == 1


@dataclass(frozen=True)
class PreparedSend:
    """What one network call needs, read from the database beforehand."""

    claim: ClaimedAttempt
    connector: Connector
    message: AlertMessage

    def send(self, *, timeout_seconds: float) -> SendOutcome:
        return send_alert(self.connector, message=self.message, timeout_seconds=timeout_seconds)


def attempts_prepare(claims: list[ClaimedAttempt]) -> list[PreparedSend]:
    """Load connectors and payloads for claimed attempts in one query (before any send)."""
    deliveries = AlertDelivery.objects.select_related("connector", "alert").in_bulk(
        [claim.delivery_pk for claim in claims]
    )
    prepared = []
    for claim in claims:
        delivery = deliveries[claim.delivery_pk]
        message = AlertMessage(
            delivery_id=delivery.delivery_id,
            attempt_number=claim.attempt_number,
            payload={
                **delivery.alert.payload,
                "delivery_id": delivery.delivery_id,
                "attempt_number": claim.attempt_number,
            },
        )
        prepared.append(PreparedSend(claim, delivery.connector, message))
    return prepared


def attempt_send(claim: ClaimedAttempt, *, timeout_seconds: float) -> SendOutcome:
    """Call the connector. Runs outside every transaction and holds no lock."""
    [prepared] = attempts_prepare([claim])
    return prepared.send(timeout_seconds=timeout_seconds)


def execution_serialize(record: ExecutionRecord) -> dict:
    """The public-safe view of an execution record (API, evidence, exports)."""
    delivery = record.delivery
    decision = record.decision
    return {
        "execution_id": record.execution_id,
        "execution_status": record.execution_status,
        "skip_reason": record.skip_reason,
        "executed_at": isoformat(record.executed_at),
        "executed_by": record.executed_by.get_username(),
        "worker_run_id": record.worker_run.run_id if record.worker_run_id else None,
        "retry_plan_id": decision.plan.retry_plan_id if decision else None,
        "health_id": delivery.alert.health.health_id,
        "alert_id": delivery.alert.alert_id,
        "delivery_id": delivery.delivery_id,
        "provider": record.provider,
        "attempt_number": record.attempt_number,
        "trigger": record.trigger,
        "http_status": record.http_status,
        "error_class": record.error_class,
        "latency_ms": record.latency_ms,
        "retry_after_seconds": record.retry_after_seconds,
        "request_fingerprint": record.request_fingerprint,
        "response_sha256": record.response_sha256,
        "execution_hash": record.execution_hash,
        "public_evidence_refs": [
            delivery.alert.health.health_id,
            delivery.alert.alert_id,
            delivery.delivery_id,
        ],
    }


def _execution_hash(fields: dict) -> str:
    return sha256_hex(canonical_json(fields))


def _write_execution(
    *,
    delivery: AlertDelivery,
    actor,
    now: datetime,
    attempt_number: int,
    trigger: str,
    status: str,
    outcome: SendOutcome | None,
    decision: RetryDecision | None,
    worker_run_pk: int | None,
    skip_reason: str = "",
) -> ExecutionRecord:
    fields = {
        "delivery_id": delivery.delivery_id,
        "attempt_number": attempt_number,
        "trigger": trigger,
        "execution_status": status,
        "executed_at": isoformat(now),
        "http_status": outcome.http_status if outcome else None,
        "error_class": outcome.error_class if outcome else "",
        "request_fingerprint": outcome.request_fingerprint if outcome else "",
        "response_sha256": outcome.response_sha256 if outcome else "",
    }
    record = ExecutionRecord.objects.create(
        delivery=delivery,
        decision=decision,
        worker_run_id=worker_run_pk,
        execution_status=status,
        skip_reason=skip_reason,
        executed_at=now,
        executed_by=actor,
        provider=delivery.provider,
        attempt_number=attempt_number,
        trigger=trigger,
        http_status=outcome.http_status if outcome else None,
        error_class=outcome.error_class if outcome else "",
        latency_ms=outcome.latency_ms if outcome else None,
        retry_after_seconds=outcome.retry_after_seconds if outcome else None,
        request_fingerprint=outcome.request_fingerprint if outcome else "",
        response_sha256=outcome.response_sha256 if outcome else "",
        response_excerpt=outcome.response_excerpt if outcome else "",
        execution_hash=_execution_hash(fields),
    )
    kind = (
        MetadataKind.ALERT_DELIVERY
        if trigger == ExecutionTrigger.INITIAL
        else MetadataKind.EXECUTION_RECORD
    )
    evidence_append(
        kind=kind,
        session_id=record.execution_id,
        signer=signer_of(actor),
        subject=execution_serialize(record),
        filters=EvidenceFilters(
            health_id=delivery.alert.health.health_id,
            provider=delivery.provider,
            execution_status=status,
            dry_run=False,
        ),
        decision_count=1,
        blocked_count=int(status == ExecutionStatus.FAILED),
        now=now,
    )
    return record


def attempt_record(*, claim: ClaimedAttempt, outcome: SendOutcome, actor) -> ExecutionRecord:
    """Record an attempt's outcome with its evidence, in one transaction.

    Fencing: when the delivery's lease version no longer matches the claim, another attempt
    took over. The late attempt is then recorded as `superseded` and changes nothing else.
    """
    now = timezone.now()
    with transaction.atomic(durable=True):
        delivery = (
            AlertDelivery.objects.select_for_update(of=("self",))
            .select_related("alert__health", "connector")
            .get(pk=claim.delivery_pk)
        )
        decisions = RetryDecision.objects.select_related("plan")
        if delivery.lease_version != claim.lease_version:
            logger.warning(
                "attempt %s of %s lost its lease; recorded as superseded",
                claim.attempt_number,
                claim.delivery_id,
            )
            return _write_execution(
                delivery=delivery,
                actor=actor,
                now=now,
                attempt_number=claim.attempt_number,
                trigger=claim.trigger,
                status=ExecutionStatus.SUPERSEDED,
                outcome=outcome,
                decision=decisions.get(pk=claim.decision_pk) if claim.decision_pk else None,
                worker_run_pk=claim.worker_run_pk,
            )
        decision = (
            decisions.select_for_update(of=("self",)).get(pk=claim.decision_pk)
            if claim.decision_pk
            else None
        )
        if outcome.delivered:
            status = ExecutionStatus.DELIVERED
        elif outcome.accepted:
            status = ExecutionStatus.ACCEPTED
        else:
            status = ExecutionStatus.FAILED
        # An accepted attempt reached a working connector: it keeps the circuit closed.
        circuit_record(
            connector=delivery.connector,
            delivered=outcome.delivered or outcome.accepted,
            actor=actor,
            now=now,
        )
        record = _write_execution(
            delivery=delivery,
            actor=actor,
            now=now,
            attempt_number=claim.attempt_number,
            trigger=claim.trigger,
            status=status,
            outcome=outcome,
            decision=decision,
            worker_run_pk=claim.worker_run_pk,
        )
        update = {
            "attempt_count": F("attempt_count") + 1,
            "last_attempt_at": now,
            "updated_at": now,
            "lease_owner": "",
            "leased_until": None,
        }
        # A delivery suppressed while the attempt was in flight stays suppressed: the record
        # above still shows what the connector answered.
        if delivery.status != DeliveryStatus.SUPPRESSED:
            if outcome.delivered:
                update.update(status=DeliveryStatus.DELIVERED, delivered_at=now)
            elif outcome.accepted:
                update.update(status=DeliveryStatus.ACCEPTED)
            else:
                update.update(status=DeliveryStatus.FAILED)
        retry_after = outcome.retry_after_seconds
        update["retry_not_before"] = now + timedelta(seconds=retry_after) if retry_after else None
        AlertDelivery.objects.filter(pk=delivery.pk).update(**update)
        if decision is not None:
            decision.status = DecisionStatus.EXECUTED
            decision.closed_at = now
            decision.save(update_fields=["status", "closed_at"])
    return record


def execution_skip(
    *,
    delivery: AlertDelivery,
    decision: RetryDecision,
    actor,
    reason: str,
    worker_run_pk: int | None,
    now: datetime,
) -> ExecutionRecord:
    """Record that a due decision was not attempted (delivery changed meanwhile).

    Runs inside the caller's claim transaction with the delivery locked.
    """
    record = _write_execution(
        delivery=delivery,
        actor=actor,
        now=now,
        attempt_number=max(1, delivery.attempt_count),
        trigger=ExecutionTrigger.RETRY,
        status=ExecutionStatus.SKIPPED,
        outcome=None,
        decision=decision,
        worker_run_pk=worker_run_pk,
        skip_reason=reason,
    )
    decision.status = DecisionStatus.SKIPPED
    decision.closed_at = now
    decision.save(update_fields=["status", "closed_at"])
    return record
