"""The evidence chain's primitives, free of Django (canonical JSON: `canonical`).

Canonical JSON, the hashes, the row-by-row chain check, the CSV row of an export and the
Ed25519 signatures live here, so the database verifier (`closure.evidence`) and the offline
bundle verifier (`python -m closure.verify_export`) run exactly the same code, and the offline
one needs neither a database nor Django settings.
"""

import base64
import hashlib
import json
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# chain.isoformat / chain.sha256_hex are read by tests, bench and scripts: kept as names here.
from closure.evidence.canonical import canonical_json, isoformat, sha256_hex  # noqa: F401

try:
    import orjson
except ImportError:  # pragma: no cover (optional: the standard library gives the same results)
    orjson = None

GENESIS_HASH = "0" * 64
# The fields an export adds to a row's payload; everything else in an exported row is payload.
INTEGRITY_FIELDS = ("sequence", "payload_sha256", "previous_hash", "chain_hash")
# The payload fields an evidence row also keeps as columns (for filters and the CSV export);
# verification checks every one of them against the hashed payload.
COPIED_COLUMNS = (
    "created_at",
    "metadata_kind",
    "session_id",
    "signer",
    "health_id",
    "provider",
    "execution_status",
    "dry_run",
    "decision_count",
    "blocked_count",
    "approval_required_count",
)
PAYLOAD_MISMATCH = "payload does not match payload_sha256"
SIGNATURE_ALGORITHM = "Ed25519"


def chain_hash(previous_hash: str, payload_sha256: str) -> str:
    return sha256_hex(previous_hash + payload_sha256)


# -- the fast path for stored rows ----------------------------------------------------------------
#
# Every row stores the canonical JSON text its `payload_sha256` hashes (`payload_text`), so the
# database verifier hashes those bytes as they are and never re-encodes them. Rows written before
# the text was stored, exports and the offline verifier rebuild the canonical bytes from a parsed
# value instead. orjson, when installed, parses and writes JSON several times faster than the
# standard library. Its sorted compact output is the same as `canonical_json` for strings,
# integers, booleans, null, lists and objects, but some floats are written differently (0.00005
# for 5e-05). So its bytes are used only once they are proven canonical: they hash to the row's
# stored `payload_sha256`, which was computed over the canonical bytes, so they *are* those
# bytes. Anything else goes through `canonical_json`. The results are the same with or without
# orjson; only the speed differs.


# orjson reads an integer literal outside 64 bits as a float (-9223372036854775809 becomes
# -9.223372036854776e+18), silently. Every such literal has at least 19 digits, so text with a
# run of 19 digits (in a number or in a string) takes the standard path. The run is found by
# mapping every digit to a zero byte, in C.
_DIGITS_TO_ZERO = bytes(0 if 0x30 <= byte <= 0x39 else 1 for byte in range(256))
_LONG_DIGIT_RUN = b"\x00" * 19


def json_loads(text: str | bytes) -> Any:
    """Parse JSON text; the same value as `json.loads`, faster with orjson where orjson reads
    it exactly (not integers beyond 64 bits, nor a few inputs orjson refuses)."""
    if orjson is not None:
        raw = text.encode() if isinstance(text, str) else text
        if raw.translate(_DIGITS_TO_ZERO).find(_LONG_DIGIT_RUN) < 0:
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
    return json.loads(text)


def _fast_canonical(payload: Any, payload_sha: str) -> bytes | None:
    """orjson's bytes of `payload` if they are its canonical JSON, proven by `payload_sha`."""
    if orjson is None:
        return None
    try:
        fast = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits, nesting deeper than orjson allows
        return None
    return fast if hashlib.sha256(fast).hexdigest() == payload_sha else None


def payload_matches(payload: Any, payload_sha: str) -> bool:
    """Whether `payload_sha` is the SHA-256 of the payload's canonical JSON."""
    if _fast_canonical(payload, payload_sha) is not None:
        return True
    return sha256_hex(canonical_json(payload)) == payload_sha


