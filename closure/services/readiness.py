"""Exporting the operator runbook, with the readiness it was built from, as evidence."""

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.canonical import canonical_json, sha256_hex
from closure.evidence.ledger import evidence_append, evidence_envelope
from closure.models import Evidence
from closure.models.base import PublicId
from closure.selectors.readiness import release_readiness, runbook_build, runbook_markdown
from closure.services.common import signer_of

READINESS_ID_PREFIX = "gordackfinalreleasereadiness-"
RUNBOOK_ID_PREFIX = "gordackfinaloperatorrunbook-"


@dataclass(frozen=True)
class RunbookExport:
    runbook: dict
    markdown: str
    readiness: dict
    readiness_evidence: Evidence
    runbook_evidence: Evidence


def readiness_summary(readiness: dict) -> dict:
    """What the readiness-summary evidence keeps: the outcome and every check's evidence."""
    return {
        "generated_at": readiness["generated_at"],
        "readiness_state": readiness["readiness_state"],
        "release_decision": readiness["release_decision"],
        "release_decision_reason": readiness["release_decision_reason"],
        "checks": [
            {"id": c["id"], "status": c["status"], "evidence": c["evidence"]}
            for c in readiness["checks"]
        ],
        "closure": readiness["closure"],
        "latest_closure_review": readiness["latest_closure_review"],
        "evidence_chain": {
            key: readiness["evidence_chain"][key]
            for key in ("ok", "count", "head", "first_broken_sequence")
        },
    }


def runbook_export(*, actor, now: datetime | None = None) -> RunbookExport:
    """Compute release readiness, then record its summary and the runbook built from it.

    Readiness (with its pass over the evidence chain) is read before the transaction opens, so
    the ledger's append lock is held only for the two short appends. The export's evidence row
    keeps the runbook and its Markdown, which `runbook_recorded` reads back by `runbook_id`.
    """
    now = now or timezone.now()
    readiness = release_readiness(now=now)
    readiness_id = PublicId(READINESS_ID_PREFIX)()
    runbook_id = PublicId(RUNBOOK_ID_PREFIX)()
    signer = signer_of(actor)
    failed = readiness["failed_count"]
    with transaction.atomic(durable=True):
        summary_row = evidence_append(
            kind=MetadataKind.READINESS_SUMMARY,
            session_id=readiness_id,
            signer=signer,
            subject={"readiness_id": readiness_id, **readiness_summary(readiness)},
            decision_count=len(readiness["checks"]),
            blocked_count=failed,
            now=now,
        )
        runbook = runbook_build(
            readiness=readiness,
            runbook_id=runbook_id,
            generated_by=signer,
            readiness_evidence=evidence_envelope(summary_row),
        )
        markdown = runbook_markdown(runbook)
        runbook_row = evidence_append(
            kind=MetadataKind.RUNBOOK_EXPORT,
            session_id=runbook_id,
            signer=signer,
            subject={
                "runbook_id": runbook_id,
                "readiness_id": readiness_id,
                "readiness_evidence_sequence": summary_row.sequence,
                "readiness_state": readiness["readiness_state"],
                "release_decision": readiness["release_decision"],
                "sections": [section["id"] for section in runbook["sections"]],
                "runbook_sha256": sha256_hex(canonical_json(runbook)),
                "markdown_sha256": sha256_hex(markdown),
                # The document itself, so that it downloads later byte for byte by its id:
                # readiness moves on, and the runbook cannot be rebuilt from a later state.
                "runbook": runbook,
                "markdown": markdown,
            },
            decision_count=len(readiness["checks"]),
            blocked_count=failed,
            now=now,
        )
    return RunbookExport(runbook, markdown, readiness, summary_row, runbook_row)
