"""The evidence chain's primitives, free of Django.

Canonical JSON, the hashes, the row-by-row chain check, the CSV row of an export and the
Ed25519 signatures live here, so the database verifier (`closure.evidence`) and the offline
bundle verifier (`python -m closure.verify_export`) run exactly the same code, and the offline
one needs neither a database nor Django settings.
"""

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

try:
    import orjson
except ImportError:  # pragma: no cover (optional: the standard library gives the same results)
    orjson = None

GENESIS_HASH = "0" * 64
# The fields an export adds to a row's payload; everything else in an exported row is payload.
INTEGRITY_FIELDS = ("sequence", "payload_sha256", "previous_hash", "chain_hash")
SIGNATURE_ALGORITHM = "Ed25519"


def isoformat(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z suffix and microseconds, the one timestamp format of evidence."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, UTC times: the bytes every hash is taken over."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    ).encode()


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()


def chain_hash(previous_hash: str, payload_sha256: str) -> str:
    return sha256_hex(previous_hash + payload_sha256)


# -- the fast path for stored rows ----------------------------------------------------------------
#
# Verifying and exporting a million rows is mostly JSON work. orjson, when installed, parses and
# writes JSON several times faster than the standard library. Its sorted compact output is the
# same as `canonical_json` for strings, integers, booleans, null, lists and objects, but some
# floats are written differently (0.00005 for 5e-05). So its bytes are used only once they are
# proven canonical: they hash to the row's stored `payload_sha256`, which was computed over the
# canonical bytes, so they *are* those bytes. Anything else goes through `canonical_json`. The
# results are the same with or without orjson; only the speed differs.


def json_loads(text: str | bytes) -> Any:
    """Parse JSON text; the same value as `json.loads` (orjson refuses a few inputs, such as
    integers beyond 64 bits, that `json.loads` accepts: those take the standard path)."""
    if orjson is not None:
        try:
            return orjson.loads(text)
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
    return payload_matches(json_loads(text), payload_sha)


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
            if not payload_matches(payload, payload_sha):
                problem = "payload does not match payload_sha256"
            elif linked is not None and previous_hash != linked:
                problem = "previous_hash does not match the preceding row"
            elif chain_hash(previous_hash, payload_sha) != row_chain:
                problem = "chain_hash does not match"
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
        """Check contiguous rows whose payload is JSON text, as the database returns them:
        (sequence, payload text, payload_sha256, previous_hash, chain_hash), in order.

        The same checks as `feed`, in one tight loop: each row must be the expected sequence,
        link to the row before, carry the hash of its payload's canonical JSON and its chain
        hash. A row that fails any of them goes through `feed`, which names the problem (or
        accepts it, when only the fast encoding differed). False at the first break.
        """
        if not self.contiguous:
            raise ValueError("feed_stored checks a contiguous chain")
        sha256, remember = hashlib.sha256, self.remember
        for row in rows:
            sequence, text, payload_sha, previous_hash, row_chain = row
            if (
                self.last_sequence is None
                or sequence != self.expected_sequence
                or previous_hash != self.previous_hash
                or not payload_text_matches(text, payload_sha)
                or sha256((previous_hash + payload_sha).encode()).hexdigest() != row_chain
            ):
                if not self.feed(sequence, json_loads(text), payload_sha, previous_hash, row_chain):
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
    readable = [payload.get(name) for name in CSV_COLUMNS[1:12]]
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
