"""One delivery attempt, shared by the initial send, the retry worker and manual retries.

claim (short transaction, delivery row locked, lease taken) → send (no transaction, no lock) →
record (short transaction: execution record, delivery, decision and evidence together, written
only if the lease version still matches).

The worker does each step for a whole wave of attempts at once: one statement claims the wave's
leases, one renews them, and one transaction records every outcome of the wave with bulk
statements (one execution record and one evidence row per attempt all the same).
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from closure.choices import (
    DecisionStatus,
    DeliveryStatus,
    ExecutionStatus,
    ExecutionTrigger,
    MetadataKind,
)
from closure.connectors import AlertMessage, SendOutcome, send_alert
from closure.evidence.canonical import canonical_json, isoformat, sha256_hex
from closure.evidence.ledger import EvidenceEntry, EvidenceFilters, evidence_append_many
from closure.keyring import ConnectorConfigError
from closure.models import AlertDelivery, Connector, ExecutionRecord, RetryDecision
from closure.services.circuits import (
    circuit_count,
    circuits_locked,
    circuits_save,
    circuits_snapshot,
)
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


# The columns of a delivery and of its alert and report that claiming and recording an attempt
# read. The locking queries load only these: building the other columns, above all the alert's
# payload and the report's findings, costs more than the rest of the query on every wave.
DELIVERY_LOCKED_FIELDS = (
    "delivery_id",
    "connector",
    "provider",
    "status",
    "attempt_count",
    "lease_owner",
    "leased_until",
    "lease_version",
    "alert__alert_id",
    "alert__health__health_id",
)


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
    return _claimed(delivery, version, trigger, decision_pk, worker_run_pk)


def attempts_claim(
    *,
    deliveries: list[AlertDelivery],
    owner: str,
    trigger: str,
    now: datetime,
    decision_pks: list[int | None],
    worker_run_pk: int | None = None,
) -> list[ClaimedAttempt]:
    """Take the attempt leases of deliveries the caller has locked, in one statement.

    The rows are locked, so each new fence token is the version just read plus one.
    """
    AlertDelivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(
        lease_owner=owner, leased_until=lease_until(now), lease_version=F("lease_version") + 1
    )
    return [
        _claimed(delivery, delivery.lease_version + 1, trigger, decision_pk, worker_run_pk)
        for delivery, decision_pk in zip(deliveries, decision_pks, strict=True)
    ]


def _claimed(
    delivery: AlertDelivery,
    lease_version: int,
    trigger: str,
    decision_pk: int | None,
    worker_run_pk: int | None,
) -> ClaimedAttempt:
    """The claim on a locked delivery whose lease now carries `lease_version`."""
    return ClaimedAttempt(
        delivery_pk=delivery.pk,
        delivery_id=delivery.delivery_id,
        lease_version=lease_version,
        attempt_number=delivery.attempt_count + 1,
        trigger=trigger,
        decision_pk=decision_pk,
        worker_run_pk=worker_run_pk,
    )


def _held(claims: list[ClaimedAttempt]) -> Q:
    fence = Q(pk__in=[])
    for claim in claims:
        fence |= Q(pk=claim.delivery_pk, lease_version=claim.lease_version)
    return fence


def attempts_renew(claims: list[ClaimedAttempt]) -> list[bool]:
    """Extend a wave's leases just before sending; False for each lease that was lost.

    One statement when every lease is still held (the usual case). Otherwise a second one
    finds the leases still held, so a lease lost meanwhile is never sent.
    """
    if not claims:
        return []
    renewed = AlertDelivery.objects.filter(_held(claims)).update(
        leased_until=lease_until(timezone.now())
    )
    if renewed == len(claims):
        return [True] * len(claims)
    held = set(AlertDelivery.objects.filter(_held(claims)).values_list("pk", flat=True))
    return [claim.delivery_pk in held for claim in claims]


@dataclass(frozen=True)
class PreparedSend:
    """What one network call needs, read from the database beforehand."""

    claim: ClaimedAttempt
    connector: Connector
    message: AlertMessage
    # The connector's decrypted configuration; None: send_alert decrypts it (and reports a
    # configuration that cannot be decrypted).
    config: dict | None = None

    def send(self, *, timeout_seconds: float) -> SendOutcome:
        return send_alert(
            self.connector,
            message=self.message,
            timeout_seconds=timeout_seconds,
            config=self.config,
        )


def attempts_prepare(
    claims: list[ClaimedAttempt], *, configs: dict[str, dict] | None = None
) -> list[PreparedSend]:
    """Load connectors and payloads for claimed attempts in one query (before any send).

    Each connector's configuration is decrypted once, not once per attempt. `configs` carries
    the decrypted configurations from one call to the next (the waves of one worker run), keyed
    by ciphertext: a configuration changed meanwhile has a new ciphertext and is decrypted anew.
    """
    configs = {} if configs is None else configs
    deliveries = (
        AlertDelivery.objects.select_related("connector", "alert")
        .only(
            "delivery_id",
            "connector__name",
            "connector__kind",
            "connector__config_ciphertext",
            "alert__payload",
        )
        .in_bulk([claim.delivery_pk for claim in claims])
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
        connector = delivery.connector
        config = configs.get(connector.config_ciphertext)
        if config is None:
            try:
                config = configs[connector.config_ciphertext] = connector.private_config
            except ConnectorConfigError:
                config = None
        prepared.append(PreparedSend(claim, connector, message, config))
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


def _execution(
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
    """An unsaved execution record (its public ID and hash are set already)."""
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
    return ExecutionRecord(
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


def _execution_evidence(record: ExecutionRecord, *, actor) -> EvidenceEntry:
    delivery = record.delivery
    kind = (
        MetadataKind.ALERT_DELIVERY
        if record.trigger == ExecutionTrigger.INITIAL
        else MetadataKind.EXECUTION_RECORD
    )
    return EvidenceEntry(
        kind=kind,
        session_id=record.execution_id,
        signer=signer_of(actor),
        subject=execution_serialize(record),
        filters=EvidenceFilters(
            health_id=delivery.alert.health.health_id,
            provider=delivery.provider,
            execution_status=record.execution_status,
            dry_run=False,
        ),
        decision_count=1,
        blocked_count=int(record.execution_status == ExecutionStatus.FAILED),
    )


def attempt_record(*, claim: ClaimedAttempt, outcome: SendOutcome, actor) -> ExecutionRecord:
    """Record one attempt's outcome with its evidence, in one transaction."""
    [record] = attempts_record(sent=[(claim, outcome)], actor=actor)
    return record


