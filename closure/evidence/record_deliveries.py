"""A delivery against the ledger: its state replayed from every evidence row that changed it.

A delivery's state is spoken for by several rows: its alert's plan, its counted attempts, the
retry plans that suppressed it, a waiver, an acknowledgement. They are read for a chunk of
deliveries in a few queries and applied in sequence order, as the services apply them.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import OuterRef, Subquery

from closure.choices import (
    DecisionAction,
    DecisionReason,
    DeliveryStatus,
    ExecutionStatus,
    MetadataKind,
    SuppressionReason,
)
from closure.evidence.canonical import isoformat
from closure.evidence.chain import json_loads
from closure.evidence.ledger import STORED_TEXT
from closure.evidence.record_match import (
    RecordMismatch,
    differing,
    in_chunk,
    latest_evidence,
)
from closure.models import AlertDelivery, Evidence, ExecutionRecord, RetryDecision
from closure.models.alerts import DELIVERY_STATE_FIELDS

COUNTED_EXECUTION_STATUSES = (
    ExecutionStatus.DELIVERED,
    ExecutionStatus.ACCEPTED,
    ExecutionStatus.FAILED,
)
EXECUTION_KINDS = (MetadataKind.ALERT_DELIVERY, MetadataKind.EXECUTION_RECORD)

# What a retry plan's suppress decision did to its delivery, by reason (services/retries.py).
_PLAN_SUPPRESSIONS = {
    DecisionReason.MAX_ATTEMPTS_REACHED: (DeliveryStatus.EXHAUSTED, "", ""),
    DecisionReason.ALERT_ACKNOWLEDGED: (
        DeliveryStatus.SUPPRESSED,
        SuppressionReason.ACKNOWLEDGED,
        "",
    ),
    DecisionReason.CONNECTOR_DISABLED: (
        DeliveryStatus.SUPPRESSED,
        SuppressionReason.CONNECTOR_DISABLED,
        "",
    ),
}
# A counted attempt's outcome as the delivery's status (services/attempts.py).
_ATTEMPT_STATUS = {
    ExecutionStatus.DELIVERED: DeliveryStatus.DELIVERED,
    ExecutionStatus.ACCEPTED: DeliveryStatus.ACCEPTED,
    ExecutionStatus.FAILED: DeliveryStatus.FAILED,
}


@dataclass(frozen=True)
class DeliveryChange:
    """One evidence row that changed a delivery: a counted attempt, or a status it was set to."""

    sequence: int
    at: datetime
    # Attempts: the execution status and Retry-After; settings: (status, reason, note).
    attempt: tuple[str, int | None] | None = None
    setting: tuple[str, str, str] | None = None


def _evidence_sequence(kinds: tuple[str, ...], session: str) -> Subquery:
    return Subquery(
        Evidence.objects.filter(metadata_kind__in=kinds, session_id=OuterRef(session))
        .order_by("-sequence")
        .values("sequence")[:1]
    )


def _delivery_changes(rows: list[dict]) -> dict[int, list[DeliveryChange]]:
    """Every change of these deliveries that evidence speaks for, in four queries."""
    by_public = {r["delivery_id"]: r["pk"] for r in rows}
    changes: dict[int, list[DeliveryChange]] = {r["pk"]: [] for r in rows}
    in_range = {"delivery_id__gte": rows[0]["pk"], "delivery_id__lte": rows[-1]["pk"]}
    # Attempts as their evidence tells them, the records only saying where to look: an edited
    # execution record is named on its own, not through its delivery.
    executions = ExecutionRecord.objects.filter(**in_range).values("execution_id")
    for evidence in latest_evidence(EXECUTION_KINDS, executions).values():
        subject = evidence.subject
        status = subject.get("execution_status")
        pk = by_public.get(subject.get("delivery_id"))
        if pk is not None and status in COUNTED_EXECUTION_STATUSES:
            attempt = (status, subject.get("retry_after_seconds"))
            at = _parsed(subject.get("executed_at"))
            changes[pk].append(DeliveryChange(evidence.sequence, at, attempt=attempt))
    # Suppress decisions of retry plans (checked against the plans' evidence).
    suppressions = (
        RetryDecision.objects.filter(**in_range, action=DecisionAction.SUPPRESS)
        .order_by()
        .values_list("delivery_id", "reason", "plan__generated_at")
        .annotate(sequence=_evidence_sequence((MetadataKind.RETRY_PLAN,), "plan__retry_plan_id"))
    )
    for pk, reason, at, sequence in suppressions:
        if sequence is not None and reason in _PLAN_SUPPRESSIONS:
            changes[pk].append(DeliveryChange(sequence, at, setting=_PLAN_SUPPRESSIONS[reason]))
    # Waivers name the delivery; acknowledgements list the deliveries they suppressed.
    waivers = (
        Evidence.objects.filter(
            metadata_kind=MetadataKind.DELIVERY_WAIVER,
            session_id__in=in_chunk(AlertDelivery, rows, "delivery_id"),
        )
        .order_by()
        .values_list("session_id", "sequence", STORED_TEXT)
    )
    for session, sequence, text in waivers:
        payload = json_loads(text)
        note = (payload.get("subject") or {}).get("reason")
        setting = (DeliveryStatus.SUPPRESSED, SuppressionReason.WAIVED, note)
        changes[by_public[session]].append(
            DeliveryChange(sequence, _parsed(payload.get("created_at")), setting=setting)
        )
    acks = (
        Evidence.objects.filter(
            metadata_kind=MetadataKind.ALERT_ACK,
            health_id__in=in_chunk(AlertDelivery, rows, "alert__health__health_id"),
        )
        .order_by()
        .values_list("sequence", STORED_TEXT)
    )
    for sequence, text in acks:
        payload = json_loads(text)
        for delivery_id in (payload.get("subject") or {}).get("suppressed_delivery_ids") or []:
            if delivery_id in by_public:
                setting = (DeliveryStatus.SUPPRESSED, SuppressionReason.ACKNOWLEDGED, "")
                changes[by_public[delivery_id]].append(
                    DeliveryChange(sequence, _parsed(payload.get("created_at")), setting=setting)
                )
    return changes


def _parsed(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def delivery_replay(created_at: datetime | None, changes: list[DeliveryChange]) -> dict:
    """A delivery's fields after these changes, applied in sequence order as the services do.

    An attempt counts on the delivery and sets its status, unless the delivery was suppressed
    while the attempt was in flight (services/attempts.py keeps that status).
    """
    state: dict[str, Any] = {
        "status": DeliveryStatus.PENDING,
        "suppression_reason": "",
        "suppression_note": "",
        "attempt_count": 0,
        "last_attempt_at": None,
        "retry_not_before": None,
        "delivered_at": None,
        "updated_at": created_at,
    }
    for change in sorted(changes, key=lambda c: c.sequence):
        state["updated_at"] = change.at
        if change.attempt is not None:
            status, retry_after = change.attempt
            state["attempt_count"] += 1
            state["last_attempt_at"] = change.at
            state["retry_not_before"] = (
                change.at + timedelta(seconds=retry_after) if retry_after else None
            )
            if state["status"] != DeliveryStatus.SUPPRESSED:
                state["status"] = _ATTEMPT_STATUS[status]
                if status == ExecutionStatus.DELIVERED:
                    state["delivered_at"] = change.at
        elif change.setting is not None:
            status, reason, note = change.setting
            state.update(status=status, suppression_reason=reason, suppression_note=note)
    return state


REPLAYED = (*DELIVERY_STATE_FIELDS, "updated_at")


def deliveries_check(rows: list[dict]) -> Iterator[RecordMismatch]:
    plans = latest_evidence(
        (MetadataKind.ALERT_PLAN,), in_chunk(AlertDelivery, rows, "alert__alert_id")
    )
    changes = _delivery_changes(rows)
    for row in rows:
        delivery_id = row["delivery_id"]
        plan = plans.get(row["alert__alert_id"])
        if plan is None:
            yield RecordMismatch("AlertDelivery", delivery_id, (), None)
            continue
        if delivery_id not in (plan.subject.get("delivery_ids") or []):
            yield RecordMismatch("AlertDelivery", delivery_id, ("alert",), plan.sequence)
            continue
        created_at = _parsed(plan.payload.get("created_at"))
        expected = delivery_replay(created_at, changes[row["pk"]])
        pairs = {name: (_comparable(row[name]), _comparable(expected[name])) for name in REPLAYED}
        pairs["created_at"] = (isoformat(row["created_at"]), plan.payload.get("created_at"))
        pairs["provider"] = (
            [row["provider"], row["provider"] in (plan.subject.get("selected_providers") or [])],
            [row["connector__name"], True],
        )
        fields = differing(pairs)
        if fields:
            sequence = max([plan.sequence] + [c.sequence for c in changes[row["pk"]]])
            yield RecordMismatch("AlertDelivery", delivery_id, fields, sequence)


def _comparable(value: Any) -> Any:
    return isoformat(value) if isinstance(value, datetime) else value
