"""Every copy of a hashed payload is bound to the chain: the flattened columns, the jsonb copy and
the stored text itself. An edit to any of them in the database is named by verification."""

import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from closure.choices import MetadataKind
from closure.evidence.export import ExportFilter
from closure.evidence.ledger import evidence_verify
from closure.models import Evidence
from tests.conftest import client_for
from tests.test_evidence import SET_PAYLOAD, _append_rows, _tamper

pytestmark = pytest.mark.django_db

# One new value per copied column, each different from what `_append_rows` writes and allowed
# by the column's constraints.
EDITS = {
    "metadata_kind": str(MetadataKind.HEALTH),
    "session_id": "gordackfinalclosurereview-forged",
    "signer": "mallory",
    "health_id": "gordackexecdeliveryhealth-0000000000000099",
    "provider": "exec-webhook",
    "execution_status": "failed",
    "dry_run": True,
    "decision_count": 9,
    "blocked_count": 9,
    "approval_required_count": 9,
}
SET_TEXT = "UPDATE closure_evidence SET payload_text = %s WHERE sequence = %s"


def _set_column(name: str, value, sequence: int) -> None:
    _tamper(f"UPDATE closure_evidence SET {name} = %s WHERE sequence = %s", [value, sequence])  # noqa: S608


def _column(name: str, sequence: int):
    return Evidence.objects.filter(sequence=sequence).values_list(name, flat=True).get()


@pytest.mark.parametrize("column", sorted(EDITS))
def test_verify_names_a_copied_column_edited_in_the_database(column):
    # given three rows, and one column of the second edited behind the application's back
    rows = _append_rows(3)
    _set_column(column, EDITS[column], 2)

    # when the chain is verified
    result = evidence_verify()

    # then the second row and the column are named; the rows before it hold
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 2, 1)
    assert result.problem == f"column {column} does not match the payload"
    assert result.head == rows[0].chain_hash
    assert _column(column, 2) == EDITS[column]


def test_verify_names_an_edited_created_at_column():
    # given three rows, and the creation time of the second moved by a second
    rows = _append_rows(3)
    moved = rows[1].created_at + timedelta(seconds=1)
    _set_column("created_at", connection.ops.adapt_datetimefield_value(moved), 2)

    # when the chain is verified, then the second row and the column are named
    result = evidence_verify()
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 2, 1)
    assert result.problem == "column created_at does not match the payload"
    assert _column("created_at", 2) == moved


def test_an_edited_column_changes_what_a_filter_returns_until_verification_names_it():
    # given rows of one signer, and the signer column of the third rewritten
    _append_rows(3)
    _set_column("signer", "mallory", 3)

    # when auditors filter by the rewritten signer, then the column answers, not the payload
    found = list(ExportFilter(signer="mallory").queryset(3).values_list("sequence", flat=True))
    assert found == [3]
    assert Evidence.objects.get(sequence=3).payload["signer"] == "arthur"

    # and verification names the row whose column lies
    result = evidence_verify()
    assert (result.first_broken_sequence, result.problem) == (
        3,
        "column signer does not match the payload",
    )


def test_verify_names_the_jsonb_copy_edited_where_no_column_copies_it():
    # given three rows, and a field of the second's subject changed in the jsonb copy only
    rows = _append_rows(3)
    altered = {**rows[1].payload, "subject": {**rows[1].payload["subject"], "number": 7}}
    _tamper(SET_PAYLOAD, [json.dumps(altered), 2])

    # when the chain is verified, then the second row is named: its copy is not what is hashed
    result = evidence_verify()
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 2, 1)
    assert result.problem == "payload does not match payload_sha256"
    assert Evidence.objects.get(sequence=2).payload["subject"]["number"] == 7


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("edited", id="the same JSON with a changed field"),
        pytest.param("not json", id="not JSON"),
        pytest.param('{"a":"\\u0000"}', id="JSON that jsonb cannot hold"),
    ],
)
def test_verify_names_the_stored_text_edited_in_the_database(text):
    # given three rows, and the stored text of the second replaced
    rows = _append_rows(3)
    if text == "edited":
        text = rows[1].payload_text.replace('"number":2', '"number":7')
    _tamper(SET_TEXT, [text, 2])

    # when the chain is verified, then the second row is named
    result = evidence_verify()
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 2, 1)
    assert result.problem == "payload does not match payload_sha256"
    assert _column("payload_text", 2) == text


def test_a_row_whose_stored_text_was_removed_is_verified_from_its_copy_and_columns():
    # given three rows; the second's stored text removed, then one of its columns edited
    _append_rows(3)
    _tamper(SET_TEXT, [None, 2])

    # when the chain is verified, then the row still holds: its jsonb copy hashes as before
    assert (evidence_verify().ok, evidence_verify().count) == (True, 3)

    # and an edit of its copied columns is still named
    _set_column("decision_count", 4, 2)
    result = evidence_verify()
    assert (result.ok, result.first_broken_sequence) == (False, 2)
    assert result.problem == "column decision_count does not match the payload"


def test_verify_endpoint_and_command_name_an_edited_column(auditor):
    # given two rows, and the provider column of the second edited
    _append_rows(2)
    _set_column("provider", "exec-webhook", 2)

    # when an auditor verifies through the API
    response = client_for(auditor).get("/api/v1/evidence/verify/")

    # then the sequence and the column are named
    assert response.status_code == 200
    body = response.json()
    assert (body["ok"], body["count"], body["first_broken_sequence"]) == (False, 1, 2)
    assert body["problem"] == "column provider does not match the payload"

    # and the command fails naming them too
    with pytest.raises(CommandError) as failure:
        call_command("verify_evidence")
    assert str(failure.value) == (
        "evidence chain broken at sequence 2: column provider does not match the payload"
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_verification_holds_when_postgresql_plans_its_reads_as_parallel_queries():
    # given a ledger, and a server that plans every query it can as a parallel one (as it does
    # on its own once the table is large)
    _append_rows(5)
    with connection.cursor() as cursor:
        cursor.execute("SET force_parallel_mode = on")
    try:
        # when the whole chain and the part after a checkpoint are verified
        full = evidence_verify()
        readiness_read = evidence_verify(full=False)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET force_parallel_mode")

    # then the jsonb copy check runs, and both pass
    assert (full.ok, full.count, full.problem) == (True, 5, "")
    assert (readiness_read.ok, readiness_read.count) == (True, 5)
