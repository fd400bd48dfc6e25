"""Evidence stores the exact bytes its hash covers: `payload_text`.

Adds the column and, on PostgreSQL, the function that compares the jsonb copy with it, then
fills it on the existing rows with the canonical JSON of their stored value, only where that
hashes to the row's `payload_sha256`. jsonb keeps strings and key sets but normalises numbers,
and two changes lost the bytes of earlier rows: -0.0 reads back as 0.0, and a float that Python
writes in exponent form (1e+16) reads back as the integer it equals. For those the one other
value jsonb could have stored is tried too (bounded), and again kept only if the hash proves it.
A row whose bytes cannot be proven keeps NULL and is verified as before, from its jsonb copy.

On PostgreSQL the append-only trigger is disabled for the fill only, inside this migration's
transaction: a failure rolls both back, and ALTER TABLE holds the table's exclusive lock until
the commit, so nothing else writes it meanwhile (docs/evidence.md, "Stored bytes").
"""

import hashlib
import itertools
from decimal import Decimal

from django.db import migrations, models

from closure.evidence.canonical import canonical_json
from closure.evidence.chain import json_loads, payload_json

# PARALLEL UNSAFE: its exception handler is a subtransaction, which no process may start during
# a parallel operation (the leader of a parallel scan included), so a query that calls it must
# never be planned as one.
COPY_AGREES_SQL = """
CREATE OR REPLACE FUNCTION closure_evidence_copy_agrees(query_copy jsonb, stored text)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL UNSAFE AS $$
BEGIN
    RETURN stored IS NULL OR query_copy = stored::jsonb;
EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
    -- Text jsonb cannot read (not JSON, a \\u0000 escape, too deep) was never written by the
    -- application: the copy cannot agree with it, and the verification names the row.
    RETURN false;
END;
$$;
"""
DROP_COPY_AGREES_SQL = "DROP FUNCTION IF EXISTS closure_evidence_copy_agrees(jsonb, text);"
# With the text beside its jsonb copy a typical row passes PostgreSQL's default 2 KB threshold
# and would be compressed, so every verification would decompress it: rows stay plain up to a
# page (larger ones are still compressed or moved out of line).
PLAIN_ROWS_SQL = "ALTER TABLE closure_evidence SET (toast_tuple_target = 8160);"
DEFAULT_ROWS_SQL = "ALTER TABLE closure_evidence RESET (toast_tuple_target);"
TRIGGER = "closure_evidence_append_only"
FILL_ROWS = 2000
# Rows with more numbers jsonb may have changed than this keep NULL rather than try 2^n values.
MAX_CHANGED_NUMBERS = 12


def _read_back_from(value):
    """The values jsonb may have stored as the number it reads back as `value`."""
    if isinstance(value, float) and value == 0:
        return [value, -value]
    if type(value) is int and abs(value) >= 10**16:
        try:
            spelled = repr(float(value))
        except OverflowError:
            return [value]
        if "e" in spelled and Decimal(spelled) == value:
            return [value, float(value)]
    return [value]


def _changed_numbers(value) -> int:
    if isinstance(value, dict):
        return sum(_changed_numbers(item) for item in value.values())
    if isinstance(value, list):
        return sum(_changed_numbers(item) for item in value)
    return len(_read_back_from(value)) - 1


def _originals(value):
    """Every value whose jsonb copy reads back as `value`, the value itself first."""
    if isinstance(value, dict):
        keys = list(value)
        for items in itertools.product(*(list(_originals(value[key])) for key in keys)):
            yield dict(zip(keys, items, strict=True))
    elif isinstance(value, list):
        for items in itertools.product(*(list(_originals(item)) for item in value)):
            yield list(items)
    else:
        yield from _read_back_from(value)


def proven_text(copy_text: str, payload_sha: str) -> str | None:
    """The canonical text of the stored value (or of one jsonb could have read back as it)
    whose SHA-256 is `payload_sha`, or None."""
    value = json_loads(copy_text)
    text = payload_json(value, payload_sha)
    if hashlib.sha256(text).hexdigest() == payload_sha:
        return text.decode()
    if _changed_numbers(value) > MAX_CHANGED_NUMBERS:
        return None
    for candidate in itertools.islice(_originals(value), 1, None):
        text = canonical_json(candidate)
        if hashlib.sha256(text).hexdigest() == payload_sha:
            return text.decode()
    return None


def fill_payload_text(connection) -> None:
    """Store the proven canonical text of every row that has none, in sequence order."""
    postgres = connection.vendor == "postgresql"
    copy = "payload::text" if postgres else "payload"
    with connection.cursor() as cursor:
        if postgres:
            cursor.execute(f"ALTER TABLE closure_evidence DISABLE TRIGGER {TRIGGER}")
        last = 0
        while True:
            cursor.execute(
                f"SELECT sequence, {copy}, payload_sha256 FROM closure_evidence "  # noqa: S608
                "WHERE payload_text IS NULL AND sequence > %s ORDER BY sequence LIMIT %s",
                [last, FILL_ROWS],
            )
            rows = cursor.fetchall()
            if not rows:
                break
            last = rows[-1][0]
            proven = [(proven_text(text, sha), sequence) for sequence, text, sha in rows]
            proven = [(text, sequence) for text, sequence in proven if text is not None]
            if proven and postgres:
                # One statement per batch, its arrays bound by the server (psycopg's own
                # cursor): a statement per row, or quoting the arrays, took most of the time.
                texts, sequences = zip(*proven, strict=True)
                with connection.connection.cursor() as bound:
                    bound.execute(
                        "UPDATE closure_evidence AS row SET payload_text = proven.text "
                        "FROM unnest(%s::text[], %s::bigint[]) AS proven(text, sequence) "
                        "WHERE row.sequence = proven.sequence",
                        [list(texts), list(sequences)],
                    )
            elif proven:
                cursor.executemany(
                    "UPDATE closure_evidence SET payload_text = %s WHERE sequence = %s", proven
                )
        if postgres:
            cursor.execute(f"ALTER TABLE closure_evidence ENABLE TRIGGER {TRIGGER}")


def add_copy_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(COPY_AGREES_SQL, params=None)
        schema_editor.execute(PLAIN_ROWS_SQL)


def remove_copy_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_COPY_AGREES_SQL)
        schema_editor.execute(DEFAULT_ROWS_SQL)


def fill(apps, schema_editor):
    fill_payload_text(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("closure", "0012_reporting_indexes")]

    operations = [
        migrations.AddField(
            model_name="evidence",
            name="payload_text",
            field=models.TextField(editable=False, null=True),
        ),
        migrations.RunPython(add_copy_function, remove_copy_function),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
