"""Writes about the ledger itself: signed checkpoints and recorded exports."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence import chain
from closure.evidence.export import ExportFilter, ExportPlan, generator_info
from closure.evidence.ledger import EvidenceFilters, evidence_append, evidence_head, evidence_verify
from closure.evidence.signing import sign, signing_key
from closure.models import Evidence, EvidenceCheckpoint
from closure.models.base import PublicId
from closure.services.common import signer_of
from closure.services.errors import Conflict, InvalidInput

EXPORT_ID_PREFIX = "gordackfinalevidenceexport-"


def checkpoint_serialize(checkpoint: EvidenceCheckpoint) -> dict:
    """A checkpoint as published: keep a copy outside the database (see docs/evidence.md)."""
    return {
        "schema_version": chain.CHECKPOINT_SCHEMA,
        "head_sequence": checkpoint.head_sequence,
        "row_count": checkpoint.row_count,
        "chain_head": checkpoint.chain_head,
        "checkpointed_at": chain.isoformat(checkpoint.checkpointed_at),
        "signature": {
            "algorithm": chain.SIGNATURE_ALGORITHM,
            "key_id": checkpoint.key_id,
            "public_key": checkpoint.public_key,
            "value": checkpoint.signature,
        },
    }


def evidence_checkpoint_create(*, now: datetime | None = None) -> EvidenceCheckpoint:
    """Verify the whole chain, then sign and store its head.

    A broken chain is never signed (409 `evidence_chain_broken`): a checkpoint must only ever
    vouch for rows that verified.
    """
    verification = evidence_verify()
    if not verification.ok:
        raise Conflict(
            f"evidence chain broken at sequence {verification.first_broken_sequence}: "
            f"{verification.problem}; no checkpoint written",
            code="evidence_chain_broken",
        )
    checkpointed_at = timezone.now() if now is None else now
    # Microseconds are what canonical times keep; the stored time must sign the same way.
    stamp = chain.isoformat(checkpointed_at) or ""
    head_sequence, chain_head = verification.count, verification.head
    block = sign(
        chain.checkpoint_message(
            head_sequence=head_sequence,
            row_count=head_sequence,
            chain_head=chain_head,
            checkpointed_at=stamp,
            key=chain.key_id(chain.public_key_b64(signing_key())),
        )
    )
    with transaction.atomic(durable=True):
        return EvidenceCheckpoint.objects.create(
            head_sequence=head_sequence,
            row_count=head_sequence,
            chain_head=chain_head,
            checkpointed_at=checkpointed_at,
            key_id=block["key_id"],
            public_key=block["public_key"],
            signature=block["value"],
        )


def evidence_export_start(
    *,
    actor,
    export_format: str,
    export_filter: ExportFilter,
    through_sequence: int | None = None,
    now: datetime | None = None,
) -> ExportPlan:
    """Fix what an export will contain and record the export as evidence, before any byte of
    it is produced.

    The export is cut at `through_sequence` (default: the current head), so rows appended while
    it streams, including this export's own evidence row, are not in it, and running it again
    with the same filter and `through_sequence` gives the same bytes.
    """
    if export_format not in ("jsonl", "csv"):
        raise InvalidInput(
            f"unknown export format {export_format!r}",
            errors={"format": ["Choose jsonl or csv."]},
        )
    head_sequence, head_hash = evidence_head()
    if through_sequence is None:
        through_sequence, chain_head = head_sequence, head_hash
    elif through_sequence > head_sequence:
        raise InvalidInput(
            f"through_sequence {through_sequence} is beyond the ledger head ({head_sequence})",
            errors={"through_sequence": [f"The ledger ends at sequence {head_sequence}."]},
        )
    else:
        chain_head = (
            Evidence.objects.filter(sequence=through_sequence)
            .values_list("chain_hash", flat=True)
            .first()
        ) or chain.GENESIS_HASH
    bounds = export_filter.queryset(through_sequence).order_by()
    first = bounds.order_by("sequence").values_list("sequence", flat=True).first()
    last = bounds.order_by("-sequence").values_list("sequence", flat=True).first()
    plan = ExportPlan(
        export_id=PublicId(EXPORT_ID_PREFIX)(),
        format=export_format,
        filter=export_filter,
        through_sequence=through_sequence,
        chain_head=chain_head,
        row_count=bounds.count(),
        first_sequence=first,
        last_sequence=last,
    )
    with transaction.atomic(durable=True):
        evidence_append(
            kind=MetadataKind.EVIDENCE_EXPORT,
            session_id=plan.export_id,
            signer=signer_of(actor),
            subject={**plan.as_dict(), "generator": generator_info()},
            filters=EvidenceFilters(
                health_id=export_filter.health_id or "",
                provider=export_filter.provider or "",
                execution_status=export_filter.execution_status or "",
                dry_run=export_filter.dry_run,
            ),
            decision_count=plan.row_count,
            now=now,
        )
    return plan
