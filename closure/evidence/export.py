"""Verifiable evidence exports: deterministic JSON Lines or CSV, a signed manifest, streamed.

An export is a pure function of its `ExportPlan` (format, filter, and the ledger head it is cut
at, `through_sequence`): the same plan gives the same bytes, today or in a year, because rows
are append-only and every line is canonical JSON. Rows are streamed from the database
(`closure.evidence.ledger_rows`) and written chunk by chunk, so memory stays flat however many
rows there are.

A bundle is `evidence.jsonl` (or `evidence.csv`) plus `manifest.json`, as a directory or as a
ZIP streamed over HTTP. `python -m closure.verify_export` checks one without a database.
"""

import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

from django.utils.dateparse import parse_datetime

from closure.evidence import chain
from closure.evidence.canonical import canonical_json, isoformat
from closure.evidence.ledger import ledger_rows, long_read
from closure.models import Evidence

MANIFEST_SCHEMA = "cavra.evidence.export.v1"
MANIFEST_NAME = "manifest.json"
DATA_NAMES = {"jsonl": "evidence.jsonl", "csv": "evidence.csv"}
MEDIA_TYPES = {"jsonl": "application/jsonl", "csv": "text/csv"}
# Rows fetched per round trip, and bytes gathered before a chunk is handed on.
FETCH_ROWS = 2000
CHUNK_BYTES = 256 * 1024
# Fixed ZIP member metadata, so the container is as stable as its contents.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


def generator_info() -> dict:
    try:
        version = metadata.version("cavra-closure")
    except metadata.PackageNotFoundError:  # pragma: no cover (running from a bare checkout)
        version = "0+unknown"
    return {"name": "cavra-closure", "version": version, "export_format": 1}


