"""Verify an evidence export bundle offline: no database, no Django settings.

    python -m closure.verify_export BUNDLE [--public-key BASE64 | --trust-embedded-key]

BUNDLE is a bundle directory, its `manifest.json`, its data file, or the ZIP the API streams.
The public key is the one `manage.py evidence_public_key` publishes (also read from
`CAVRA_EVIDENCE_PUBLIC_KEY`). Checks, in constant memory:

- the manifest's Ed25519 signature, under the pinned public key;
- the data file's SHA-256 and size against the manifest;
- every row: canonical form, `payload_sha256`, `chain_hash`, and the link to the row before
  whenever the two sequences are adjacent (every row, for a contiguous export);
- every row matches the manifest's filter and period, and lies at or before its ledger head;
- row count and first/last sequence; a contiguous export has no gap, starts from the genesis
  hash at sequence 1, and ends on the manifest's chain head when it reaches the ledger head.

Prints a JSON report; exit status 0 when every check holds, 1 when one fails (a bundle that
cannot be read at all, such as a truncated or damaged ZIP, included), 2 on bad usage.
"""

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from closure.evidence import chain

MANIFEST_SCHEMA = "cavra.evidence.export.v1"
MANIFEST_NAME = "manifest.json"
# A CSV cell holds a whole payload, which may be longer than the csv module's default limit.
CSV_FIELD_LIMIT = 2**31 - 1
# What reading a damaged ZIP member or a file that is not UTF-8 text raises.
UNREADABLE = (OSError, EOFError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError, csv.Error)
EXACT_FIELDS = (
    "metadata_kind",
    "session_id",
    "health_id",
    "provider",
    "execution_status",
    "signer",
)


class BundleError(Exception):
    """The bundle cannot be read at all (missing manifest, unreadable ZIP, …)."""


class _HashingReader(io.RawIOBase):
    """Passes a binary stream through while hashing and counting every byte read."""

    def __init__(self, raw) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        self.sha256.update(data)
        self.size += len(data)
        buffer[: len(data)] = data
        return len(data)


