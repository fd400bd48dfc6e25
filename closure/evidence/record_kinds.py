"""What each kind of evidence-bearing record is compared with: the fields of its latest
evidence row's subject (and envelope) that speak for the record's stored fields.

When a service changes what it records, its kind here changes with it (docs/evidence.md,
"Records agree with the ledger", lists what each kind covers and what it cannot).
"""

from collections.abc import Iterator
from itertools import groupby

from closure.choices import MetadataKind
from closure.evidence.canonical import isoformat, sha256_hex
from closure.evidence.record_deliveries import EXECUTION_KINDS, REPLAYED, deliveries_check
from closure.evidence.record_match import (
    FieldPairs,
    Latest,
    RecordKind,
    RecordMismatch,
    differing,
    in_chunk,
    latest_evidence,
)
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    ClosureReview,
    Connector,
    ConnectorCircuit,
    ExecutionRecord,
    HealthAlert,
    HealthReport,
    RetryDecision,
    RetryPlan,
    WorkerRun,
)
from closure.models.reviews import REVIEW_OUTCOME_FIELDS
from closure.models.runs import EXECUTION_OUTCOME_FIELDS

ALERT_PAYLOAD_TYPE = "cavra.executive_retry_health_alert"


def _same_names(row: dict, subject: dict, names: tuple[str, ...]) -> FieldPairs:
    """Fields stored and recorded under the same name."""
    return {name: (row[name], subject.get(name)) for name in names}


_REPORT_FIELDS = ("alert_level", "alert_count", "findings", "counts", "parameters")


def _report_pairs(row: dict, evidence: Latest, context: None) -> FieldPairs:
    subject = evidence.subject
    return {
        "generated_at": (isoformat(row["generated_at"]), subject.get("generated_at")),
        "generated_by": (row["made_by"], subject.get("generated_by")),
        **_same_names(row, subject, _REPORT_FIELDS),
    }


def _alert_reports(rows: list[dict]) -> dict[str, Latest]:
    """The latest evidence of the chunk's alerts' reports: the message is checked against it."""
    return latest_evidence((MetadataKind.HEALTH,), in_chunk(HealthAlert, rows, "health__health_id"))


def _alert_pairs(row: dict, evidence: Latest, reports: dict[str, Latest]) -> FieldPairs:
    subject = evidence.subject
    report_row = reports.get(row["health__health_id"])
    report = report_row.subject if report_row else {}
    # The message is the report's as the alert was made, from the ledger on both sides: the
    # alert's own fields from its evidence, the report's from the report's.
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
    return {
        "health": (row["health__health_id"], subject.get("health_id")),
        "created_at": (isoformat(row["created_at"]), evidence.payload.get("created_at")),
        "created_by": (row["made_by"], evidence.payload.get("signer")),
        **_same_names(row, subject, ("forced", "selected_providers", "suppressed_providers")),
        "payload": (message, expected_payload),
    }


def _acknowledgement_pairs(row: dict, evidence: Latest, context: None) -> FieldPairs:
    subject = evidence.subject
    # Rows written before the ledger held the notes' hash say only whether there were any.
    notes = (
        (sha256_hex(row["notes"]), subject["notes_sha256"])
        if "notes_sha256" in subject
        else (bool(row["notes"]), subject.get("notes_present"))
    )
    return {
        "alert": (row["alert__alert_id"], subject.get("alert_id")),
        "health": (row["health__health_id"], subject.get("health_id")),
        "connector": (row["connector__name"], subject.get("provider")),
        "provider": (row["provider"], subject.get("provider")),
        "state": (row["state"], subject.get("acknowledgement_state")),
        "external_ref": (row["external_ref"], subject.get("external_ref")),
        "notes": notes,
        "acknowledged_at": (isoformat(row["acknowledged_at"]), evidence.payload.get("created_at")),
        "acknowledged_by": (row["made_by"], evidence.payload.get("signer")),
    }


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


