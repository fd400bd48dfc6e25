"""Writing and verifying the hash-chained evidence ledger.

Every service writes its evidence row through `evidence_append` inside its own transaction, so a
change and its evidence commit together or not at all. Appends are serialised: on PostgreSQL by a
transaction-scoped advisory lock, on SQLite by its single writer (IMMEDIATE transactions).

`evidence_verify` walks the chain with `closure.chain.ChainWalker` (the offline bundle verifier
uses the same code) and checks it against the latest signed checkpoint. docs/evidence.md has
the whole story.
"""

import json
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from psycopg.types.string import TextLoader

from closure import chain
from closure.chain import GENESIS_HASH, canonical_json, chain_hash, isoformat, sha256_hex
from closure.choices import MetadataKind
from closure.models import Evidence, EvidenceCheckpoint
from closure.signing import trusted_public_keys

SCHEMA_VERSION = "cavra.evidence.metadata.v1"
PRODUCT = "CAVRA"
# Arbitrary constant naming the ledger's advisory lock on PostgreSQL.
EVIDENCE_LOCK_KEY = 0x43415652

__all__ = [
    "GENESIS_HASH",
    "ChainVerification",
    "CheckpointClaim",
    "EvidenceFilters",
    "canonical_json",
    "chain_hash",
    "evidence_append",
    "evidence_envelope",
    "evidence_head",
    "evidence_verify",
    "isoformat",
    "sha256_hex",
]


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


# The columns the chain is checked from, in the order `ChainWalker.feed` takes them.
CHAIN_FIELDS = ("sequence", "payload", "payload_sha256", "previous_hash", "chain_hash")
# Rows per network round trip (PostgreSQL) or per fetch (SQLite) when streaming the ledger.
STREAM_ROWS = 2000