def _status_of(outcome: SendOutcome) -> str:
    if outcome.delivered:
        return ExecutionStatus.DELIVERED
    if outcome.accepted:
        return ExecutionStatus.ACCEPTED
    return ExecutionStatus.FAILED


def _counted_update(outcome: SendOutcome, *, suppressed: bool, now: datetime) -> dict:
    """The delivery columns an attempt's outcome sets (the row is locked by the caller)."""
    update = {
        "last_attempt_at": now,
        "updated_at": now,
        "lease_owner": "",
        "leased_until": None,
    }
    # A delivery suppressed while the attempt was in flight stays suppressed: the record still
    # shows what the connector answered.
    if not suppressed:
        if outcome.delivered:
            update.update(status=DeliveryStatus.DELIVERED, delivered_at=now)
        elif outcome.accepted:
            update.update(status=DeliveryStatus.ACCEPTED)
        else:
            update.update(status=DeliveryStatus.FAILED)
    retry_after = outcome.retry_after_seconds
    update["retry_not_before"] = now + timedelta(seconds=retry_after) if retry_after else None
    return update


def _deliveries_count(counted: list[tuple[ExecutionRecord, SendOutcome]], now: datetime) -> None:
    """Count the attempts on their deliveries: one UPDATE per distinct outcome (delivered,
    failed, a given Retry-After, …), not one per attempt."""
    groups: dict[tuple, list[int]] = {}
    for record, outcome in counted:
        suppressed = record.delivery.status == DeliveryStatus.SUPPRESSED
        update = _counted_update(outcome, suppressed=suppressed, now=now)
        groups.setdefault(tuple(sorted(update.items())), []).append(record.delivery_id)
    for update, delivery_pks in groups.items():
        AlertDelivery.objects.filter(pk__in=delivery_pks).update(
            attempt_count=F("attempt_count") + 1, **dict(update)
        )


def _lock_for_record(
    sent: list[tuple[ClaimedAttempt, SendOutcome]],
) -> tuple[dict[int, AlertDelivery], dict[int, RetryDecision]]:
    """Lock the wave's deliveries, then their decisions, one query each, by primary key."""
    deliveries = {
        d.pk: d
        for d in AlertDelivery.objects.select_for_update(of=("self",))
        .select_related("alert__health")
        .only(*DELIVERY_LOCKED_FIELDS)
        .filter(pk__in=[claim.delivery_pk for claim, _ in sent])
        .order_by("pk")
    }
    decision_pks = [claim.decision_pk for claim, _ in sent if claim.decision_pk]
    decisions = {
        d.pk: d
        for d in RetryDecision.objects.select_for_update(of=("self",))
        .select_related("plan")
        .only("status", "closed_at", "plan__retry_plan_id")
        .filter(pk__in=decision_pks)
        .order_by("pk")
    }
    return deliveries, decisions