_PLAN_COUNTS = (
    "alert_level",
    "decision_count",
    "retryable_count",
    "waiting_count",
    "suppressed_count",
)


def _plan_pairs(row: dict, subject: dict, stored: list[dict]) -> FieldPairs:
    recorded = subject.get("retry_decisions") or []
    return {
        "generated_at": (isoformat(row["generated_at"]), subject.get("generated_at")),
        "generated_by": (row["made_by"], subject.get("generated_by")),
        "policy": (row["policy"], subject.get("retry_policy")),
        "provider_filter": (row["provider_filter"], subject.get("provider")),
        "health_filter": (row["health_filter"] or None, subject.get("health_id")),
        **_same_names(row, subject, _PLAN_COUNTS),
        "decisions": (
            [d["delivery_id"] for d in stored],
            [d.get("delivery_id") for d in recorded],
        ),
    }


def _plans_check(rows: list[dict]) -> Iterator[RecordMismatch]:
    """A plan against its evidence, and each of its decisions against the subject's entry."""
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
        stored = [_decision_public(d) for d in decisions.get(row["pk"], [])]
        fields = differing(_plan_pairs(row, evidence.subject, stored))
        if fields:
            yield RecordMismatch("RetryPlan", plan_id, fields, evidence.sequence)
        if "decisions" in fields:
            continue
        recorded = evidence.subject.get("retry_decisions") or []
        for decision, entry in zip(stored, recorded, strict=True):
            decision_fields = differing(
                {name: (value, entry.get(name)) for name, value in decision.items()}
            )
            if decision_fields:
                public_id = f"{plan_id}/{decision['delivery_id']}"
                yield RecordMismatch("RetryDecision", public_id, decision_fields, evidence.sequence)


_RUN_FIELDS = ("dry_run", "status", "parameters", "schedule", "summary", "selected_retries")


def _run_pairs(row: dict, evidence: Latest, context: None) -> FieldPairs:
    subject = evidence.subject
    return {
        **_same_names(row, subject, _RUN_FIELDS),
        "started_at": (isoformat(row["started_at"]), subject.get("started_at")),
        "finished_at": (isoformat(row["finished_at"]), subject.get("finished_at")),
        "started_by": (row["made_by"], subject.get("started_by")),
        "retry_plan": (row["retry_plan__retry_plan_id"], subject.get("retry_plan_id")),
    }


def _unrecorded_run(row: dict) -> FieldPairs | None:
    # A live run writes its evidence when it finishes (or is reaped as abandoned).
    return {} if row["status"] == "running" and not row["dry_run"] else None


_EXECUTION_COLUMNS = ("execution_status", "skip_reason", *EXECUTION_OUTCOME_FIELDS)


