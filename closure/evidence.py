"""Writing and verifying the hash-chained evidence ledger.

Every service writes its evidence row through `evidence_append` inside its own transaction, so a
change and its evidence commit together or not at all. Appends are serialised: on PostgreSQL by a
transaction-scoped advisory lock, on SQLite by its single writer (IMMEDIATE transactions).
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone

from closure.choices import MetadataKind
from closure.models import Evidence

SCHEMA_VERSION = "cavra.evidence.metadata.v1"
PRODUCT = "CAVRA"
GENESIS_HASH = "0" * 64
# Arbitrary constant naming the ledger's advisory lock on PostgreSQL.
EVIDENCE_LOCK_KEY = 0x43415652


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def isoformat(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z suffix and microseconds, the one timestamp format of evidence."""
    if value is None:
        return None
    return value.astimezone(timezone.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTC times: the bytes every hash is taken over."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    ).encode()


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()


def chain_hash(previous_hash: str, payload_sha256: str) -> str:
    return sha256_hex(previous_hash + payload_sha256)


@dataclass(frozen=True)
class EvidenceFilters:
    """The flattened fields an auditor filters evidence by."""

    health_id: str = ""
    provider: str = ""
    execution_status: str = ""
    dry_run: bool | None = None


def evidence_append(
    *,
    kind: MetadataKind,
    session_id: str,
    signer: str,
    subject: dict,
    filters: EvidenceFilters = EvidenceFilters(),  # noqa: B008 (frozen, immutable)
    decision_count: int = 0,
    blocked_count: int = 0,
    approval_required_count: int = 0,
    now: datetime | None = None,
) -> Evidence:
    """Append one evidence row to the chain. Must run inside the caller's transaction."""
    if not connection.in_atomic_block:
        raise RuntimeError("evidence must be written inside the transaction of its change")
    created_at = now or timezone.now()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [EVIDENCE_LOCK_KEY])
    head = Evidence.objects.order_by("-sequence").values("sequence", "chain_hash").first()
    sequence = head["sequence"] + 1 if head else 1
    previous = head["chain_hash"] if head else GENESIS_HASH
    payload = {
        "schema_version": SCHEMA_VERSION,
        "product": PRODUCT,
        "metadata_kind": str(kind),
        "session_id": session_id,
        "created_at": isoformat(created_at),
        "signer": signer,
        "decision_count": decision_count,
        "blocked_count": blocked_count,
        "approval_required_count": approval_required_count,
        "health_id": filters.health_id,
        "provider": filters.provider,
        "execution_status": filters.execution_status,
        "dry_run": filters.dry_run,
        "subject": json.loads(canonical_json(subject)),
    }
    payload_sha = sha256_hex(canonical_json(payload))
    return Evidence.objects.create(
        sequence=sequence,
        metadata_kind=kind,
        session_id=session_id,
        created_at=created_at,
        signer=signer,
        health_id=filters.health_id,
        provider=filters.provider,
        execution_status=filters.execution_status,
        dry_run=filters.dry_run,
        decision_count=decision_count,
        blocked_count=blocked_count,
        approval_required_count=approval_required_count,
        payload=payload,
        payload_sha256=payload_sha,
        previous_hash=previous,
        chain_hash=chain_hash(previous, payload_sha),
    )


def evidence_envelope(row: Evidence) -> dict:
    """What the API and exports show for an evidence row: payload plus integrity fields."""
    return {
        **row.payload,
        "sequence": row.sequence,
        "payload_sha256": row.payload_sha256,
        "previous_hash": row.previous_hash,
        "chain_hash": row.chain_hash,
    }


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    count: int
    head: str
    first_broken_sequence: int | None
    problem: str


def evidence_verify(*, chunk_size: int = 2000) -> ChainVerification:
    """Recompute the whole chain in sequence order, streaming, in constant memory."""
    previous = GENESIS_HASH
    expected_sequence = 1
    count = 0
    rows = (
        Evidence.objects.order_by("sequence")
        .values_list("sequence", "payload", "payload_sha256", "previous_hash", "chain_hash")
        .iterator(chunk_size=chunk_size)
    )
    for sequence, payload, payload_sha, previous_hash, row_chain in rows:
        problem = ""
        if sequence != expected_sequence:
            problem = f"sequence gap: expected {expected_sequence}"
        elif sha256_hex(canonical_json(payload)) != payload_sha:
            problem = "payload does not match payload_sha256"
        elif previous_hash != previous:
            problem = "previous_hash does not match the preceding row"
        elif chain_hash(previous, payload_sha) != row_chain:
            problem = "chain_hash does not match"
        if problem:
            return ChainVerification(False, count, previous, expected_sequence, problem)
        previous = row_chain
        expected_sequence += 1
        count += 1
    return ChainVerification(True, count, previous, None, "")