@contextmanager
def long_read() -> Iterator[None]:
    """Around a read of the whole ledger on PostgreSQL: a transaction without a statement
    timeout, since the read's length grows with the ledger (it takes no lock that blocks
    writers). Elsewhere nothing: on SQLite a transaction would take the write lock."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 0")
        yield


def ledger_rows(rows: QuerySet, *, chunk_size: int = STREAM_ROWS) -> Iterator[tuple]:
    """Stream `CHAIN_FIELDS` of the given evidence rows in their order, in constant memory.

    On PostgreSQL the query's rows are streamed straight from psycopg (chunked rows mode): the
    server keeps producing rows while Python hashes the ones it has, and the payload arrives as
    JSON text parsed once by `chain.json_loads`. Elsewhere Django's iterator reads in chunks.
    """
    rows = rows.values_list(*CHAIN_FIELDS)
    if connection.vendor != "postgresql":
        yield from rows.iterator(chunk_size=chunk_size)
        return
    sql, params = rows.query.sql_with_params()
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        cursor.adapters.register_loader("jsonb", TextLoader)
        for sequence, payload, payload_sha, previous, row_chain in cursor.stream(
            sql, params, size=chunk_size
        ):
            yield sequence, chain.json_loads(payload), payload_sha, previous, row_chain


def evidence_head() -> tuple[int, str]:
    """(sequence, chain_hash) of the newest row; (0, genesis) for an empty ledger."""
    head = Evidence.objects.order_by("-sequence").values_list("sequence", "chain_hash").first()
    return head if head else (0, GENESIS_HASH)


@dataclass(frozen=True)
class CheckpointClaim:
    """What a signed checkpoint asserts, from the database or from a copy kept elsewhere."""

    head_sequence: int
    row_count: int
    chain_head: str
    checkpointed_at: str
    key_id: str
    signature: str
    source: str = "database"

    @classmethod
    def from_row(cls, row: EvidenceCheckpoint) -> "CheckpointClaim":
        return cls(
            head_sequence=row.head_sequence,
            row_count=row.row_count,
            chain_head=row.chain_head,
            checkpointed_at=isoformat(row.checkpointed_at) or "",
            key_id=row.key_id,
            signature=row.signature,
        )

    @classmethod
    def from_dict(cls, data: dict, *, source: str) -> "CheckpointClaim":
        """From the JSON that `manage.py evidence_checkpoint` prints."""
        try:
            return cls(
                head_sequence=int(data["head_sequence"]),
                row_count=int(data["row_count"]),
                chain_head=str(data["chain_head"]),
                checkpointed_at=str(data["checkpointed_at"]),
                key_id=str(data["signature"]["key_id"]),
                signature=str(data["signature"]["value"]),
                source=source,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: not a checkpoint ({exc})") from exc

    def message(self) -> bytes:
        return chain.checkpoint_message(
            head_sequence=self.head_sequence,
            row_count=self.row_count,
            chain_head=self.chain_head,
            checkpointed_at=self.checkpointed_at,
            key=self.key_id,
        )

    def signature_ok(self, trusted: dict[str, str]) -> bool:
        public = trusted.get(self.key_id)
        if public is None or self.row_count != self.head_sequence:
            return False
        return chain.signature_valid(public, self.message(), self.signature)


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    count: int
    head: str
    first_broken_sequence: int | None
    problem: str
    # One entry per checkpoint checked: the latest stored one first, then any given.
    checkpoints: tuple[dict, ...] = field(default=())

    def as_dict(self) -> dict:
        stored = [c for c in self.checkpoints if c["source"] == "database"]
        external = [c for c in self.checkpoints if c["source"] != "database"]
        body = {
            "ok": self.ok,
            "count": self.count,
            "head": self.head,
            "first_broken_sequence": self.first_broken_sequence,
            "problem": self.problem or None,
            "checkpoint": stored[0] if stored else None,
        }
        if external:
            body["external_checkpoints"] = external
        return body


def latest_checkpoint() -> EvidenceCheckpoint | None:
    return EvidenceCheckpoint.objects.order_by("-head_sequence", "-id").first()


def evidence_verify(
    *, chunk_size: int = STREAM_ROWS, external: tuple[CheckpointClaim, ...] = ()
) -> ChainVerification:
    """Recompute the whole chain in sequence order, streaming, in constant memory.

    Also checks the latest stored checkpoint (and any `external` copies): its signature must
    verify under a trusted public key, the row at its head must carry its chain hash, and the
    chain must reach its head, so cutting off the tail after a checkpoint is detected.
    """
    stored = latest_checkpoint()
    claims = ([CheckpointClaim.from_row(stored)] if stored else []) + list(external)
    trusted = trusted_public_keys() if claims else {}
    status = [
        {
            "source": claim.source,
            "head_sequence": claim.head_sequence,
            "row_count": claim.row_count,
            "chain_head": claim.chain_head,
            "checkpointed_at": claim.checkpointed_at,
            "key_id": claim.key_id,
            "signature_ok": claim.signature_ok(trusted),
            "matches_chain": None,
        }
        for claim in claims
    ]
    # Only a checkpoint with a good signature says anything about the chain.
    heads: dict[int, list[dict]] = {}
    for entry in status:
        if entry["signature_ok"]:
            heads.setdefault(entry["head_sequence"], []).append(entry)

    walker = chain.ChainWalker()
    mismatch: tuple[int, str] | None = None
    rows = ledger_rows(Evidence.objects.order_by("sequence"), chunk_size=chunk_size)
    with long_read(), closing(rows):
        for sequence, payload, payload_sha, previous_hash, row_chain in rows:
            if not walker.feed(sequence, payload, payload_sha, previous_hash, row_chain):
                break
            for entry in heads.get(sequence, ()):
                entry["matches_chain"] = entry["chain_head"] == row_chain
                if not entry["matches_chain"] and mismatch is None:
                    mismatch = (
                        sequence,
                        f"chain_hash differs from the signed checkpoint of "
                        f"{entry['checkpointed_at']} at sequence {sequence}",
                    )
            if mismatch:
                break

    def result(sequence: int | None, problem: str) -> ChainVerification:
        return ChainVerification(
            sequence is None, walker.count, walker.head, sequence, problem, tuple(status)
        )

    if walker.broken:
        return result(walker.broken.sequence, walker.broken.problem)
    if mismatch:
        return result(*mismatch)
    for entry in sorted(status, key=lambda e: e["head_sequence"]):
        if not entry["signature_ok"]:
            return result(
                entry["head_sequence"],
                f"the checkpoint at sequence {entry['head_sequence']} ({entry['source']}) is "
                f"not signed by a trusted key",
            )
    for entry in sorted(status, key=lambda e: e["head_sequence"]):
        if entry["head_sequence"] > walker.count:
            entry["matches_chain"] = False
            return result(
                walker.count + 1,
                f"the chain ends at sequence {walker.count}, but the signed checkpoint of "
                f"{entry['checkpointed_at']} covers up to sequence {entry['head_sequence']}: "
                f"the tail was cut off",
            )
    return result(None, "")