def payload_text_matches(text: str | bytes, payload_sha: str) -> bool:
    """Whether the JSON text of a stored payload is a payload whose canonical JSON hashes to
    `payload_sha`: parsed and re-encoded by orjson when it can, else by the standard path."""
    if orjson is not None:
        try:
            fast = orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONDecodeError, TypeError):
            fast = b""
        if hashlib.sha256(fast).hexdigest() == payload_sha:
            return True
    try:
        return payload_matches(json_loads(text), payload_sha)
    except (ValueError, RecursionError):
        return False


def is_canonical_text(value: Any, text: bytes) -> bool:
    """Whether `text` is exactly the canonical JSON of `value`."""
    if orjson is not None:
        try:
            if orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == text:
                return True
        except TypeError:
            pass
    try:
        return canonical_json(value) == text
    except (TypeError, ValueError, RecursionError):
        return False


def payload_json(payload: Any, payload_sha: str) -> bytes:
    """The canonical JSON of a stored payload (fast when it matches its hash)."""
    return _fast_canonical(payload, payload_sha) or canonical_json(payload)


def envelope_line(
    sequence: int, payload: dict, payload_sha: str, previous: str, row_chain: str
) -> bytes:
    """One JSON Lines row of an export, without its newline: the canonical JSON of the payload's
    fields plus the four integrity fields. The offline verifier rebuilds it byte for byte."""
    envelope = {
        **payload,
        "sequence": sequence,
        "payload_sha256": payload_sha,
        "previous_hash": previous,
        "chain_hash": row_chain,
    }
    if orjson is not None and _fast_canonical(payload, payload_sha) is not None:
        # The payload's values are written canonically, and the added ones are an integer and
        # hex strings, so the envelope is too.
        return orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS)
    return canonical_json(envelope)


_copied_fields = operator.itemgetter(*COPIED_COLUMNS)


def same_json_value(stored: Any, copy: Any) -> bool:
    """Whether `copy` (a payload read back from a jsonb column) is the JSON value `stored`.

    jsonb keeps a number as its exact decimal, so a float reads back as the same float, or as
    an integer when its decimal has no fraction (1e308), and -0.0 as 0.0: numbers are equal
    when their float values are. Everything else must be equal as it is.
    """
    if isinstance(stored, bool) or isinstance(copy, bool):
        return type(stored) is type(copy) and stored == copy
    if isinstance(stored, int | float) and isinstance(copy, int | float):
        if isinstance(stored, int) and isinstance(copy, int):
            return stored == copy
        try:
            return float(stored) == float(copy)
        except OverflowError:
            return False
    if isinstance(stored, dict) and isinstance(copy, dict):
        return stored.keys() == copy.keys() and all(
            same_json_value(value, copy[key]) for key, value in stored.items()
        )
    if isinstance(stored, list) and isinstance(copy, list):
        return len(stored) == len(copy) and all(
            same_json_value(a, b) for a, b in zip(stored, copy, strict=True)
        )
    if isinstance(stored, str) and isinstance(copy, str):
        return stored == copy  # a stored choice is a str subclass
    return type(stored) is type(copy) and stored == copy


def copied_columns_problem(payload: Any, columns: tuple) -> str:
    """The problem naming the first copied column (values in `COPIED_COLUMNS` order,
    `created_at` a datetime) that differs from its field in the payload; "" when none does."""
    try:
        expected = _copied_fields(payload)
        if expected[1:] == columns[1:] and datetime.fromisoformat(expected[0]) == columns[0]:
            return ""
    except (KeyError, TypeError, ValueError):
        pass
    fields = payload if isinstance(payload, dict) else {}
    for name, value in zip(COPIED_COLUMNS, columns, strict=True):
        field = fields.get(name)
        if name == "created_at":
            try:
                same = datetime.fromisoformat(field) == value
            except (TypeError, ValueError):
                same = False
        else:
            same = name in fields and field == value
        if not same:
            return f"column {name} does not match the payload"
    return ""