def _fenced_record(
    claim: ClaimedAttempt,
    outcome: SendOutcome,
    *,
    delivery: AlertDelivery,
    decision: RetryDecision | None,
    actor,
    worker_run,
    now: datetime,
) -> tuple[ExecutionRecord, SendOutcome | None]:
    """The unsaved record of one attempt, with the outcome that counts for its delivery (None:
    the attempt lost its lease and is `superseded`)."""
    current = delivery.lease_version == claim.lease_version
    if not current:
        logger.warning(
            "attempt %s of %s lost its lease; recorded as superseded",
            claim.attempt_number,
            claim.delivery_id,
        )
    record = _execution(
        delivery=delivery,
        actor=actor,
        now=now,
        attempt_number=claim.attempt_number,
        trigger=claim.trigger,
        status=_status_of(outcome) if current else ExecutionStatus.SUPERSEDED,
        outcome=outcome,
        decision=decision,
        worker_run_pk=claim.worker_run_pk,
    )
    if worker_run is not None and worker_run.pk == claim.worker_run_pk:
        record.worker_run = worker_run
    if current and record.decision is not None:
        record.decision.status = DecisionStatus.EXECUTED
        record.decision.closed_at = now
    return record, outcome if current else None


def _circuits_count_and_evidence(
    written: list[tuple[ExecutionRecord, SendOutcome | None]], *, actor, now: datetime
) -> None:
    """Count each counted attempt on its connector's circuit and append every evidence row:
    circuit transitions and execution records, in the order of the wave."""
    connector_pks = [
        record.delivery.connector_id for record, outcome in written if outcome is not None
    ]
    circuits = circuits_locked(connector_pks, create=True) if connector_pks else {}
    unchanged = circuits_snapshot(circuits.values())
    entries: list[EvidenceEntry] = []
    for record, outcome in written:
        if outcome is not None:
            # An accepted attempt reached a working connector: it keeps the circuit closed.
            entries.extend(
                circuit_count(
                    circuits[record.delivery.connector_id],
                    delivered=outcome.delivered or outcome.accepted,
                    actor=actor,
                    now=now,
                )
            )
        entries.append(_execution_evidence(record, actor=actor))
    circuits_save(circuits.values(), unchanged=unchanged)
    evidence_append_many(entries, now=now)


def attempts_record(
    *, sent: list[tuple[ClaimedAttempt, SendOutcome]], actor, worker_run=None
) -> list[ExecutionRecord]:
    """Record the outcomes of a wave of attempts, each with its evidence, in one transaction.

    Fencing: when a delivery's lease version no longer matches its claim, another attempt took
    over. That late attempt is recorded as `superseded` and changes nothing else. Every other
    attempt gets its execution record and evidence row, updates its delivery and decision, and
    counts toward its connector's circuit, in the order of `sent`.

    Statements do not grow with the wave: deliveries, decisions and circuits are each locked
    by one query; records and evidence rows are inserted by one each (under one ledger lock);
    decisions are updated by one, deliveries by one per distinct outcome, and only circuits
    whose state changed are written, once each.
    """
    now = timezone.now()
    with transaction.atomic(durable=True):
        # Lock order as everywhere: deliveries, then their in-flight decisions, then circuits.
        deliveries, decisions = _lock_for_record(sent)
        written = [
            _fenced_record(
                claim,
                outcome,
                delivery=deliveries[claim.delivery_pk],
                decision=decisions.get(claim.decision_pk),
                actor=actor,
                worker_run=worker_run,
                now=now,
            )
            for claim, outcome in sent
        ]
        counted = [(record, outcome) for record, outcome in written if outcome is not None]
        ExecutionRecord.objects.bulk_create([record for record, _ in written])
        _deliveries_count(counted, now)
        executed = [record.decision_id for record, _ in counted if record.decision_id]
        if executed:
            RetryDecision.objects.filter(pk__in=executed).update(
                status=DecisionStatus.EXECUTED, closed_at=now
            )
        # Circuits last: every worker shares them, so they are held for the shortest time.
        _circuits_count_and_evidence(written, actor=actor, now=now)
    return [record for record, _ in written]


def attempts_release(claims: list[ClaimedAttempt]) -> None:
    """Give claimed but unsent attempts back (the worker is stopping): the decisions return to
    `pending` and the leases are cleared, so another worker takes them at once."""
    with transaction.atomic(durable=True):
        for claim in sorted(claims, key=lambda c: c.decision_pk):
            RetryDecision.objects.in_flight().filter(pk=claim.decision_pk).update(
                status=DecisionStatus.PENDING, claimed_by_run=None
            )
        for claim in sorted(claims, key=lambda c: c.delivery_pk):
            AlertDelivery.objects.filter(
                pk=claim.delivery_pk, lease_version=claim.lease_version
            ).update(lease_owner="", leased_until=None)


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
    record = _execution(
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
    record.save()
    evidence_append_many([_execution_evidence(record, actor=actor)], now=now)
    decision.status = DecisionStatus.SKIPPED
    decision.closed_at = now
    decision.save(update_fields=["status", "closed_at"])
    return record
