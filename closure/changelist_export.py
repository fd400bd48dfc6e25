"""Streaming a filtered admin changelist as CSV or JSON Lines.

Rows are read with `values_list(...).iterator()` (a server-side cursor on PostgreSQL), so an
export of a million rows holds one chunk in memory at a time and never runs a query per row.
Values are written the way evidence writes them: times in UTC ISO 8601 with a `Z`, JSON as
canonical JSON.
"""

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime

from django.db.models import QuerySet

from closure.evidence.canonical import canonical_json, isoformat

FETCH_ROWS = 2000
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl"}
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such text
# cells are written with a leading apostrophe in CSV. JSON Lines keeps every value as it is.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _plain(value):
    """A column value as JSON would hold it."""
    if isinstance(value, datetime):
        return isoformat(value)
    return value


def _csv_cell(value) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return canonical_json(value).decode()
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return str(value)


class _Line:
    """csv.writer's file: hands back each written line instead of storing it."""

    def write(self, text: str) -> str:
        return text


def _rows(queryset: QuerySet, lookups: list[str]) -> Iterator[tuple]:
    return queryset.values_list(*lookups).iterator(chunk_size=FETCH_ROWS)


def _batched(lines: Iterable[str], size: int = 500) -> Iterator[str]:
    """Join lines into larger chunks: fewer, bigger writes to the client."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def csv_chunks(queryset: QuerySet, columns: list[tuple[str, str]]) -> Iterator[str]:
    """A header row, then one row per record; `columns` are (header, ORM lookup) pairs."""
    writer = csv.writer(_Line())
    headers = [header for header, _ in columns]

    def lines():
        yield writer.writerow(headers)
        for row in _rows(queryset, [lookup for _, lookup in columns]):
            yield writer.writerow([_csv_cell(value) for value in row])

    return _batched(lines())


def jsonl_chunks(queryset: QuerySet, columns: list[tuple[str, str]]) -> Iterator[str]:
    """One canonical JSON object per line, keyed by the column headers."""
    headers = [header for header, _ in columns]

    def lines():
        for row in _rows(queryset, [lookup for _, lookup in columns]):
            record = {header: _plain(value) for header, value in zip(headers, row, strict=True)}
            yield canonical_json(record).decode() + "\n"

    return _batched(lines())


def export_chunks(queryset: QuerySet, columns: list[tuple[str, str]], export_format: str):
    if export_format == "csv":
        return csv_chunks(queryset, columns)
    return jsonl_chunks(queryset, columns)