def _stored_problems(
    text: str, legacy: bool, payload_sha: str, copy_agrees: bool, columns: tuple
) -> tuple[str, str]:
    """What is wrong with a stored row's payload: (with its hash, with its copies), each ""
    when nothing is."""
    if legacy:
        hashed = payload_text_matches(text, payload_sha)
    else:
        hashed = hashlib.sha256(text.encode()).hexdigest() == payload_sha
    if not copy_agrees:
        return ("" if hashed else PAYLOAD_MISMATCH), PAYLOAD_MISMATCH
    try:
        payload = json_loads(text)
    except (ValueError, RecursionError):
        return PAYLOAD_MISMATCH, PAYLOAD_MISMATCH
    return ("" if hashed else PAYLOAD_MISMATCH), copied_columns_problem(payload, columns)


# -- walking the chain --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    sequence: int
    problem: str


class ChainWalker:
    """Checks rows handed to it in sequence order and remembers the first break.

    With `contiguous` (the whole ledger, or an export of a sequence range) every row must follow
    the one before it and link to it. Without it (an export filtered by kind, subject or time)
    each row is checked on its own, and rows whose sequences are adjacent are checked to link.
    """

    def __init__(
        self,
        *,
        contiguous: bool = True,
        first_sequence: int = 1,
        first_previous_hash: str | None = GENESIS_HASH,
        remember: frozenset[int] = frozenset(),
    ) -> None:
        self.contiguous = contiguous
        # Sequences whose chain_hash is kept once their row holds (signed checkpoint heads).
        self.remember = remember
        self.remembered: dict[int, str] = {}
        self.expected_sequence = first_sequence
        # None: the previous hash of the first row cannot be known (an export starting mid-way).
        self.previous_hash = first_previous_hash
        self.last_sequence: int | None = None
        self.count = 0
        self.broken: ChainBreak | None = None

    @property
    def head(self) -> str:
        return self.previous_hash or GENESIS_HASH

    def feed(
        self, sequence: int, payload: Any, payload_sha: str, previous_hash: str, row_chain: str
    ) -> bool:
        """Check one row; False (and `broken` set) at the first row that does not hold."""
        if self.broken:
            return False
        payload_problem = "" if payload_matches(payload, payload_sha) else PAYLOAD_MISMATCH
        return self._check(sequence, payload_sha, previous_hash, row_chain, payload_problem, "")

    def _check(
        self,
        sequence: int,
        payload_sha: str,
        previous_hash: str,
        row_chain: str,
        payload_problem: str,
        copies_problem: str,
    ) -> bool:
        """Check a row's place and links, given what is wrong with its payload's hash and with
        the copies of its payload (checked last); False (and `broken` set) if anything is."""
        if self.broken:
            return False
        problem = ""
        if self.last_sequence is None:
            # The first row: the genesis hash before sequence 1, else what the caller knows.
            linked = GENESIS_HASH if sequence == 1 else self.previous_hash
        else:
            linked = self.previous_hash
        if self.contiguous and sequence != self.expected_sequence:
            problem = f"sequence gap: expected {self.expected_sequence}"
            sequence = self.expected_sequence
        elif not self.contiguous and self.last_sequence is not None:
            if sequence <= self.last_sequence:
                problem = f"sequence out of order: {sequence} after {self.last_sequence}"
            elif sequence != self.last_sequence + 1:
                linked = None  # not adjacent: nothing to link to
        if not problem:
            if payload_problem:
                problem = payload_problem
            elif linked is not None and previous_hash != linked:
                problem = "previous_hash does not match the preceding row"
            elif chain_hash(previous_hash, payload_sha) != row_chain:
                problem = "chain_hash does not match"
            else:
                problem = copies_problem
        if problem:
            self.broken = ChainBreak(sequence, problem)
            return False
        self.previous_hash = row_chain
        self.last_sequence = sequence
        self.expected_sequence = sequence + 1
        self.count += 1
        if sequence in self.remember:
            self.remembered[sequence] = row_chain
        return True

    def feed_stored(self, rows: Iterable[tuple]) -> bool:
        """Check contiguous rows as the database stores them, in sequence order:
        (sequence, text, legacy, payload_sha256, previous_hash, chain_hash, copy_agrees,
        *COPIED_COLUMNS).

        `text` is the stored canonical payload text, whose UTF-8 bytes must hash to
        `payload_sha256` as they are. A `legacy` row (written before the text was stored) brings
        its query copy's text instead, whose canonical JSON must hash to it. `copy_agrees` says
        whether the row's query copy of the payload is the same document as the text, and every
        copied column must equal its field in the payload. Then the row must be the expected
        sequence, link to the row before and carry its chain hash. A row that fails any check
        goes through `_check`, which names the problem. False at the first break.
        """
        if not self.contiguous:
            raise ValueError("feed_stored checks a contiguous chain")
        sha256, remember = hashlib.sha256, self.remember
        # Only the copied columns are read from the parsed payload here (strings, small counts,
        # booleans), which orjson reads exactly even where it would misread a huge integer.
        loads = orjson.loads if orjson is not None else json.loads
        for row in rows:
            sequence, text, legacy, payload_sha, previous_hash, row_chain, copy_agrees = row[:7]
            columns = row[7:]
            try:
                holds = (
                    sequence == self.expected_sequence
                    and self.last_sequence is not None
                    and previous_hash == self.previous_hash
                    and copy_agrees
                    and not legacy
                    and sha256(text.encode()).hexdigest() == payload_sha
                    and sha256((previous_hash + payload_sha).encode()).hexdigest() == row_chain
                    and not copied_columns_problem(loads(text), columns)
                )
            except (ValueError, RecursionError):
                holds = False
            if not holds:
                problems = _stored_problems(text, legacy, payload_sha, copy_agrees, columns)
                if not self._check(sequence, payload_sha, previous_hash, row_chain, *problems):
                    return False
                continue
            self.previous_hash = row_chain
            self.last_sequence = sequence
            self.expected_sequence = sequence + 1
            self.count += 1
            if sequence in remember:
                self.remembered[sequence] = row_chain
        return self.broken is None


