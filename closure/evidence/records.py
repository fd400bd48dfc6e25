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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F

from closure.evidence.record_kinds import RECORD_KINDS
from closure.evidence.record_match import RecordKind, RecordMismatch

# Records per chunk: one query for the records, one for their latest evidence (a few more for
# deliveries and plans).
CHUNK_ROWS = 2000
# Mismatches listed in full; any beyond are counted only, so a wholesale edit cannot exhaust
# memory or the response.
MAX_LISTED = 1000
_USER = get_user_model().USERNAME_FIELD


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


def _rows(kind: RecordKind, chunk_rows: int) -> Iterator[list[dict]]:
    """`kind.fields` of every record (and `made_by`, the username of the user who made it) in
    primary-key order, a chunk at a time."""
    made_by = {"made_by": F(f"{kind.made_by}__{_USER}")} if kind.made_by else {}
    fields = (kind.public_id, *kind.fields)
    after = 0
    while True:
        chunk = list(
            kind.model._default_manager.filter(pk__gt=after)
            .order_by("pk")
            .values("pk", *fields, **made_by)[:chunk_rows]
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
            result.checked[kind.name] = 0
            for chunk in _rows(kind, chunk_rows):
                result.checked[kind.name] += len(chunk)
                for mismatch in kind.mismatches(chunk):
                    result.add(mismatch)
    return result


def verification_body(chain: dict, records: RecordsVerification | None) -> dict:
    """The chain's verification (`ChainVerification.as_dict()`), with the records' check under
    `records` when it ran: `ok` then holds only if both do."""
    if records is None:
        return chain
    return {**chain, "ok": chain["ok"] and records.ok, "records": records.as_dict()}
