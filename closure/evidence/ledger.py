"""Writing and verifying the hash-chained evidence ledger.

Every service writes its evidence row through `evidence_append` inside its own transaction, so a
change and its evidence commit together or not at all. Appends are serialised: on PostgreSQL by a
transaction-scoped advisory lock, on SQLite by its single writer (IMMEDIATE transactions).

Each row stores the canonical JSON text its hash covers (`payload_text`); the jsonb `payload` and
the flattened columns are copies of it for queries. `evidence_verify` walks the chain with
`chain.ChainWalker` (the offline bundle verifier uses the same code), hashing the stored text
as it is and checking every copy against it, and checks the chain against the latest signed
checkpoint. docs/evidence.md has the whole story.
"""

import json
from collections.abc import Iterator
from contextlib import closing, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, Func, Q, QuerySet, TextField
from django.db.models.functions import Cast, Coalesce
from django.db.models.signals import post_save
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence import chain
from closure.evidence.canonical import canonical_json, isoformat, sha256_hex
from closure.evidence.chain import GENESIS_HASH, chain_hash
from closure.evidence.signing import trusted_public_keys
from closure.models import Evidence, EvidenceCheckpoint

SCHEMA_VERSION = "cavra.evidence.metadata.v1"
PRODUCT = "CAVRA"
# Arbitrary constant naming the ledger's advisory lock on PostgreSQL.
EVIDENCE_LOCK_KEY = 0x43415652