class Bundle:
    """A manifest and a way to open its data file, wherever they are stored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self._folder = path
            self.manifest = self._load_json((path / MANIFEST_NAME).read_bytes)
        elif zipfile.is_zipfile(path):
            try:
                self._zip = zipfile.ZipFile(path)
            except UNREADABLE as exc:
                raise BundleError(f"{path}: not a readable ZIP ({exc})") from exc
            names = [n for n in self._zip.namelist() if n.rsplit("/", 1)[-1] == MANIFEST_NAME]
            if len(names) != 1:
                raise BundleError(f"{path}: expected one {MANIFEST_NAME} in the ZIP")
            self._prefix = names[0][: -len(MANIFEST_NAME)]
            self.manifest = self._load_json(lambda: self._zip.read(names[0]))
        elif path.is_file() and _looks_like_zip(path):
            raise BundleError(f"{path}: not a readable ZIP (truncated or damaged)")
        elif path.is_file():
            self._folder = path.parent
            self.manifest = self._load_json((path.parent / MANIFEST_NAME).read_bytes)
        else:
            raise BundleError(f"{path}: no such bundle")

    @staticmethod
    def _load_json(read) -> dict:
        try:
            manifest = json.loads(read())
        except (*UNREADABLE, KeyError, ValueError, RecursionError) as exc:
            raise BundleError(f"cannot read {MANIFEST_NAME}: {exc}") from exc
        if not isinstance(manifest, dict):
            raise BundleError(f"{MANIFEST_NAME} is not a JSON object")
        return manifest

    def open_data(self, name: str):
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise BundleError(f"unsafe data file name {name!r} in the manifest")
        try:
            if self._zip is not None:
                return self._zip.open(self._prefix + name)
            return (self._folder / name).open("rb")
        except (*UNREADABLE, KeyError) as exc:
            raise BundleError(f"cannot open the data file {name!r}: {exc}") from exc


def _looks_like_zip(path: Path) -> bool:
    """A ZIP by its name or its first bytes, though `zipfile` cannot read it."""
    if path.suffix.lower() == ".zip":
        return True
    with path.open("rb") as start:
        return start.read(4) == b"PK\x03\x04"


def _evidence_row(row) -> bool:
    """Whether a parsed JSON Lines row has the integrity fields, of their types."""
    if not isinstance(row, dict) or any(name not in row for name in chain.INTEGRITY_FIELDS):
        return False
    hashes = (row["payload_sha256"], row["previous_hash"], row["chain_hash"])
    sequence = row["sequence"]
    return type(sequence) is int and all(isinstance(value, str) for value in hashes)


def _jsonl_rows(stream, problems: list[str]) -> Iterator[tuple]:
    for number, line in enumerate(io.BufferedReader(stream), start=1):
        try:
            row = chain.json_loads(line)
        except (ValueError, RecursionError):
            problems.append(f"line {number} is not JSON")
            continue
        if not _evidence_row(row):
            problems.append(f"line {number} is not an evidence row")
            continue
        payload = {k: v for k, v in row.items() if k not in chain.INTEGRITY_FIELDS}
        fields = (row["sequence"], payload, row["payload_sha256"], row["previous_hash"],
                  row["chain_hash"])  # fmt: skip
        if chain.envelope_line(*fields) + b"\n" != line:
            problems.append(f"line {number} (sequence {row['sequence']}) is not canonical JSON")
        yield fields


def _csv_rows(stream, problems: list[str]) -> Iterator[tuple]:
    text = io.TextIOWrapper(io.BufferedReader(stream), encoding="utf-8", newline="")
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(text)
    if next(reader, None) != list(chain.CSV_COLUMNS):
        problems.append("the CSV header is not the evidence header")
    for number, cells in enumerate(reader, start=2):
        try:
            sequence = int(cells[0])
            payload = chain.json_loads(cells[12])
            row = (sequence, payload, cells[13], cells[14], cells[15])
        except (IndexError, ValueError, RecursionError):
            row = None
        if row is None or not isinstance(payload, dict):
            problems.append(f"CSV line {number} is not an evidence row")
            continue
        if cells != chain.csv_row(*row):
            problems.append(f"CSV line {number} (sequence {sequence}) does not match its payload")
        yield row


def _outside_filter(payload: dict, sequence: int, manifest: dict) -> str:
    """Why a row should not be in this export, or ""."""
    wanted = manifest.get("filter") or {}
    for name in EXACT_FIELDS:
        if wanted.get(name) and payload.get(name) != wanted[name]:
            return f"{name} is not {wanted[name]!r}"
    if wanted.get("dry_run") is not None and payload.get("dry_run") != wanted["dry_run"]:
        return f"dry_run is not {wanted['dry_run']}"
    created = payload.get("created_at")
    created = created if isinstance(created, str) else ""
    if wanted.get("created_after") and created < wanted["created_after"]:
        return "created before the period"
    if wanted.get("created_before") and created >= wanted["created_before"]:
        return "created after the period"
    if wanted.get("sequence_from") is not None and sequence < wanted["sequence_from"]:
        return "sequence below the range"
    if wanted.get("sequence_to") is not None and sequence > wanted["sequence_to"]:
        return "sequence above the range"
    if sequence > (manifest.get("ledger") or {}).get("through_sequence", 0):
        return "sequence beyond the ledger head of the export"
    return ""


def _check_signature(manifest: dict, public_key: str | None, problems: list[str]) -> dict:
    block = manifest.get("signature")
    if not isinstance(block, dict) or block.get("algorithm") != chain.SIGNATURE_ALGORITHM:
        problems.append("the manifest carries no Ed25519 signature")
        return {"ok": False, "key_id": None, "pinned": public_key is not None}
    key = public_key or block.get("public_key", "")
    try:
        key_id = chain.key_id(key)
    except ValueError:
        problems.append("the public key is not base64")
        return {"ok": False, "key_id": None, "pinned": public_key is not None}
    if block.get("key_id") != key_id:
        problems.append(f"the manifest is signed by key {block.get('key_id')}, not {key_id}")
        return {"ok": False, "key_id": block.get("key_id"), "pinned": public_key is not None}
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    ok = chain.signature_valid(key, chain.canonical_json(unsigned), block.get("value", ""))
    if not ok:
        problems.append("the manifest signature does not verify")
    return {"ok": ok, "key_id": key_id, "pinned": public_key is not None}


@dataclass
class DataFileScan:
    """What reading the data file found: its rows' range, its hash and size, and the first
    row that does not belong in the export's filter."""

    count: int = 0
    first: int | None = None
    last: int | None = None
    outside: str | None = None
    sha256: str = ""
    size: int = 0


def _scan_data_file(
    bundle: Bundle, manifest: dict, walker: chain.ChainWalker, problems: list[str]
) -> DataFileScan:
    """Feed every row of the data file to `walker`, hashing the file as it is read."""
    name = str((manifest.get("file") or {}).get("name", ""))
    scan = DataFileScan()
    with bundle.open_data(name) as raw:
        reader = _HashingReader(raw)
        read = _csv_rows if manifest.get("format") == "csv" else _jsonl_rows
        try:
            for sequence, payload, payload_sha, previous, row_chain in read(reader, problems):
                scan.count += 1
                scan.first = sequence if scan.first is None else scan.first
                scan.last = sequence
                walker.feed(sequence, payload, payload_sha, previous, row_chain)
                if scan.outside is None:
                    reason = _outside_filter(payload, sequence, manifest)
                    if reason:
                        scan.outside = (
                            f"sequence {sequence} does not belong in this export: {reason}"
                        )
        except UNREADABLE as exc:
            raise BundleError(
                f"cannot read the data file {name!r} after {scan.count} rows: {exc}"
            ) from exc
        scan.sha256, scan.size = reader.sha256.hexdigest(), reader.size
    return scan