@dataclass(frozen=True)
class ExportFilter:
    """Which rows: every field optional; times are `created_after <= t < created_before`."""

    metadata_kind: str | None = None
    session_id: str | None = None
    health_id: str | None = None
    provider: str | None = None
    execution_status: str | None = None
    signer: str | None = None
    dry_run: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    sequence_from: int | None = None
    sequence_to: int | None = None

    # Fields matched exactly against the row's payload.
    EXACT = ("metadata_kind", "session_id", "health_id", "provider", "execution_status", "signer")

    def as_dict(self) -> dict:
        """Canonical: every key present, times in the evidence format."""
        return {
            **{name: getattr(self, name) for name in self.EXACT},
            "dry_run": self.dry_run,
            "created_after": isoformat(self.created_after),
            "created_before": isoformat(self.created_before),
            "sequence_from": self.sequence_from,
            "sequence_to": self.sequence_to,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ExportFilter":
        values = dict(data)
        for name in ("created_after", "created_before"):
            if values.get(name):
                values[name] = parse_datetime(values[name])
        return cls(**values)

    @property
    def contiguous(self) -> bool:
        """Only a sequence range: every ledger row between the first and last is included."""
        return all(getattr(self, name) is None for name in self.EXACT) and (
            self.dry_run is None and self.created_after is None and self.created_before is None
        )

    def queryset(self, through_sequence: int):
        rows = Evidence.objects.filter(sequence__lte=through_sequence)
        exact = {name: getattr(self, name) for name in self.EXACT if getattr(self, name)}
        if exact:
            rows = rows.filter(**exact)
        if self.dry_run is not None:
            rows = rows.filter(dry_run=self.dry_run)
        if self.created_after is not None:
            rows = rows.filter(created_at__gte=self.created_after)
        if self.created_before is not None:
            rows = rows.filter(created_at__lt=self.created_before)
        if self.sequence_from is not None:
            rows = rows.filter(sequence__gte=self.sequence_from)
        if self.sequence_to is not None:
            rows = rows.filter(sequence__lte=self.sequence_to)
        return rows


@dataclass(frozen=True)
class ExportPlan:
    """Everything that determines an export's bytes, fixed when the export is recorded."""

    export_id: str
    format: str
    filter: ExportFilter
    through_sequence: int
    chain_head: str
    row_count: int
    first_sequence: int | None
    last_sequence: int | None

    def as_dict(self) -> dict:
        return {**asdict(self), "filter": self.filter.as_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "ExportPlan":
        return cls(**{**data, "filter": ExportFilter.from_dict(data["filter"])})

    @property
    def data_name(self) -> str:
        return DATA_NAMES[self.format]

    @property
    def bundle_name(self) -> str:
        return f"cavra-evidence-{self.through_sequence}-{self.export_id[-16:]}"


@dataclass
class ExportDigest:
    """What the streamed file turned out to be: its hash, size and row range."""

    sha256: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    size: int = 0
    row_count: int = 0
    first_sequence: int | None = None
    last_sequence: int | None = None

    def add(self, chunk: bytes) -> bytes:
        self.sha256.update(chunk)
        self.size += len(chunk)
        return chunk


def _rows(plan: ExportPlan, digest: ExportDigest):
    rows = ledger_rows(
        plan.filter.queryset(plan.through_sequence).order_by("sequence"), chunk_size=FETCH_ROWS
    )
    with long_read(), closing(rows):
        for row in rows:
            digest.row_count += 1
            if digest.first_sequence is None:
                digest.first_sequence = row[0]
            digest.last_sequence = row[0]
            yield row


def _jsonl_chunks(plan: ExportPlan, digest: ExportDigest) -> Iterator[bytes]:
    lines: list[bytes] = []
    size = 0
    for row in _rows(plan, digest):
        line = chain.envelope_line(*row)
        lines.append(line + b"\n")
        size += len(line) + 1
        if size >= CHUNK_BYTES:
            yield digest.add(b"".join(lines))
            lines, size = [], 0
    if lines:
        yield digest.add(b"".join(lines))


def _csv_chunks(plan: ExportPlan, digest: ExportDigest) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(chain.CSV_COLUMNS)
    for row in _rows(plan, digest):
        writer.writerow(chain.csv_row(*row))
        if buffer.tell() >= CHUNK_BYTES:
            yield digest.add(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
    yield digest.add(buffer.getvalue().encode())


def export_data_chunks(plan: ExportPlan, digest: ExportDigest) -> Iterator[bytes]:
    """The data file, chunk by chunk; `digest` is complete when the iterator is exhausted."""
    if plan.format == "csv":
        return _csv_chunks(plan, digest)
    return _jsonl_chunks(plan, digest)


def export_manifest(plan: ExportPlan, digest: ExportDigest) -> dict:
    """The signed manifest of a finished data file. Deterministic: no export time in it (the
    export's evidence row records who exported and when)."""
    from closure.evidence.signing import sign

    unsigned = {
        "schema_version": MANIFEST_SCHEMA,
        "generator": generator_info(),
        "format": plan.format,
        "file": {
            "name": plan.data_name,
            "media_type": MEDIA_TYPES[plan.format],
            "sha256": digest.sha256.hexdigest(),
            "bytes": digest.size,
        },
        "filter": plan.filter.as_dict(),
        "period": {
            "created_after": isoformat(plan.filter.created_after),
            "created_before": isoformat(plan.filter.created_before),
        },
        "contiguous": plan.filter.contiguous,
        "row_count": digest.row_count,
        "first_sequence": digest.first_sequence,
        "last_sequence": digest.last_sequence,
        "ledger": {"through_sequence": plan.through_sequence, "chain_head": plan.chain_head},
    }
    return {**unsigned, "signature": sign(canonical_json(unsigned))}


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# -- bundles ------------------------------------------------------------------------------------


def export_write_directory(plan: ExportPlan, directory: Path) -> dict:
    """Write `<directory>/evidence.<format>` and `<directory>/manifest.json`; returns the
    manifest. The data file is written through a temporary name and renamed when complete."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = ExportDigest()
    target = directory / plan.data_name
    partial = directory / (plan.data_name + ".partial")
    with partial.open("wb") as out:
        for chunk in export_data_chunks(plan, digest):
            out.write(chunk)
    partial.replace(target)
    manifest = export_manifest(plan, digest)
    (directory / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    return manifest


class _ChunkSink(io.RawIOBase):
    """A write-only, unseekable stream that hands back what was written since the last take,
    so `zipfile` can stream a ZIP (with data descriptors) without a temporary file."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        taken = b"".join(self._chunks)
        self._chunks.clear()
        return taken


def _zip_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o100644 << 16
    return info


def export_zip_chunks(plan: ExportPlan) -> Iterator[bytes]:
    """The bundle as one streamed ZIP: `<bundle>/evidence.<format>`, then
    `<bundle>/manifest.json` (written last, once the data file's hash is known)."""
    sink = _ChunkSink()
    digest = ExportDigest()
    # Level 1: about twice as fast as the default 6 for some 8 % more bytes; the stream is
    # CPU-bound, and the bytes are mostly hashes, which do not compress anyway.
    with zipfile.ZipFile(sink, mode="w", compresslevel=1) as bundle:
        member = _zip_member(f"{plan.bundle_name}/{plan.data_name}")
        with bundle.open(member, mode="w", force_zip64=True) as out:
            for chunk in export_data_chunks(plan, digest):
                out.write(chunk)
                taken = sink.take()
                if taken:
                    yield taken
        manifest = export_manifest(plan, digest)
        bundle.writestr(
            _zip_member(f"{plan.bundle_name}/{MANIFEST_NAME}"), manifest_bytes(manifest)
        )
    yield sink.take()


def export_write_zip(plan: ExportPlan, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        for chunk in export_zip_chunks(plan):
            out.write(chunk)
    partial.replace(path)
