"""Comparing a record with its latest evidence row: the pieces every record kind shares.

`RecordKind` says how one kind of record is read and compared; `kind_check` is the comparison
most kinds need (their latest evidence row, field by field). `closure.evidence.record_kinds`
lists the kinds, `closure.evidence.records` runs them.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import Max, Model, QuerySet, Subquery

from closure.evidence.chain import json_loads, same_json_value
from closure.evidence.ledger import STORED_TEXT
from closure.models import Evidence


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


# (stored, recorded) per field name: what `differing` compares.
FieldPairs = dict[str, tuple[Any, Any]]


def differing(pairs: FieldPairs) -> tuple[str, ...]:
    """The names whose (stored, recorded) values differ."""
    return tuple(
        name for name, (stored, recorded) in pairs.items() if not same_json_value(stored, recorded)
    )


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
    # The hashed payload text (not the jsonb copy), parsed by the ledger's own fast parser.
    rows = (
        Evidence.objects.filter(sequence__in=Subquery(newest))
        .order_by()
        .values_list("session_id", "sequence", STORED_TEXT)
    )
    return {session: Latest(sequence, json_loads(text)) for session, sequence, text in rows}


def in_chunk(model: type[Model], rows: list[dict], public_id: str) -> QuerySet:
    """The `public_id` values of a chunk's records, as a subquery: a chunk is every record
    between its first and last primary key."""
    return model._default_manager.filter(pk__gte=rows[0]["pk"], pk__lte=rows[-1]["pk"]).values(
        public_id
    )


@dataclass(frozen=True)
class RecordKind:
    """One kind of evidence-bearing record, and how it is checked against the ledger."""

    model: type[Model]
    # The field holding the public ID its evidence rows carry as `session_id`.
    public_id: str
    # The other fields read of each record (a chunk of `values()` rows).
    fields: tuple[str, ...]
    # The evidence kinds that speak for it; the latest one of them is compared.
    evidence_kinds: tuple[str, ...] = ()
    # (row, its latest evidence, the chunk's context) → the field pairs to compare.
    compare: Callable[[dict, Latest, Any], FieldPairs] | None = None
    # What the check of a whole chunk needs besides the latest evidence (one query or two).
    context: Callable[[list[dict]], Any] = lambda rows: None
    # A row with no evidence at all: the field pairs that must still hold (None: it needs
    # evidence, and is named without fields).
    unrecorded: Callable[[dict], FieldPairs | None] = lambda row: None
    # A kind checked its own way (several evidence rows per record): replaces `kind_check`.
    check: Callable[[list[dict]], Iterator[RecordMismatch]] | None = None
    # The relation to the user who made the record, read as `made_by` (their username).
    made_by: str = ""

    @property
    def name(self) -> str:
        return self.model.__name__

    def mismatches(self, rows: list[dict]) -> Iterator[RecordMismatch]:
        if self.check is not None:
            return self.check(rows)
        return kind_check(self, rows)


def kind_check(kind: RecordKind, rows: list[dict]) -> Iterator[RecordMismatch]:
    """Each record of a chunk against its latest evidence row, field by field (`compare`)."""
    latest = latest_evidence(kind.evidence_kinds, in_chunk(kind.model, rows, kind.public_id))
    context = kind.context(rows)
    for row in rows:
        public_id = row[kind.public_id]
        evidence = latest.get(public_id)
        if evidence is None:
            pairs = kind.unrecorded(row)
            if pairs is None:
                yield RecordMismatch(kind.name, public_id, (), None)
            elif differing(pairs):
                yield RecordMismatch(kind.name, public_id, differing(pairs), None)
            continue
        fields = differing(kind.compare(row, evidence, context))
        if fields:
            yield RecordMismatch(kind.name, public_id, fields, evidence.sequence)