def _scan_problems(manifest: dict, scan: DataFileScan, walker: chain.ChainWalker) -> list[str]:
    """Where the data file and its chain disagree with what the manifest says of them."""
    problems = []
    file_info = manifest.get("file") or {}
    ledger = manifest.get("ledger") or {}
    if scan.sha256 != file_info.get("sha256"):
        problems.append("the data file's SHA-256 does not match the manifest")
    if scan.size != file_info.get("bytes"):
        problems.append("the data file's size does not match the manifest")
    found = (
        ("row_count", scan.count),
        ("first_sequence", scan.first),
        ("last_sequence", scan.last),
    )
    for name, actual in found:
        if manifest.get(name) != actual:
            problems.append(f"{name} is {actual}, the manifest says {manifest.get(name)}")
    if scan.outside:
        problems.append(scan.outside)
    if walker.broken:
        problems.append(f"chain broken at sequence {walker.broken.sequence}: "
                        f"{walker.broken.problem}")  # fmt: skip
    elif (
        scan.last is not None
        and scan.last == ledger.get("through_sequence")
        and (walker.head != ledger.get("chain_head"))
    ):
        problems.append("the last row's chain_hash is not the manifest's chain head")
    if manifest.get("contiguous") and not walker.broken:
        wanted = manifest.get("filter") or {}
        through = ledger.get("through_sequence", 0)
        start = max(wanted.get("sequence_from") or 1, 1)
        end = min(wanted.get("sequence_to") or through, through)
        if start <= end and (scan.first, scan.last) != (start, end):
            problems.append(
                f"a contiguous export of sequences {start}..{end} holds {scan.first}..{scan.last}"
            )
    return problems


def verify_bundle(path: Path, *, public_key: str | None) -> dict:
    """Check a bundle; `public_key=None` trusts the key embedded in the manifest."""
    problems: list[str] = []
    bundle = Bundle(path)
    manifest = bundle.manifest
    if manifest.get("schema_version") != MANIFEST_SCHEMA:
        problems.append(f"unknown manifest schema {manifest.get('schema_version')!r}")
    signature = _check_signature(manifest, public_key, problems)
    export_format = manifest.get("format")
    if export_format not in ("jsonl", "csv"):
        raise BundleError(f"unknown export format {export_format!r}")
    contiguous = bool(manifest.get("contiguous"))
    first_expected = manifest.get("first_sequence") or 1
    walker = chain.ChainWalker(
        contiguous=contiguous,
        first_sequence=first_expected,
        first_previous_hash=chain.GENESIS_HASH if first_expected == 1 else None,
    )
    scan = _scan_data_file(bundle, manifest, walker, problems)
    problems.extend(_scan_problems(manifest, scan, walker))
    return {
        "ok": not problems,
        "bundle": str(path),
        "format": export_format,
        "row_count": scan.count,
        "first_sequence": scan.first,
        "last_sequence": scan.last,
        "file_sha256": scan.sha256,
        "signature": signature,
        "chain": {
            "ok": walker.broken is None,
            "contiguous": contiguous,
            "first_broken_sequence": walker.broken.sequence if walker.broken else None,
            "problem": walker.broken.problem if walker.broken else None,
        },
        "ledger": manifest.get("ledger") or {},
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m closure.verify_export",
        description="Verify a CAVRA evidence export bundle offline.",
    )
    parser.add_argument("bundle", type=Path, help="bundle directory, manifest, data file or ZIP")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument(
        "--public-key",
        help="the published Ed25519 public key, base64 (default: $CAVRA_EVIDENCE_PUBLIC_KEY)",
    )
    keys.add_argument(
        "--trust-embedded-key",
        action="store_true",
        help="check the signature with the key inside the manifest (proves integrity, not origin)",
    )
    args = parser.parse_args(argv)
    public_key = args.public_key or os.environ.get("CAVRA_EVIDENCE_PUBLIC_KEY") or None
    if public_key is None and not args.trust_embedded_key:
        parser.error("give the published key: --public-key, or $CAVRA_EVIDENCE_PUBLIC_KEY "
                     "(or --trust-embedded-key to check integrity only)")  # fmt: skip
    try:
        report = verify_bundle(args.bundle, public_key=public_key)
    except BundleError as exc:
        print(json.dumps({"ok": False, "bundle": str(args.bundle), "problems": [str(exc)]}))
        return 1
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