# -- CSV rows of an export ----------------------------------------------------------------------

CSV_COLUMNS = (
    "sequence",
    *COPIED_COLUMNS,
    "payload_json",
    "payload_sha256",
    "previous_hash",
    "chain_hash",
)
# Cells a spreadsheet would run as a formula; such a cell is written with a leading quote.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_row(sequence: int, payload: dict, payload_sha: str, previous: str, row_chain: str):
    """The cells of one evidence row: readable columns taken from the payload, then the
    payload's canonical JSON and the integrity fields the verifier recomputes."""
    readable = [payload.get(name) for name in COPIED_COLUMNS]
    return [
        str(sequence),
        *(csv_cell(value) for value in readable),
        payload_json(payload, payload_sha).decode(),
        payload_sha,
        previous,
        row_chain,
    ]


# -- Ed25519 ------------------------------------------------------------------------------------


class SigningKeyError(ValueError):
    """A key that is not base64 of a raw 32-byte Ed25519 key."""


def _b64decode_32(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{what} is not valid base64") from exc
    if len(raw) != 32:
        raise SigningKeyError(f"{what} must be 32 raw bytes, base64-encoded (got {len(raw)})")
    return raw


def private_key_from_b64(text: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_b64decode_32(text, "the private key"))


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_b64decode_32(text, "the public key"))


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def private_key_to_b64(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return base64.b64encode(raw).decode()


def key_id(public_b64: str) -> str:
    """A short name for a public key: the first 16 hex characters of its SHA-256."""
    return sha256_hex(base64.b64decode(public_b64))[:16]


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def signature_valid(public_b64: str, message: bytes, signature_b64: str) -> bool:
    try:
        public_key_from_b64(public_b64).verify(base64.b64decode(signature_b64), message)
    except (InvalidSignature, SigningKeyError, ValueError, TypeError):
        return False
    return True


CHECKPOINT_SCHEMA = "cavra.evidence.checkpoint.v1"


def checkpoint_message(
    *, head_sequence: int, row_count: int, chain_head: str, checkpointed_at: str, key: str
) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return canonical_json(
        {
            "schema_version": CHECKPOINT_SCHEMA,
            "head_sequence": head_sequence,
            "row_count": row_count,
            "chain_head": chain_head,
            "checkpointed_at": checkpointed_at,
            "key_id": key,
        }
    )
