"""Recording a review of the final reporting closure dashboard."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from closure.choices import ClosureState, MetadataKind, ReviewDecision, Severity
from closure.evidence.canonical import canonical_json, isoformat, sha256_hex
from closure.evidence.ledger import evidence_append
from closure.models import ClosureReview
from closure.selectors import closure_dashboard
from closure.services.common import signer_of
from closure.services.errors import Conflict, InvalidInput


def closure_review_serialize(review: ClosureReview, *, snapshot: bool = True) -> dict:
    body = {
        "review_id": review.review_id,
        "reviewed_at": isoformat(review.reviewed_at),
        "reviewer": review.reviewer.get_username(),
        "decision": review.decision,
        "closure_state": review.closure_state,
        "alert_level": review.alert_level,
        "open_items": review.open_items,
        "risk_notes": review.risk_notes,
        "note": review.note,
        "snapshot_sha256": review.snapshot_sha256,
    }
    if snapshot:
        body["snapshot"] = review.snapshot
    return body


def _check_notes(decision: str, dashboard: dict, risk_notes: dict[str, str]) -> dict[str, str]:
    """The notes to store; raises when the decision does not fit the dashboard."""
    open_items = dashboard["open_items"]
    if decision == ReviewDecision.CONFIRM_CLOSED:
        if dashboard["closure_state"] != ClosureState.CLOSED:
            raise Conflict(
                f"closure is open ({', '.join(open_items)}); confirm_closed needs a closed "
                f"dashboard, or accept the open risks with a note on each",
                code="closure_not_closed",
            )
        if risk_notes:
            raise InvalidInput(
                "risk_notes belong to accept_open_risks",
                errors={f"risk_notes.{code}": ["Not an open risk."] for code in risk_notes},
            )
        return {}
    if not open_items:
        raise Conflict(
            "closure is closed: there are no open risks to accept; confirm_closed instead",
            code="no_open_risks",
        )
    notes = {code: note.strip() for code, note in risk_notes.items()}
    errors = {
        f"risk_notes.{code}": ["A note is required for this open risk."]
        for code in open_items
        if not notes.get(code)
    }
    errors |= {
        f"risk_notes.{code}": ["Not an open risk."] for code in notes if code not in open_items
    }
    if errors:
        missing = [code for code in open_items if not notes.get(code)]
        raise InvalidInput(
            f"a note is required for every open risk; missing: {', '.join(missing)}"
            if missing
            else "notes given for risks that are not open",
            code="risk_notes_missing" if missing else "risk_notes_unknown",
            errors=errors,
        )
    return {code: notes[code] for code in open_items}


def closure_review_create(
    *,
    actor,
    decision: str,
    risk_notes: dict[str, str] | None = None,
    note: str = "",
    now: datetime | None = None,
) -> ClosureReview:
    """Record the reviewer's decision on the dashboard as it is now, with its evidence.

    The dashboard is computed inside the transaction, so the snapshot stored, hashed and put in
    the evidence is the one the decision was checked against.
    """
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        dashboard = closure_dashboard(now=now)
        notes = _check_notes(decision, dashboard, risk_notes or {})
        review = ClosureReview.objects.create(
            reviewed_at=now,
            reviewer=actor,
            decision=decision,
            closure_state=dashboard["closure_state"],
            alert_level=dashboard["alert_level"],
            open_items=dashboard["open_items"],
            risk_notes=notes,
            note=note,
            snapshot=dashboard,
            snapshot_sha256=sha256_hex(canonical_json(dashboard)),
        )
        critical = sum(1 for r in dashboard["risks"] if r["severity"] == Severity.CRITICAL)
        evidence_append(
            kind=MetadataKind.CLOSURE_REVIEW,
            session_id=review.review_id,
            signer=signer_of(actor),
            subject=closure_review_serialize(review),
            decision_count=len(dashboard["open_items"]),
            blocked_count=critical,
            approval_required_count=len(notes),
            now=now,
        )
    return review
