"""Canonical JSON and SHA-256: the bytes every evidence hash and connector fingerprint is taken
over. Standard library only (no Django, no ORM): connectors and the offline verifier import it."""

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


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