__all__ = [
    "GENESIS_HASH",
    "ChainVerification",
    "CheckpointClaim",
    "EvidenceEntry",
    "EvidenceFilters",
    "canonical_json",
    "chain_hash",
    "evidence_append",
    "evidence_append_many",
    "evidence_envelope",
    "evidence_head",
    "evidence_verify",
    "evidence_written",
    "stored_payload_bytes",
    "stored_row_problem",
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


@dataclass(frozen=True)
class EvidenceEntry:
    """One evidence row to append: the change's subject and its envelope counts."""

    kind: MetadataKind
    session_id: str
    signer: str
    subject: dict
    filters: EvidenceFilters = EvidenceFilters()
    decision_count: int = 0
    blocked_count: int = 0
    approval_required_count: int = 0


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
    entry = EvidenceEntry(
        kind=kind,
        session_id=session_id,
        signer=signer,
        subject=subject,
        filters=filters,
        decision_count=decision_count,
        blocked_count=blocked_count,
        approval_required_count=approval_required_count,
    )
    [row] = evidence_append_many([entry], now=now)
    return row


# The rows appended in this context since `evidence_written()` began (None: not collecting).
_written: ContextVar[list[Evidence] | None] = ContextVar("evidence_written", default=None)


@contextmanager
def evidence_written() -> Iterator[list[Evidence]]:
    """The evidence rows appended inside the block, in order, as they were written: the caller
    of a use case answers with the row its service wrote instead of reading it back."""
    rows: list[Evidence] = []
    token = _written.set(rows)
    try:
        yield rows
    finally:
        _written.reset(token)


def evidence_append_many(
    entries: list[EvidenceEntry], *, now: datetime | None = None
) -> list[Evidence]:
    """Append rows to the chain in the given order, under one lock and in one INSERT.

    Must run inside the caller's transaction. Each row is chained to the one before it exactly
    as if it had been appended on its own.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("evidence must be written inside the transaction of its change")
    if not entries:
        return []
    created_at = now or timezone.now()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [EVIDENCE_LOCK_KEY])
    head = Evidence.objects.order_by("-sequence").values("sequence", "chain_hash").first()
    sequence = head["sequence"] if head else 0
    previous = head["chain_hash"] if head else GENESIS_HASH
    rows = []
    for entry in entries:
        sequence += 1
        row = _evidence_row(entry, sequence=sequence, previous=previous, created_at=created_at)
        previous = row.chain_hash
        rows.append(row)
    Evidence.objects.bulk_create(rows)
    collected = _written.get()
    if collected is not None:
        collected.extend(rows)
    for row in rows:
        # bulk_create sends no signal; observers (the evidence log line) still see every row.
        post_save.send(
            sender=Evidence,
            instance=row,
            created=True,
            update_fields=None,
            raw=False,
            using=connection.alias,
        )
    return rows


def _evidence_row(
    entry: EvidenceEntry, *, sequence: int, previous: str, created_at: datetime
) -> Evidence:
    filters = entry.filters
    payload = {
        "schema_version": SCHEMA_VERSION,
        "product": PRODUCT,
        "metadata_kind": str(entry.kind),
        "session_id": entry.session_id,
        "created_at": isoformat(created_at),
        "signer": entry.signer,
        "decision_count": entry.decision_count,
        "blocked_count": entry.blocked_count,
        "approval_required_count": entry.approval_required_count,
        "health_id": filters.health_id,
        "provider": filters.provider,
        "execution_status": filters.execution_status,
        "dry_run": filters.dry_run,
        "subject": json.loads(canonical_json(entry.subject)),
    }
    text = canonical_json(payload)
    payload_sha = sha256_hex(text)
    return Evidence(
        sequence=sequence,
        metadata_kind=entry.kind,
        session_id=entry.session_id,
        created_at=created_at,
        signer=entry.signer,
        health_id=filters.health_id,
        provider=filters.provider,
        execution_status=filters.execution_status,
        dry_run=filters.dry_run,
        decision_count=entry.decision_count,
        blocked_count=entry.blocked_count,
        approval_required_count=entry.approval_required_count,
        payload=payload,
        payload_text=text.decode(),
        payload_sha256=payload_sha,
        previous_hash=previous,
        chain_hash=chain_hash(previous, payload_sha),
    )


def stored_payload_bytes(row: Evidence) -> bytes:
    """The bytes `payload_sha256` covers: the stored text, or for a row written before the text
    was kept (and not proven by the migration) the canonical JSON of its jsonb copy."""
    if row.payload_text is None:
        return canonical_json(row.payload)
    return row.payload_text.encode()


def stored_row_problem(row: Evidence) -> str:
    """What is wrong with one stored row on its own, or "": the same checks a verification
    makes of it, but for its link to the row before. The stored bytes must hash to
    `payload_sha256`, and the jsonb copy and the copied columns must agree with them."""
    text = stored_payload_bytes(row)
    if sha256_hex(text) != row.payload_sha256:
        return chain.PAYLOAD_MISMATCH
    payload = chain.json_loads(text)
    if row.payload_text is not None and not chain.same_json_value(payload, row.payload):
        return chain.PAYLOAD_MISMATCH
    columns = tuple(getattr(row, name) for name in chain.COPIED_COLUMNS)
    return chain.copied_columns_problem(payload, columns)


def evidence_envelope(row: Evidence) -> dict:
    """What the API and exports show for an evidence row: payload plus integrity fields.

    The payload is read from the hashed text, so it is the value the hash covers (the jsonb
    copy may have normalised a number, such as -0.0 to 0.0)."""
    payload = row.payload if row.payload_text is None else chain.json_loads(row.payload_text)
    return {
        **payload,
        "sequence": row.sequence,
        "payload_sha256": row.payload_sha256,
        "previous_hash": row.previous_hash,
        "chain_hash": row.chain_hash,
    }


# What `ledger_rows` yields by default, in the order `ChainWalker.feed` takes them.
CHAIN_FIELDS = ("sequence", "payload", "payload_sha256", "previous_hash", "chain_hash")
# Rows per network round trip (PostgreSQL) or per fetch (SQLite) when streaming the ledger.
STREAM_ROWS = 2000
# The hashed payload text; on a row written before it was stored, the text of the query copy.
STORED_TEXT = Coalesce("payload_text", Cast("payload", TextField()))
IS_LEGACY = ExpressionWrapper(Q(payload_text__isnull=True), output_field=BooleanField())
# PostgreSQL's own comparison of the jsonb copy with the stored text (migration 0013): equal as
# jsonb values, which is exactly what its normalisation keeps; false for text it cannot read.
COPY_AGREES = Func(
    "payload", "payload_text", function="closure_evidence_copy_agrees", output_field=BooleanField()
)


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


def _stream(rows: QuerySet, chunk_size: int) -> Iterator[tuple]:
    """The rows of a `values_list` query in constant memory. On PostgreSQL straight from
    psycopg (chunked rows mode): the server keeps producing rows while Python checks the ones
    it has. Elsewhere Django's iterator, in chunks."""
    if connection.vendor != "postgresql":
        yield from rows.iterator(chunk_size=chunk_size)
        return
    sql, params = rows.query.sql_with_params()
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        yield from cursor.stream(sql, params, size=chunk_size)


def ledger_rows(
    rows: QuerySet,
    *,
    chunk_size: int = STREAM_ROWS,
    payload_text: bool = False,
    copies: bool = False,
) -> Iterator[tuple]:
    """Stream the given evidence rows in their order, in constant memory.

    Each row is `CHAIN_FIELDS`, the payload parsed from its stored text (with `payload_text`,
    that text unparsed). With `copies`, each row is what `ChainWalker.feed_stored` checks: the
    stored text, whether the row predates it, the hashes, whether the jsonb copy agrees with
    the text, and the copied columns. PostgreSQL compares the jsonb copy itself; elsewhere
    (where the copy is stored as the JSON text Python wrote) it must re-encode to exactly the
    stored text.
    """
    postgres = connection.vendor == "postgresql"
    rows = rows.annotate(stored_text=STORED_TEXT)
    if not copies:
        stream = _stream(
            rows.values_list(
                "sequence", "stored_text", "payload_sha256", "previous_hash", "chain_hash"
            ),
            chunk_size,
        )
        if payload_text:
            yield from stream
            return
        for sequence, text, payload_sha, previous, row_chain in stream:
            yield sequence, chain.json_loads(text), payload_sha, previous, row_chain
        return
    rows = rows.annotate(legacy=IS_LEGACY)
    if postgres:
        rows = rows.annotate(copy_agrees=COPY_AGREES)
    integrity = ("sequence", "stored_text", "legacy", "payload_sha256", "previous_hash")
    copy = "copy_agrees" if postgres else "payload"
    stream = _stream(
        rows.values_list(*integrity, "chain_hash", copy, *chain.COPIED_COLUMNS), chunk_size
    )
    if postgres:
        yield from stream
        return
    for row in stream:
        legacy, copy_value = row[2], row[6]
        agrees = legacy or chain.is_canonical_text(copy_value, row[1].encode())
        yield (*row[:6], agrees, *row[7:])


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
    # Rows 1 to this sequence were proven by the signed checkpoint there, not read again.
    proven_through: int = 0

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

    def verified_rows(self) -> str:
        """What this verification rests on, in words."""
        if not self.proven_through:
            return f"rows 1-{self.count} verified now"
        through = self.proven_through
        checkpoint = self.checkpoints[0]
        proven = (
            f"rows 1-{through} proven by the checkpoint at sequence {through} (key "
            f"{checkpoint['key_id']}) signed at {checkpoint['checkpointed_at']}"
        )
        if self.count == through:
            return f"{proven}; row {through} verified now, none after it"
        return f"{proven}; rows {through}-{self.count} verified now"


def latest_checkpoint() -> EvidenceCheckpoint | None:
    return EvidenceCheckpoint.objects.order_by("-head_sequence", "-id").first()


def _walk(walker: chain.ChainWalker, rows: QuerySet, chunk_size: int) -> None:
    """Feed the given rows to `walker` in one streaming read, up to the first break."""
    stream = ledger_rows(rows, chunk_size=chunk_size, copies=True)
    with long_read(), closing(stream):
        walker.feed_stored(stream)


def _verify_after_checkpoint(entry: dict, chunk_size: int) -> ChainVerification | None:
    """The chain proven by a validly signed checkpoint up to its head, verified from there.

    The row at the checkpoint's head is read again: its own hashes must hold and its chain hash
    must be the signed one. Every later row is verified as in a full pass and must continue
    the chain from it. None when anything does not hold: the caller then verifies everything.
    """
    head = entry["head_sequence"]
    walker = chain.ChainWalker(
        first_sequence=head, first_previous_hash=None, remember=frozenset({head})
    )
    _walk(walker, Evidence.objects.filter(sequence__gte=head).order_by("sequence"), chunk_size)
    if walker.broken or walker.remembered.get(head) != entry["chain_head"]:
        return None
    entry["matches_chain"] = True
    count = head - 1 + walker.count
    return ChainVerification(True, count, walker.head, None, "", (entry,), proven_through=head)


def _checkpoint_status(claims: list[CheckpointClaim]) -> list[dict]:
    """What each checkpoint claims, and whether a trusted key signed it (the chain is compared
    with it later: `matches_chain`)."""
    trusted = trusted_public_keys() if claims else {}
    return [
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


def _first_checkpoint_mismatch(
    walker: chain.ChainWalker, signed: list[dict]
) -> tuple[int, str] | None:
    """Compare each signed checkpoint the walk reached with the chain, in sequence order; the
    first whose head differs, as (sequence, problem). Checkpoints past it are not compared."""
    mismatch: tuple[int, str] | None = None
    for entry in signed:
        sequence = entry["head_sequence"]
        row_chain = walker.remembered.get(sequence)
        if row_chain is None or (mismatch and sequence > mismatch[0]):
            continue  # not reached, or beyond the first mismatch
        entry["matches_chain"] = entry["chain_head"] == row_chain
        if not entry["matches_chain"] and mismatch is None:
            mismatch = (
                sequence,
                f"chain_hash differs from the signed checkpoint of {entry['checkpointed_at']} "
                f"at sequence {sequence}",
            )
    return mismatch


def _checkpoint_problem(walker: chain.ChainWalker, status: list[dict]) -> tuple[int, str] | None:
    """A checkpoint that no trusted key signed, or one beyond the end of the chain (its tail
    was cut off), as (sequence, problem); checked once the chain itself holds."""
    for entry in sorted(status, key=lambda e: e["head_sequence"]):
        if not entry["signature_ok"]:
            return (
                entry["head_sequence"],
                f"the checkpoint at sequence {entry['head_sequence']} ({entry['source']}) is "
                f"not signed by a trusted key",
            )
    for entry in sorted(status, key=lambda e: e["head_sequence"]):
        if entry["head_sequence"] > walker.count:
            entry["matches_chain"] = False
            return (
                walker.count + 1,
                f"the chain ends at sequence {walker.count}, but the signed checkpoint of "
                f"{entry['checkpointed_at']} covers up to sequence {entry['head_sequence']}: "
                f"the tail was cut off",
            )
    return None


def evidence_verify(
    *,
    chunk_size: int = STREAM_ROWS,
    external: tuple[CheckpointClaim, ...] = (),
    full: bool = True,
) -> ChainVerification:
    """Recompute the whole chain in sequence order, streaming, in constant memory.

    Also checks the latest stored checkpoint (and any `external` copies): its signature must
    verify under a trusted public key, the row at its head must carry its chain hash, and the
    chain must reach its head, so cutting off the tail after a checkpoint is detected.

    With `full=False` (release readiness) a latest stored checkpoint whose signature is valid
    stands for the rows up to its head, and only the rows from its head on are read (see
    `_verify_after_checkpoint`). If that does not hold, or there is no such checkpoint, the
    whole chain is verified, so any problem is reported exactly as a full pass reports it.
    """
    stored = latest_checkpoint()
    status = _checkpoint_status(
        ([CheckpointClaim.from_row(stored)] if stored else []) + list(external)
    )
    if not full and not external and stored and stored.head_sequence and status[0]["signature_ok"]:
        after = _verify_after_checkpoint(status[0], chunk_size)
        if after is not None:
            return after

    # Only a checkpoint with a good signature says anything about the chain, checked in
    # sequence order: the first problem in the chain, or at a checkpoint's head, is reported.
    signed = sorted(
        (entry for entry in status if entry["signature_ok"]), key=lambda e: e["head_sequence"]
    )
    walker = chain.ChainWalker(remember=frozenset(e["head_sequence"] for e in signed))
    _walk(walker, Evidence.objects.order_by("sequence"), chunk_size)
    mismatch = _first_checkpoint_mismatch(walker, signed)
    if mismatch:
        # The rows up to the mismatching checkpoint's head hold; the report ends there.
        sequence, problem = mismatch
        head = walker.remembered[sequence]
        return ChainVerification(False, sequence, head, sequence, problem, tuple(status))
    if walker.broken:
        broken: tuple[int, str] | None = (walker.broken.sequence, walker.broken.problem)
    else:
        broken = _checkpoint_problem(walker, status)
    sequence, problem = broken or (None, "")
    return ChainVerification(
        sequence is None, walker.count, walker.head, sequence, problem, tuple(status)
    )
