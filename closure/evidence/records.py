"""Records agree with the ledger: every evidence-bearing record against its latest evidence.

The hash chain proves the evidence rows; this proves the records they speak for. Each record
kind is read in primary-key order, a chunk at a time, together with the latest evidence row of
each record in the chunk (one `MAX(sequence) … GROUP BY session_id` over `evidence_session_idx`),
and every stored field that the evidence's `subject` covers is compared with it. A delivery's
state is spoken for by several rows (its alert's plan, its attempts, a waiver, an
acknowledgement or a retry plan that suppressed it): they are replayed in sequence order.

A read: it writes nothing, holds no lock, and uses a fixed number of queries per chunk, so
memory stays constant whatever the number of records. docs/evidence.md ("Records agree with
the ledger") lists which fields each kind covers, and which it cannot, and why.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F, Max, Model, OuterRef, QuerySet, Subquery, TextField
from django.db.models.functions import Cast

from closure.choices import (
    DecisionAction,
    DecisionReason,
    DeliveryStatus,
    ExecutionStatus,
    MetadataKind,
    SuppressionReason,
)
from closure.evidence.canonical import isoformat, sha256_hex
from closure.evidence.chain import json_loads
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    ClosureReview,
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

# Records per chunk: one query for the records, one for their latest evidence (a few more for
# deliveries and plans).
CHUNK_ROWS = 2000
# Mismatches listed in full; any beyond are counted only, so a wholesale edit cannot exhaust
# memory or the response.
MAX_LISTED = 1000
ALERT_PAYLOAD_TYPE = "cavra.executive_retry_health_alert"
COUNTED_EXECUTION_STATUSES = (
    ExecutionStatus.DELIVERED,
    ExecutionStatus.ACCEPTED,
    ExecutionStatus.FAILED,
)
EXECUTION_KINDS = (MetadataKind.ALERT_DELIVERY, MetadataKind.EXECUTION_RECORD)
_USER = get_user_model().USERNAME_FIELD


@dataclass(frozen=True)
class RecordMismatch:
    """A record whose stored fields differ from what its latest evidence says."""

    model: str
    public_id: str
    fields: tuple[str, ...]
    # The evidence row the record disagrees with; None: no evidence row speaks for it.
    sequence: int | None

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "public_id": self.public_id,
            "fields": list(self.fields),
            "sequence": self.sequence,
        }

    def describe(self) -> str:
        if self.sequence is None:
            return f"{self.model} {self.public_id}: no evidence row speaks for it"
        return (
            f"{self.model} {self.public_id}: {', '.join(self.fields)} differ from evidence "
            f"sequence {self.sequence}"
        )


@dataclass
class RecordsVerification:
    """The result of `evidence_records_verify`; `checked` counts records per model."""

    checked: dict[str, int] = field(default_factory=dict)
    mismatches: list[RecordMismatch] = field(default_factory=list)
    mismatch_count: int = 0

    @property
    def ok(self) -> bool:
        return self.mismatch_count == 0

    def add(self, mismatch: RecordMismatch) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < MAX_LISTED:
            self.mismatches.append(mismatch)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "mismatch_count": self.mismatch_count,
            "mismatches": [m.as_dict() for m in self.mismatches],
        }


_SCALARS = frozenset({str, int, float, bool, type(None)})


def same(stored: Any, recorded: Any) -> bool:
    """JSON equality that keeps booleans apart from numbers (`True == 1` in Python)."""
    kind = type(stored)
    if kind is type(recorded) and kind in _SCALARS:
        return stored == recorded
    if isinstance(stored, bool) or isinstance(recorded, bool):
        return type(stored) is type(recorded) and stored == recorded
    if isinstance(stored, dict) and isinstance(recorded, dict):
        return stored.keys() == recorded.keys() and all(
            same(value, recorded[key]) for key, value in stored.items()
        )
    if isinstance(stored, list) and isinstance(recorded, list):
        return len(stored) == len(recorded) and all(map(same, stored, recorded))
    if isinstance(stored, int | float) and isinstance(recorded, int | float):
        return stored == recorded
    if isinstance(stored, str) and isinstance(recorded, str):
        return stored == recorded  # choices are str subclasses
    return type(stored) is type(recorded) and stored == recorded


def _differing(pairs: dict[str, tuple[Any, Any]]) -> tuple[str, ...]:
    """The names whose (stored, recorded) values differ."""
    return tuple(name for name, (stored, recorded) in pairs.items() if not same(stored, recorded))


@dataclass(frozen=True)
class Latest:
    """The latest evidence row of one record: its sequence and its payload."""

    sequence: int
    payload: dict

    @property
    def subject(self) -> dict:
        return self.payload.get("subject") or {}


def latest_evidence(kinds: tuple[str, ...], session_ids: QuerySet | list[str]) -> dict[str, Latest]:
    """The latest evidence row of each session among `kinds`, in one query.

    `session_ids` is best a subquery (`in_chunk`): the database then matches the sessions
    itself, with no list of thousands of parameters to build, send and parse.
    """
    newest = (
        Evidence.objects.filter(metadata_kind__in=kinds, session_id__in=session_ids)
        .order_by()
        .values("session_id")
        .annotate(newest=Max("sequence"))
        .values("newest")
    )
    # The payload as text, parsed by the ledger's own fast parser.
    rows = (
        Evidence.objects.filter(sequence__in=Subquery(newest))
        .order_by()
        .values_list("session_id", "sequence", Cast("payload", TextField()))
    )
    return {session: Latest(sequence, json_loads(text)) for session, sequence, text in rows}


def in_chunk(model: type[Model], rows: list[dict], public_id: str) -> QuerySet:
    """The `public_id` values of a chunk's records, as a subquery: a chunk is every record
    between its first and last primary key."""
    return model._default_manager.filter(pk__gte=rows[0]["pk"], pk__lte=rows[-1]["pk"]).values(
        public_id
    )


# -- one checker per record kind: (chunk of rows) → mismatches ----------------------------------


def _check_reports(rows: list[dict]) -> Iterator[RecordMismatch]:
    latest = latest_evidence((MetadataKind.HEALTH,), in_chunk(HealthReport, rows, "health_id"))
    for row in rows:
        evidence = latest.get(row["health_id"])
        if evidence is None:
            yield RecordMismatch("HealthReport", row["health_id"], (), None)
            continue
        subject = evidence.subject
        differing = _differing(
            {
                "generated_at": (isoformat(row["generated_at"]), subject.get("generated_at")),
                "generated_by": (row["made_by"], subject.get("generated_by")),
                "alert_level": (row["alert_level"], subject.get("alert_level")),
                "alert_count": (row["alert_count"], subject.get("alert_count")),
                "findings": (row["findings"], subject.get("findings")),
                "counts": (row["counts"], subject.get("counts")),
                "parameters": (row["parameters"], subject.get("parameters")),
            }
        )
        if differing:
            yield RecordMismatch("HealthReport", row["health_id"], differing, evidence.sequence)


def _check_alerts(rows: list[dict]) -> Iterator[RecordMismatch]:
    latest = latest_evidence((MetadataKind.ALERT_PLAN,), in_chunk(HealthAlert, rows, "alert_id"))
    reports = latest_evidence(
        (MetadataKind.HEALTH,), in_chunk(HealthAlert, rows, "health__health_id")
    )
    for row in rows:
        evidence = latest.get(row["alert_id"])
        if evidence is None:
            yield RecordMismatch("HealthAlert", row["alert_id"], (), None)
            continue
        subject = evidence.subject
        report_row = reports.get(row["health__health_id"])
        report = report_row.subject if report_row else {}
        # The message is the report's as the alert was made, from the ledger on both sides:
        # the alert's own fields from its evidence, the report's from the report's.
        expected_payload = {
            "type": ALERT_PAYLOAD_TYPE,
            "alert_id": subject.get("alert_id"),
            "health_id": subject.get("health_id"),
            "alert_level": subject.get("alert_level"),
            "alert_count": report.get("alert_count"),
            "generated_at": report.get("generated_at"),
            "findings": report.get("findings"),
            "counts": report.get("counts"),
        }
        # The public base URL comes from the deployment's settings, not from the ledger.
        message = {key: value for key, value in row["payload"].items() if key != "console_url"}
        differing = _differing(
            {
                "health": (row["health__health_id"], subject.get("health_id")),
                "created_at": (isoformat(row["created_at"]), evidence.payload.get("created_at")),
                "created_by": (row["made_by"], evidence.payload.get("signer")),
                "forced": (row["forced"], subject.get("forced")),
                "selected_providers": (
                    row["selected_providers"],
                    subject.get("selected_providers"),
                ),
                "suppressed_providers": (
                    row["suppressed_providers"],
                    subject.get("suppressed_providers"),
                ),
                "payload": (message, expected_payload),
            }
        )
        if differing:
            yield RecordMismatch("HealthAlert", row["alert_id"], differing, evidence.sequence)


def _check_acknowledgements(rows: list[dict]) -> Iterator[RecordMismatch]:
    latest = latest_evidence((MetadataKind.ALERT_ACK,), in_chunk(Acknowledgement, rows, "ack_id"))
    for row in rows:
        evidence = latest.get(row["ack_id"])
        if evidence is None:
            yield RecordMismatch("Acknowledgement", row["ack_id"], (), None)
            continue
        subject = evidence.subject
        # Rows written before the ledger held the notes' hash say only whether there were any.
        notes = (
            (sha256_hex(row["notes"]), subject["notes_sha256"])
            if "notes_sha256" in subject
            else (bool(row["notes"]), subject.get("notes_present"))
        )
        differing = _differing(
            {
                "alert": (row["alert__alert_id"], subject.get("alert_id")),
                "health": (row["health__health_id"], subject.get("health_id")),
                "connector": (row["connector__name"], subject.get("provider")),
                "provider": (row["provider"], subject.get("provider")),
                "state": (row["state"], subject.get("acknowledgement_state")),
                "external_ref": (row["external_ref"], subject.get("external_ref")),
                "notes": notes,
                "acknowledged_at": (
                    isoformat(row["acknowledged_at"]),
                    evidence.payload.get("created_at"),
                ),
                "acknowledged_by": (row["made_by"], evidence.payload.get("signer")),
            }
        )
        if differing:
            yield RecordMismatch("Acknowledgement", row["ack_id"], differing, evidence.sequence)


_DECISION_FIELDS = (
    "plan_id",
    "delivery__delivery_id",
    "action",
    "reason",
    "retry_count",
    "max_retry_attempts",
    "retry_delay_minutes",
    "latest_execution__execution_id",
    "latest_attempt_at",
    "next_retry_at",
    "failed_status_codes",
)


def _decision_public(row: dict) -> dict:
    """A stored decision's own fields as the plan subject's `retry_decisions` entries name
    them. The entries' report, alert and provider are its delivery's, checked with it."""
    return {
        "delivery_id": row["delivery__delivery_id"],
        "action": row["action"],
        "reason": row["reason"],
        "retry_count": row["retry_count"],
        "max_retry_attempts": row["max_retry_attempts"],
        "retry_delay_minutes": row["retry_delay_minutes"],
        "latest_execution_id": row["latest_execution__execution_id"],
        "latest_attempt_at": isoformat(row["latest_attempt_at"]),
        "next_retry_at": isoformat(row["next_retry_at"]),
        "failed_status_codes": row["failed_status_codes"],
    }


def _check_plans(rows: list[dict]) -> Iterator[RecordMismatch]:
    latest = latest_evidence((MetadataKind.RETRY_PLAN,), in_chunk(RetryPlan, rows, "retry_plan_id"))
    # A plan's decisions are in its subject, in the order they were created.
    decisions = {
        plan_pk: list(group)
        for plan_pk, group in groupby(
            RetryDecision.objects.filter(plan_id__gte=rows[0]["pk"], plan_id__lte=rows[-1]["pk"])
            .order_by("plan_id", "pk")
            .values(*_DECISION_FIELDS),
            key=lambda d: d["plan_id"],
        )
    }
    for row in rows:
        plan_id = row["retry_plan_id"]
        evidence = latest.get(plan_id)
        if evidence is None:
            yield RecordMismatch("RetryPlan", plan_id, (), None)
            continue
        subject = evidence.subject
        recorded = subject.get("retry_decisions") or []
        stored = [_decision_public(d) for d in decisions.get(row["pk"], [])]
        differing = _differing(
            {
                "generated_at": (isoformat(row["generated_at"]), subject.get("generated_at")),
                "generated_by": (row["made_by"], subject.get("generated_by")),
                "policy": (row["policy"], subject.get("retry_policy")),
                "provider_filter": (row["provider_filter"], subject.get("provider")),
                "health_filter": (row["health_filter"] or None, subject.get("health_id")),
                "alert_level": (row["alert_level"], subject.get("alert_level")),
                "decision_count": (row["decision_count"], subject.get("decision_count")),
                "retryable_count": (row["retryable_count"], subject.get("retryable_count")),
                "waiting_count": (row["waiting_count"], subject.get("waiting_count")),
                "suppressed_count": (row["suppressed_count"], subject.get("suppressed_count")),
                "decisions": (
                    [d["delivery_id"] for d in stored],
                    [d.get("delivery_id") for d in recorded],
                ),
            }
        )
        if differing:
            yield RecordMismatch("RetryPlan", plan_id, differing, evidence.sequence)
        if "decisions" in differing:
            continue
        for decision, entry in zip(stored, recorded, strict=True):
            fields = _differing(
                {name: (value, entry.get(name)) for name, value in decision.items()}
            )
            if fields:
                public_id = f"{plan_id}/{decision['delivery_id']}"
                yield RecordMismatch("RetryDecision", public_id, fields, evidence.sequence)


def _check_runs(rows: list[dict]) -> Iterator[RecordMismatch]:
    latest = latest_evidence((MetadataKind.WORKER_RUN,), in_chunk(WorkerRun, rows, "run_id"))
    for row in rows:
        evidence = latest.get(row["run_id"])
        if evidence is None:
            # A live run writes its evidence when it finishes (or is reaped as abandoned).
            if row["status"] == "running" and not row["dry_run"]:
                continue
            yield RecordMismatch("WorkerRun", row["run_id"], (), None)
            continue
        subject = evidence.subject
        differing = _differing(
            {
                "dry_run": (row["dry_run"], subject.get("dry_run")),
                "status": (row["status"], subject.get("status")),
                "started_at": (isoformat(row["started_at"]), subject.get("started_at")),
                "finished_at": (isoformat(row["finished_at"]), subject.get("finished_at")),
                "started_by": (row["made_by"], subject.get("started_by")),
                "retry_plan": (row["retry_plan__retry_plan_id"], subject.get("retry_plan_id")),
                "parameters": (row["parameters"], subject.get("parameters")),
                "schedule": (row["schedule"], subject.get("schedule")),
                "summary": (row["summary"], subject.get("summary")),
                "selected_retries": (row["selected_retries"], subject.get("selected_retries")),
            }
        )
        if differing:
            yield RecordMismatch("WorkerRun", row["run_id"], differing, evidence.sequence)


_EXECUTION_COLUMNS = (
    "execution_status",
    "skip_reason",
    "provider",
    "attempt_number",
    "trigger",
    "http_status",
    "error_class",
    "latency_ms",
    "retry_after_seconds",
    "request_fingerprint",
    "response_sha256",
    "execution_hash",
)


def _check_executions(rows: list[dict]) -> Iterator[RecordMismatch]:
    latest = latest_evidence(EXECUTION_KINDS, in_chunk(ExecutionRecord, rows, "execution_id"))
    for row in rows:
        evidence = latest.get(row["execution_id"])
        if evidence is None:
            yield RecordMismatch("ExecutionRecord", row["execution_id"], (), None)
            continue
        subject = evidence.subject
        planned = subject.get("retry_plan_id")
        differing = _differing(
            {
                **{name: (row[name], subject.get(name)) for name in _EXECUTION_COLUMNS},
                "executed_at": (isoformat(row["executed_at"]), subject.get("executed_at")),
                "executed_by": (row["made_by"], subject.get("executed_by")),
                "worker_run": (row["worker_run__run_id"], subject.get("worker_run_id")),
                # A decision belongs to one plan and one delivery: this record's delivery.
                "decision": (
                    [row["decision__plan__retry_plan_id"], row["decision__delivery__delivery_id"]],
                    [planned, subject.get("delivery_id") if planned else None],
                ),
                # The delivery's alert and report are checked with the delivery.
                "delivery": (row["delivery__delivery_id"], subject.get("delivery_id")),
            }
        )
        if differing:
            yield RecordMismatch(
                "ExecutionRecord", row["execution_id"], differing, evidence.sequence
            )


# -- deliveries: their state replayed from every evidence row that changed it -------------------

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
        .values_list("session_id", "sequence", Cast("payload", TextField()))
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
        .values_list("sequence", Cast("payload", TextField()))
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


_REPLAYED = (
    "status",
    "suppression_reason",
    "suppression_note",
    "attempt_count",
    "last_attempt_at",
    "retry_not_before",
    "delivered_at",
    "updated_at",
)


def _check_deliveries(rows: list[dict]) -> Iterator[RecordMismatch]:
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
        pairs = {name: (_comparable(row[name]), _comparable(expected[name])) for name in _REPLAYED}
        pairs["created_at"] = (isoformat(row["created_at"]), plan.payload.get("created_at"))
        pairs["provider"] = (
            [row["provider"], row["provider"] in (plan.subject.get("selected_providers") or [])],
            [row["connector__name"], True],
        )
        differing = _differing(pairs)
        if differing:
            sequence = max([plan.sequence] + [c.sequence for c in changes[row["pk"]]])
            yield RecordMismatch("AlertDelivery", delivery_id, differing, sequence)


def _comparable(value: Any) -> Any:
    return isoformat(value) if isinstance(value, datetime) else value


# -- connectors and their circuits share the connector's name as session ID ----------------------


def _check_connectors(rows: list[dict]) -> Iterator[RecordMismatch]:
    latest = latest_evidence((MetadataKind.CONNECTOR_CHANGE,), in_chunk(Connector, rows, "name"))
    for row in rows:
        evidence = latest.get(row["name"])
        if evidence is None:
            yield RecordMismatch("Connector", row["name"], (), None)
            continue
        after = evidence.subject.get("after") or {}
        differing = _differing(
            {
                "kind": (row["kind"], after.get("kind")),
                "enabled": (row["enabled"], after.get("enabled")),
                "description": (row["description"], after.get("description")),
                "accepted_counts_as_delivered": (
                    row["accepted_counts_as_delivered"],
                    after.get("accepted_counts_as_delivered"),
                ),
                "config_ciphertext": (bool(row["config_ciphertext"]), after.get("config_set")),
                "config_fingerprint": (row["config_fingerprint"], after.get("config_fingerprint")),
                "config_changed_at": (
                    isoformat(row["config_changed_at"]),
                    after.get("config_changed_at"),
                ),
                "config_fields": (row["config_fields"], after.get("config_fields")),
            }
        )
        if differing:
            yield RecordMismatch("Connector", row["name"], differing, evidence.sequence)


def _check_circuits(rows: list[dict]) -> Iterator[RecordMismatch]:
    latest = latest_evidence(
        (MetadataKind.CONNECTOR_CIRCUIT,), in_chunk(ConnectorCircuit, rows, "connector__name")
    )
    for row in rows:
        name = row["connector__name"]
        evidence = latest.get(name)
        stored = {
            "state": row["state"],
            "open_until": isoformat(row["open_until"]),
            "changed_at": isoformat(row["changed_at"]),
        }
        if evidence is None:
            # Never tripped: still the closed circuit it was created as.
            differing = _differing(
                {
                    "state": (stored["state"], "closed"),
                    "open_until": (stored["open_until"], None),
                    "changed_at": (stored["changed_at"], None),
                }
            )
            if differing:
                yield RecordMismatch("ConnectorCircuit", name, differing, None)
            continue
        subject = evidence.subject
        differing = _differing(
            {
                "state": (stored["state"], subject.get("state")),
                "open_until": (stored["open_until"], subject.get("open_until")),
                "changed_at": (stored["changed_at"], evidence.payload.get("created_at")),
            }
        )
        if differing:
            yield RecordMismatch("ConnectorCircuit", name, differing, evidence.sequence)


def _check_reviews(rows: list[dict]) -> Iterator[RecordMismatch]:
    latest = latest_evidence(
        (MetadataKind.CLOSURE_REVIEW,), in_chunk(ClosureReview, rows, "review_id")
    )
    for row in rows:
        evidence = latest.get(row["review_id"])
        if evidence is None:
            yield RecordMismatch("ClosureReview", row["review_id"], (), None)
            continue
        subject = evidence.subject
        differing = _differing(
            {
                "reviewed_at": (isoformat(row["reviewed_at"]), subject.get("reviewed_at")),
                "reviewer": (row["made_by"], subject.get("reviewer")),
                **{
                    name: (row[name], subject.get(name))
                    for name in (
                        "decision",
                        "closure_state",
                        "alert_level",
                        "open_items",
                        "risk_notes",
                        "note",
                        "snapshot",
                        "snapshot_sha256",
                    )
                },
            }
        )
        if differing:
            yield RecordMismatch("ClosureReview", row["review_id"], differing, evidence.sequence)


@dataclass(frozen=True)
class RecordKind:
    model: type[Model]
    fields: tuple
    check: Callable[[list[dict]], Iterator[RecordMismatch]]
    # The relation to the user who made the record, read as `made_by` (their username).
    made_by: str = ""


# In the order of the flow; each kind is read on its own in primary-key order.
RECORD_KINDS = (
    RecordKind(
        HealthReport,
        (
            "health_id",
            "generated_at",
            "alert_level",
            "alert_count",
            "findings",
            "counts",
            "parameters",
        ),
        _check_reports,
        made_by="generated_by",
    ),
    RecordKind(
        HealthAlert,
        (
            "alert_id",
            "health__health_id",
            "created_at",
            "forced",
            "selected_providers",
            "suppressed_providers",
            "payload",
        ),
        _check_alerts,
        made_by="created_by",
    ),
    RecordKind(
        AlertDelivery,
        (
            "delivery_id",
            "alert__alert_id",
            "alert__health__health_id",
            "connector__name",
            "provider",
            "created_at",
            *_REPLAYED,
        ),
        _check_deliveries,
    ),
    RecordKind(
        ExecutionRecord,
        (
            "execution_id",
            "executed_at",
            "worker_run__run_id",
            "decision__plan__retry_plan_id",
            "decision__delivery__delivery_id",
            "delivery__delivery_id",
            *_EXECUTION_COLUMNS,
        ),
        _check_executions,
        made_by="executed_by",
    ),
    RecordKind(
        Acknowledgement,
        (
            "ack_id",
            "alert__alert_id",
            "health__health_id",
            "connector__name",
            "provider",
            "state",
            "external_ref",
            "notes",
            "acknowledged_at",
        ),
        _check_acknowledgements,
        made_by="acknowledged_by",
    ),
    RecordKind(
        RetryPlan,
        (
            "retry_plan_id",
            "generated_at",
            "policy",
            "provider_filter",
            "health_filter",
            "alert_level",
            "decision_count",
            "retryable_count",
            "waiting_count",
            "suppressed_count",
        ),
        _check_plans,
        made_by="generated_by",
    ),
    RecordKind(
        WorkerRun,
        (
            "run_id",
            "dry_run",
            "status",
            "started_at",
            "finished_at",
            "retry_plan__retry_plan_id",
            "parameters",
            "schedule",
            "summary",
            "selected_retries",
        ),
        _check_runs,
        made_by="started_by",
    ),
    RecordKind(
        Connector,
        (
            "name",
            "kind",
            "enabled",
            "description",
            "accepted_counts_as_delivered",
            "config_ciphertext",
            "config_fingerprint",
            "config_changed_at",
            "config_fields",
        ),
        _check_connectors,
    ),
    RecordKind(
        ConnectorCircuit, ("connector__name", "state", "open_until", "changed_at"), _check_circuits
    ),
    RecordKind(
        ClosureReview,
        (
            "review_id",
            "reviewed_at",
            "decision",
            "closure_state",
            "alert_level",
            "open_items",
            "risk_notes",
            "note",
            "snapshot",
            "snapshot_sha256",
        ),
        _check_reviews,
        made_by="reviewer",
    ),
)


def _rows(kind: RecordKind, chunk_rows: int) -> Iterator[list[dict]]:
    """`kind.fields` of every record (and `made_by`, the username of the user who made it) in
    primary-key order, a chunk at a time."""
    made_by = {"made_by": F(f"{kind.made_by}__{_USER}")} if kind.made_by else {}
    after = 0
    while True:
        chunk = list(
            kind.model._default_manager.filter(pk__gt=after)
            .order_by("pk")
            .values("pk", *kind.fields, **made_by)[:chunk_rows]
        )
        if chunk:
            yield chunk
        if len(chunk) < chunk_rows:
            return
        after = chunk[-1]["pk"]


@contextmanager
def _snapshot() -> Iterator[None]:
    """On PostgreSQL, one repeatable-read snapshot for the whole check, without a statement
    timeout: records and evidence are read as of one instant, so a change committed meanwhile
    cannot look like an edit. Elsewhere nothing (a SQLite transaction would take the write
    lock); run it while no one writes."""
    if connection.vendor != "postgresql":
        yield
        return
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        with connection.cursor() as cursor:
            if outermost:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cursor.execute("SET LOCAL statement_timeout = 0")
        yield


def evidence_records_verify(*, chunk_rows: int = CHUNK_ROWS) -> RecordsVerification:
    """Check every evidence-bearing record against its latest evidence; writes nothing."""
    result = RecordsVerification()
    with _snapshot():
        for kind in RECORD_KINDS:
            name = kind.model.__name__
            result.checked[name] = 0
            for chunk in _rows(kind, chunk_rows):
                result.checked[name] += len(chunk)
                for mismatch in kind.check(chunk):
                    result.add(mismatch)
    return result


def verification_body(chain: dict, records: RecordsVerification | None) -> dict:
    """The chain's verification (`ChainVerification.as_dict()`), with the records' check under
    `records` when it ran: `ok` then holds only if both do."""
    if records is None:
        return chain
    return {**chain, "ok": chain["ok"] and records.ok, "records": records.as_dict()}


__all__ = [
    "RecordMismatch",
    "RecordsVerification",
    "delivery_replay",
    "evidence_records_verify",
    "latest_evidence",
    "verification_body",
]
