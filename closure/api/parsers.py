"""The API's one JSON parser: hostile JSON is a 400 with a stable code before any view sees it.

Every API body is parsed here on first use, before the `Idempotency-Key` fingerprint,
validation or a service sees it. The standard library's parser alone lets through what later
fails as a 500: it recurses once per nesting level (a
`RecursionError` near 1,000 levels), it decodes a lone `\\ud800` escape into a string that no
UTF-8 encoder, database or hash accepts, it reads `1e999` as infinity, and it keeps the last of
two equal keys, so the client and the ledger could disagree about what was sent. Here:

- nesting deeper than `MAX_JSON_DEPTH` is `too_deeply_nested`, found by a scan that does not
  recurse, before parsing;
- a lone surrogate in any key or string is `invalid_unicode`, naming where it is;
- an object that repeats a key is `duplicate_key`;
- a number too large for a float is `malformed_request`, like any other JSON that is not valid.
"""

import json
import math
import re
from collections import Counter

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils.json import strict_constant

# The deepest legal body is an event batch, whose `details` are the fourth level (body, events,
# one event, details), so `details` may hold 60 levels more. Far below the ~1,000 at which
# Python's parser and every recursive walk of the value (validation, canonical JSON) fail.
MAX_JSON_DEPTH = 64

# A JSON string, skipped whole so that brackets inside it do not count (possessive, and an
# unterminated string runs to the end: linear time whatever the escapes), or one bracket.
_STRUCTURE = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\Z)|([\[\]{}])', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


# Each has its own problem code (closure/api/problems.py).
class TooDeeplyNested(ParseError):
    pass


class InvalidUnicode(ParseError):
    pass


class DuplicateKey(ParseError):
    pass


def nesting_depth_exceeds(text: str, limit: int) -> bool:
    depth = 0
    for bracket in _STRUCTURE.findall(text):  # "" for a string
        if bracket in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif bracket:
            depth -= 1
    return False


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"Number out of range: {literal[:40]}")
    return value


def _unique_keys(pairs: list) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        repeated = next(key for key, count in counts.items() if count > 1)
        # ensure_ascii: the key may itself hold a lone surrogate, which no response can carry.
        raise DuplicateKey(f"An object repeats the key {json.dumps(repeated)}.")
    return value


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def lone_surrogate_place(value) -> str | None:
    """Where a key or string holding a lone surrogate is (a dotted path), or None.

    Iterative, so its cost does not depend on the nesting.
    """
    pending: list[tuple[object, str]] = [(value, "")]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                return path or "the body"
        elif isinstance(item, dict):
            for key, child in item.items():
                if _has_surrogate(key):
                    return f"a key of {path or 'the body'}"
                pending.append((child, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            pending.extend(
                (child, f"{path}.{index}" if path else str(index))
                for index, child in enumerate(item)
            )
    return None


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        try:
            text = stream.read().decode(encoding)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        if nesting_depth_exceeds(text, MAX_JSON_DEPTH):
            raise TooDeeplyNested(f"JSON nested more than {MAX_JSON_DEPTH} levels deep.")
        try:
            value = json.loads(
                text,
                parse_constant=strict_constant,
                parse_float=_finite_float,
                object_pairs_hook=_unique_keys,
            )
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        place = lone_surrogate_place(value)
        if place is not None:
            # Only keys already checked make up the path, so the answer can carry it.
            raise InvalidUnicode(
                f"A lone surrogate (\\ud800-\\udfff) is not Unicode text; escape a character "
                f"beyond U+FFFF as a surrogate pair. Found in {place}."
            )
        return value