def _execution_pairs(row: dict, evidence: Latest, context: None) -> FieldPairs:
    subject = evidence.subject
    planned = subject.get("retry_plan_id")
    return {
        **_same_names(row, subject, _EXECUTION_COLUMNS),
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


_CONNECTOR_FIELDS = ("kind", "enabled", "description", "accepted_counts_as_delivered")


def _connector_pairs(row: dict, evidence: Latest, context: None) -> FieldPairs:
    after = evidence.subject.get("after") or {}
    return {
        **_same_names(row, after, _CONNECTOR_FIELDS),
        "config_ciphertext": (bool(row["config_ciphertext"]), after.get("config_set")),
        "config_fingerprint": (row["config_fingerprint"], after.get("config_fingerprint")),
        "config_changed_at": (isoformat(row["config_changed_at"]), after.get("config_changed_at")),
        "config_fields": (row["config_fields"], after.get("config_fields")),
    }


def _circuit_stored(row: dict) -> tuple[str, str | None, str | None]:
    return row["state"], isoformat(row["open_until"]), isoformat(row["changed_at"])


def _circuit_pairs(row: dict, evidence: Latest, context: None) -> FieldPairs:
    state, open_until, changed_at = _circuit_stored(row)
    return {
        "state": (state, evidence.subject.get("state")),
        "open_until": (open_until, evidence.subject.get("open_until")),
        "changed_at": (changed_at, evidence.payload.get("created_at")),
    }


def _unrecorded_circuit(row: dict) -> FieldPairs:
    # Never tripped: still the closed circuit it was created as.
    state, open_until, changed_at = _circuit_stored(row)
    return {
        "state": (state, "closed"),
        "open_until": (open_until, None),
        "changed_at": (changed_at, None),
    }


_REVIEW_FIELDS = (*REVIEW_OUTCOME_FIELDS, "snapshot", "snapshot_sha256")


def _review_pairs(row: dict, evidence: Latest, context: None) -> FieldPairs:
    subject = evidence.subject
    return {
        "reviewed_at": (isoformat(row["reviewed_at"]), subject.get("reviewed_at")),
        "reviewer": (row["made_by"], subject.get("reviewer")),
        **_same_names(row, subject, _REVIEW_FIELDS),
    }


# In the order of the flow; each kind is read on its own in primary-key order.
RECORD_KINDS = (
    RecordKind(
        HealthReport,
        "health_id",
        ("generated_at", *_REPORT_FIELDS),
        (MetadataKind.HEALTH,),
        _report_pairs,
        made_by="generated_by",
    ),
    RecordKind(
        HealthAlert,
        "alert_id",
        (
            "health__health_id",
            "created_at",
            "forced",
            "selected_providers",
            "suppressed_providers",
            "payload",
        ),
        (MetadataKind.ALERT_PLAN,),
        _alert_pairs,
        context=_alert_reports,
        made_by="created_by",
    ),
    RecordKind(
        AlertDelivery,
        "delivery_id",
        (
            "alert__alert_id",
            "alert__health__health_id",
            "connector__name",
            "provider",
            "created_at",
            *REPLAYED,
        ),
        check=deliveries_check,
    ),
    RecordKind(
        ExecutionRecord,
        "execution_id",
        (
            "executed_at",
            "worker_run__run_id",
            "decision__plan__retry_plan_id",
            "decision__delivery__delivery_id",
            "delivery__delivery_id",
            *_EXECUTION_COLUMNS,
        ),
        EXECUTION_KINDS,
        _execution_pairs,
        made_by="executed_by",
    ),
    RecordKind(
        Acknowledgement,
        "ack_id",
        (
            "alert__alert_id",
            "health__health_id",
            "connector__name",
            "provider",
            "state",
            "external_ref",
            "notes",
            "acknowledged_at",
        ),
        (MetadataKind.ALERT_ACK,),
        _acknowledgement_pairs,
        made_by="acknowledged_by",
    ),
    RecordKind(
        RetryPlan,
        "retry_plan_id",
        (
            "generated_at",
            "policy",
            "provider_filter",
            "health_filter",
            *_PLAN_COUNTS,
        ),
        check=_plans_check,
        made_by="generated_by",
    ),
    RecordKind(
        WorkerRun,
        "run_id",
        (*_RUN_FIELDS, "started_at", "finished_at", "retry_plan__retry_plan_id"),
        (MetadataKind.WORKER_RUN,),
        _run_pairs,
        unrecorded=_unrecorded_run,
        made_by="started_by",
    ),
    RecordKind(
        Connector,
        "name",
        (
            *_CONNECTOR_FIELDS,
            "config_ciphertext",
            "config_fingerprint",
            "config_changed_at",
            "config_fields",
        ),
        (MetadataKind.CONNECTOR_CHANGE,),
        _connector_pairs,
    ),
    RecordKind(
        ConnectorCircuit,
        "connector__name",
        ("state", "open_until", "changed_at"),
        (MetadataKind.CONNECTOR_CIRCUIT,),
        _circuit_pairs,
        unrecorded=_unrecorded_circuit,
    ),
    RecordKind(
        ClosureReview,
        "review_id",
        ("reviewed_at", *_REVIEW_FIELDS),
        (MetadataKind.CLOSURE_REVIEW,),
        _review_pairs,
        made_by="reviewer",
    ),
)
