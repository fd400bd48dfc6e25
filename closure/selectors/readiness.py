"""Release readiness (a read) and the operator runbook document built from it.

`release_readiness` is a selector: it reads the closure dashboard, the latest closure review and
the evidence chain, and writes nothing. `runbook_build` turns a readiness result into the
runbook's sections, and `runbook_markdown` renders them; the console can render the same
sections as HTML. `runbook_recorded` reads an export back as it was recorded.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Window
from django.utils import timezone

from closure.choices import (
    LEDGER_READ_KINDS,
    TERMINAL_DELIVERY_STATUSES,
    ClosureState,
    ExecutionStatus,
    ExecutionTrigger,
    MetadataKind,
    ReviewDecision,
)
from closure.evidence.canonical import isoformat, sha256_hex
from closure.evidence.chain import json_loads
from closure.evidence.ledger import ChainVerification, evidence_verify, stored_payload_bytes
from closure.models import ClosureReview, Evidence, ExecutionRecord
from closure.selectors.dashboard import A, B, closure_dashboard

READINESS_SCHEMA_VERSION = (
    "cavra.go-backend-pilot.rollback-drill-final-reporting-release-readiness.v1"
)
RUNBOOK_SCHEMA_VERSION = "cavra.go-backend-pilot.rollback-drill-final-reporting-operator-runbook.v1"
MAX_EVIDENCE_REFS = 5
APPROVE = "approve_release_closure"
HOLD = "hold_release_closure"


def _check(check_id: str, title: str, passed: bool, evidence: list[str], action: str) -> dict:
    return {
        "id": check_id,
        "title": title,
        "status": "pass" if passed else "fail",
        "evidence": evidence,
        "operator_action": None if passed else action,
    }


def _risk_count(dashboard: dict, code: str) -> int:
    return next((r["count"] for r in dashboard["risks"] if r["code"] == code), 0)


def _failed_retry_executions() -> tuple[int, list[str]]:
    """Failed retry and manual attempts whose delivery is still not delivered or suppressed:
    the count and the oldest few public IDs, in one query (a window count)."""
    rows = list(
        ExecutionRecord.objects.filter(
            execution_status=ExecutionStatus.FAILED,
            trigger__in=[ExecutionTrigger.RETRY, ExecutionTrigger.MANUAL],
        )
        .exclude(delivery__status__in=TERMINAL_DELIVERY_STATUSES)
        .order_by("executed_at", "id")
        .annotate(total=Window(expression=Count("pk")))
        .values_list("execution_id", "total")[:MAX_EVIDENCE_REFS]
    )
    return (rows[0][1] if rows else 0), [execution_id for execution_id, _ in rows]


def _review_check(dashboard: dict) -> tuple[dict, dict | None]:
    review = ClosureReview.objects.select_related("reviewer").newest_first().first()
    title = "The latest closure review covers the current state"
    action = f"Record a closure review: POST {B}/final-reporting-closure-reviews."
    if review is None:
        return _check("closure_review_recorded", title, False, ["latest_review=none"], action), None
    review_sequence = (
        Evidence.objects.filter(
            metadata_kind=MetadataKind.CLOSURE_REVIEW, session_id=review.review_id
        )
        .values_list("sequence", flat=True)
        .first()
    ) or 0
    changes_since = (
        Evidence.objects.filter(sequence__gt=review_sequence)
        .exclude(metadata_kind__in=LEDGER_READ_KINDS)
        .count()
    )
    if review.decision == ReviewDecision.CONFIRM_CLOSED:
        covers = dashboard["closure_state"] == ClosureState.CLOSED
    else:
        covers = set(dashboard["open_items"]) <= set(review.open_items)
    evidence = [
        f"latest_review={review.review_id}",
        f"decision={review.decision}",
        f"reviewed_at={isoformat(review.reviewed_at)}",
        f"reviewed_closure_state={review.closure_state}",
        f"review_evidence_sequence={review_sequence}",
        f"changes_since_review={changes_since}",
    ]
    passed = covers and changes_since == 0
    if not passed:
        action = (
            f"The reporting loop changed since the latest review; review it again: POST "
            f"{B}/final-reporting-closure-reviews."
        )
    summary = {
        "review_id": review.review_id,
        "reviewed_at": isoformat(review.reviewed_at),
        "reviewer": review.reviewer.get_username(),
        "decision": review.decision,
        "closure_state": review.closure_state,
        "snapshot_sha256": review.snapshot_sha256,
        "evidence_sequence": review_sequence,
    }
    return _check("closure_review_recorded", title, passed, evidence, action), summary


def _check_closure_closed(dashboard: dict) -> dict:
    return _check(
        "closure_closed",
        "The final reporting closure is closed",
        dashboard["closure_state"] == ClosureState.CLOSED,
        [
            f"closure_state={dashboard['closure_state']}",
            f"open_item_count={dashboard['open_item_count']}",
            f"open_items={','.join(dashboard['open_items'])}",
        ],
        f"Work through the open risks on GET {B}/final-reporting-closure-dashboard; each "
        f"names the action that closes it.",
    )


def _check_delivery_failures(dashboard: dict) -> dict:
    failed = _risk_count(dashboard, "executive_retry_health_alert_delivery_failed")
    exhausted = _risk_count(dashboard, "executive_retry_health_alert_delivery_exhausted")
    return _check(
        "alert_delivery_failures_resolved",
        "No unresolved alert delivery failures",
        failed == 0 and exhausted == 0,
        [f"failed_deliveries={failed}", f"exhausted_deliveries={exhausted}"],
        f"Plan and run retries (POST {A}/retry-plan, then POST {A}/retry-worker-run with "
        f"execute=true), retry by hand, or waive with a reason.",
    )


def _check_retry_executions(dashboard: dict) -> dict:
    failed_executions, execution_refs = _failed_retry_executions()
    worker_failed = _risk_count(dashboard, "executive_retry_health_alert_retry_worker_failed")
    return _check(
        "retry_execution_failures_resolved",
        "No unresolved retry execution failures",
        failed_executions == 0 and worker_failed == 0,
        [
            f"unresolved_failed_retry_executions={failed_executions}",
            f"refs={','.join(execution_refs)}",
            f"latest_live_worker_run_failed={'true' if worker_failed else 'false'}",
        ],
        f"Inspect the failed execution records (GET /api/v1/execution-records/"
        f"?execution_status=failed), fix the connector, then run the worker live again "
        f"(POST {A}/retry-worker-run with execute=true).",
    )


def _check_acknowledgements(dashboard: dict) -> dict:
    outstanding = _risk_count(dashboard, "executive_retry_health_alert_acknowledgement_outstanding")
    return _check(
        "acknowledgements_complete",
        "Every delivered alert is acknowledged",
        outstanding == 0,
        [f"outstanding_acknowledgements={outstanding}"],
        f"Record each recipient's acknowledgement: POST {A}/{{health_id}}/acknowledgements.",
    )


def _check_evidence_chain(chain: ChainVerification) -> dict:
    checkpoint = chain.as_dict()["checkpoint"]
    return _check(
        "evidence_chain_verifies",
        "The evidence chain verifies",
        chain.ok,
        [
            f"evidence_ok={'true' if chain.ok else 'false'}",
            f"evidence_count={chain.count}",
            f"evidence_head={chain.head}",
            f"first_broken_sequence={chain.first_broken_sequence or ''}",
            f"checkpoint_head_sequence={checkpoint['head_sequence'] if checkpoint else ''}",
            f"evidence_verified={chain.verified_rows()}",
        ],
        f"Stop and escalate: the ledger was changed outside the application (first broken "
        f"sequence {chain.first_broken_sequence}: {chain.problem}). Do not release.",
    )


def release_readiness(*, now: datetime | None = None, full: bool = False) -> dict:
    """Whether the release's reporting closure may be approved, check by check. Reads only.

    Its cost is the closure dashboard's fixed queries plus one streaming pass over the evidence
    rows from the latest validly signed checkpoint on (the whole chain without one, or with
    `full`); the chain check says which rows the checkpoint proves and which were verified now.
    docs/evidence.md has the measured cost.
    """
    now = now or timezone.now()
    dashboard = closure_dashboard(now=now)
    # Read in this order: the failed executions, the chain, then the latest review.
    executions_check = _check_retry_executions(dashboard)
    chain = evidence_verify(full=full)
    review_check, review = _review_check(dashboard)
    checks = [
        _check_closure_closed(dashboard),
        _check_delivery_failures(dashboard),
        executions_check,
        _check_acknowledgements(dashboard),
        _check_evidence_chain(chain),
        review_check,
    ]
    failing = [c["id"] for c in checks if c["status"] == "fail"]
    if failing:
        decision = HOLD
        reason = f"{len(failing)} of {len(checks)} readiness checks fail: {', '.join(failing)}."
    else:
        decision = APPROVE
        reason = (
            f"All {len(checks)} readiness checks pass: closure is closed, confirmed by "
            f"{review['review_id']}, and the evidence chain verifies through sequence "
            f"{chain.count}."
        )
    return {
        "schema_version": READINESS_SCHEMA_VERSION,
        "generated_at": isoformat(now),
        "readiness_state": "blocked" if failing else "ready",
        "release_decision": decision,
        "release_decision_reason": reason,
        "passed_count": len(checks) - len(failing),
        "failed_count": len(failing),
        "checks": checks,
        "closure": {
            "closure_state": dashboard["closure_state"],
            "alert_level": dashboard["alert_level"],
            "open_items": dashboard["open_items"],
        },
        "latest_closure_review": review,
        "evidence_chain": {
            **chain.as_dict(),
            "proven_by_checkpoint_through": chain.proven_through or None,
            "verified": chain.verified_rows(),
        },
    }


# -- the operator runbook -----------------------------------------------------------------------


def _section(section_id: str, title: str, paragraphs=(), items=(), ordered=False, **extra):
    return {
        "id": section_id,
        "title": title,
        "paragraphs": list(paragraphs),
        "items": list(items),
        "ordered": ordered,
        **extra,
    }


PURPOSE = (
    "Close the last mile of release-governance reporting for the rollback drill: prove that "
    "every executive retry health alert reached its recipients or was consciously waived, that "
    "the evidence of it is complete and unaltered, and record the release decision."
)
PRIVATE_BOUNDARY = [
    "Public: public IDs, counts, states, connector names, timestamps, hashes and evidence "
    "sequence numbers.",
    "Never: connector URLs, tokens, signing secrets, SMTP credentials or API tokens; they are "
    "encrypted at rest and absent from evidence and exports.",
    "Never: the evidence signing private key. Only its public key "
    "(`python manage.py evidence_public_key`) is shared with auditors.",
    "Response bodies of connectors appear only as a hash and a short redacted excerpt.",
]


def _operator_steps(readiness: dict) -> list[str]:
    """What fails first, each with its action, then the closing steps every release takes."""
    steps = [
        f"{c['title']}: {c['operator_action']}"
        for c in readiness["checks"]
        if c["status"] == "fail"
    ]
    return [
        *steps,
        "Verify the evidence chain: `python manage.py verify_evidence` (or GET "
        "/api/v1/evidence/verify/); it must report ok.",
        "Write a signed checkpoint of the chain head: `python manage.py evidence_checkpoint`, "
        "and keep its output outside the database.",
        f"Record a closure review of the dashboard: POST {B}/final-reporting-closure-reviews "
        f"(confirm_closed once the dashboard is closed).",
        f"Re-read release readiness: GET {B}/final-reporting-release-readiness; release only on "
        f"{APPROVE}.",
        "Export the evidence bundle (POST /api/v1/evidence/export/ or `python manage.py "
        "export_evidence`) and verify it offline: `python -m closure.verify_export BUNDLE "
        "--public-key <published key>`.",
    ]


def _evidence_to_attach(
    readiness: dict, runbook_id: str, readiness_evidence: dict | None
) -> list[str]:
    chain = readiness["evidence_chain"]
    review = readiness["latest_closure_review"]
    attach = []
    if readiness_evidence:
        attach.append(
            f"Release readiness summary: evidence sequence {readiness_evidence['sequence']}, "
            f"chain hash {readiness_evidence['chain_hash']}."
        )
    attach.append(
        f"This runbook export: evidence row with session_id {runbook_id} "
        f"({MetadataKind.RUNBOOK_EXPORT.value})."
    )
    if review:
        attach.append(
            f"Latest closure review {review['review_id']} ({review['decision']}, "
            f"{review['reviewed_at']}), dashboard snapshot SHA-256 {review['snapshot_sha256']}."
        )
    attach.append(f"Evidence chain head at sequence {chain['count']}: {chain['head']}.")
    if chain["checkpoint"]:
        attach.append(
            f"Latest signed checkpoint: sequence {chain['checkpoint']['head_sequence']}, "
            f"key {chain['checkpoint']['key_id']}, {chain['checkpoint']['checkpointed_at']}."
        )
    attach.append("The verified evidence export bundle (manifest.json and its data file).")
    return attach


def runbook_build(
    *, readiness: dict, runbook_id: str, generated_by: str, readiness_evidence: dict | None
) -> dict:
    """The runbook's content as data: a title, the gate's outcome and six sections (purpose,
    readiness gate, operator steps, evidence to attach, private boundary, checks)."""
    gate = (
        f"Readiness is {readiness['readiness_state']}; release decision "
        f"{readiness['release_decision']}. {readiness['release_decision_reason']}"
    )
    gate_items = [f"{c['status'].upper()}: {c['title']} ({c['id']})" for c in readiness["checks"]]
    boundary = "What may leave the system with this runbook, and what never does."
    return {
        "schema_version": RUNBOOK_SCHEMA_VERSION,
        "runbook_id": runbook_id,
        "title": "CAVRA final reporting closure: operator runbook",
        "generated_at": readiness["generated_at"],
        "generated_by": generated_by,
        "readiness_state": readiness["readiness_state"],
        "release_decision": readiness["release_decision"],
        "release_decision_reason": readiness["release_decision_reason"],
        "sections": [
            _section("purpose", "Purpose", paragraphs=[PURPOSE]),
            _section("readiness_gate", "Readiness gate", paragraphs=[gate], items=gate_items),
            _section(
                "operator_steps", "Operator steps", items=_operator_steps(readiness), ordered=True
            ),
            _section(
                "evidence_to_attach",
                "Evidence to attach",
                items=_evidence_to_attach(readiness, runbook_id, readiness_evidence),
            ),
            _section(
                "private_boundary",
                "Private boundary",
                paragraphs=[boundary],
                items=PRIVATE_BOUNDARY,
            ),
            _section("checks", "Checks", checks=readiness["checks"]),
        ],
    }


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def runbook_markdown(runbook: dict) -> str:
    """The runbook as a Markdown document (deterministic for the same runbook)."""
    lines = [
        f"# {runbook['title']}",
        "",
        f"- Runbook: `{runbook['runbook_id']}`",
        f"- Generated: {runbook['generated_at']} by {runbook['generated_by']}",
        f"- Readiness: **{runbook['readiness_state']}**",
        f"- Release decision: **{runbook['release_decision']}**",
        f"- Reason: {runbook['release_decision_reason']}",
    ]
    for section in runbook["sections"]:
        lines += ["", f"## {section['title']}", ""]
        for paragraph in section["paragraphs"]:
            lines += [paragraph, ""]
        for number, item in enumerate(section["items"], start=1):
            lines.append(f"{number}. {item}" if section["ordered"] else f"- {item}")
        if section.get("checks"):
            lines += [
                "| Check | Result | Evidence | Operator action |",
                "|---|---|---|---|",
            ]
            for check in section["checks"]:
                evidence = "<br>".join(f"`{_md_cell(e)}`" for e in check["evidence"])
                lines.append(
                    f"| {_md_cell(check['title'])} (`{check['id']}`) "
                    f"| {check['status'].upper()} | {evidence} "
                    f"| {_md_cell(check['operator_action'] or '-')} |"
                )
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RecordedRunbook:
    """A runbook export as it was recorded: the runbook, its Markdown and both evidence rows."""

    runbook: dict
    markdown: str
    markdown_sha256: str
    runbook_evidence: Evidence
    readiness_evidence: Evidence


def runbook_recorded(runbook_id: str) -> RecordedRunbook | None:
    """The runbook export recorded under `runbook_id`, read from its evidence row's stored text
    (the bytes its hash covers, not the normalised jsonb copy), or None if there is none or it was
    recorded before exports kept their document.

    Raises `ValueError` if the stored Markdown no longer hashes to the recorded SHA-256."""
    row = (
        Evidence.objects.filter(metadata_kind=MetadataKind.RUNBOOK_EXPORT, session_id=runbook_id)
        .order_by("sequence")
        .first()
    )
    if row is None:
        return None
    subject = json_loads(stored_payload_bytes(row))["subject"]
    if "markdown" not in subject or "runbook" not in subject:
        return None
    if sha256_hex(subject["markdown"]) != subject["markdown_sha256"]:
        raise ValueError(f"runbook {runbook_id!r}: stored Markdown does not match its SHA-256")
    readiness_row = Evidence.objects.get(sequence=subject["readiness_evidence_sequence"])
    return RecordedRunbook(
        runbook=subject["runbook"],
        markdown=subject["markdown"],
        markdown_sha256=subject["markdown_sha256"],
        runbook_evidence=row,
        readiness_evidence=readiness_row,
    )
