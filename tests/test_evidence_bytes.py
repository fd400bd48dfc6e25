"""Evidence hashes the bytes it stores. Values that PostgreSQL's jsonb normalises (-0.0, floats
in exponent form) verify in the database, in exports and offline; rows written before the text
was stored keep verifying through migration 0013; a damaged bundle is reported, never a crash."""

import csv
import hashlib
import importlib
import json
import math
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closure.choices import MetadataKind
from closure.evidence import chain
from closure.evidence.canonical import canonical_json
from closure.evidence.chain import CSV_COLUMNS, INTEGRITY_FIELDS
from closure.evidence.export import ExportFilter, export_write_directory, export_write_zip
from closure.evidence.ledger import (
    evidence_append,
    evidence_envelope,
    evidence_verify,
    stored_row_problem,
)
from closure.models import Evidence
from closure.services.evidence import evidence_export_start
from closure.verify_export import main as verify_main
from closure.verify_export import verify_bundle
from tests.conftest import A, client_for, using_postgres
from tests.test_evidence import SET_PAYLOAD, TRIGGER, _tamper

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
fill_payload_text = importlib.import_module(
    "closure.migrations.0013_evidence_stored_bytes"
).fill_payload_text

# Numbers jsonb stores differently from the text Python writes, and their neighbours.
EDGE_FLOATS = [-0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e308, -1e308]
EDGE_FLOATS += [1.7976931348623157e308, 1e16, 1.5e300, 5e-05, 0.1, 1e-07, 123456789.125]
EDGE_INTEGERS = [2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, 2**63, 2**64 + 1, -(2**63) - 1]
# Characters JSON escapes, characters it does not, astral planes, and text that looks escaped.
EDGE_TEXT = ['"', "\\", "/", "\b\f\n\r\t", "\x01\x1f\x7f", "\u2028\u2029", "\ufeff", "é"]
EDGE_TEXT += ["\U0001f600", "\U0010ffff", "\\u0041", "\\ud800", '{"a": 1}']
SPECIAL_SUBJECT = {
    "delay": -0.0,
    "floats": EDGE_FLOATS,
    "integers": EDGE_INTEGERS,
    "text": EDGE_TEXT,
    "\U0001f600 key": {"\u2028": "\\"},
}
BATCH = 25
EXAMPLES = 80


def _append(subject: dict, number: int = 1) -> Evidence:
    with transaction.atomic():
        return evidence_append(
            kind=MetadataKind.CLOSURE_REVIEW,
            session_id=f"gordackfinalclosurereview-{number:016x}",
            signer="arthur",
            subject=subject,
        )


def _stored_texts() -> list[str | None]:
    return list(Evidence.objects.order_by("sequence").values_list("payload_text", flat=True))


# -- issue 14, item 1: a valid request must not break the chain -----------------------------------


def test_retry_plan_with_a_negative_zero_delay_leaves_the_chain_verifiable(operator, auditor):
    # given an operator planning retries with a delay of -0.0 minutes, immediate retries allowed
    policy = {"retry_delay_minutes": -0.0, "allow_immediate_retry": True}

    # when the plan is created through the API
    response = client_for(operator).post(f"{A}/retry-plan", {"retry_policy": policy}, format="json")

    # then it is recorded, its evidence stores the -0.0 it hashed, and the chain verifies
    assert response.status_code == 201
    row = Evidence.objects.get()
    assert '"retry_delay_minutes":-0.0' in row.payload_text
    assert hashlib.sha256(row.payload_text.encode()).hexdigest() == row.payload_sha256
    shown = evidence_envelope(row)["subject"]["retry_policy"]["retry_delay_minutes"]
    assert math.copysign(1.0, shown) == -1.0
    # (the jsonb copy holds 0.0 on PostgreSQL: the normalisation that used to break the chain)
    copy = row.payload["subject"]["retry_policy"]["retry_delay_minutes"]
    assert math.copysign(1.0, copy) == (1.0 if using_postgres() else -1.0)
    verified = client_for(auditor).get("/api/v1/evidence/verify/").json()
    assert (verified["ok"], verified["count"], verified["problem"]) == (True, 1, None)
    call_command("verify_evidence")  # raises CommandError (exit 1) on a broken chain


def test_console_retry_plan_with_a_delay_of_minus_zero_leaves_the_chain_verifiable(operator):
    # given the console's plan form with a delay of "-0" minutes, immediate retries allowed
    form = {
        "max_retry_attempts": "3",
        "retry_delay_minutes": "-0",
        "backoff_multiplier": "2.0",
        "max_delay_minutes": "1440",
        "allow_immediate_retry": "on",
    }

    # when the operator plans
    response = client_for(operator).post("/console/retry-plans/", form)

    # then the plan and its evidence are written, and the chain verifies
    assert response.status_code == 302
    assert '"retry_delay_minutes":-0.0' in Evidence.objects.get().payload_text
    assert (evidence_verify().ok, evidence_verify().count) == (True, 1)

    # and the console's evidence pages show the row intact, with the -0.0 it hashed
    detail = client_for(operator).get("/console/evidence/1/")
    assert detail.status_code == 200
    assert detail.context["integrity"].ok is True
    assert '"retry_delay_minutes":-0.0' in detail.context["payload_json"]
    listing = client_for(operator).get("/console/evidence/")
    [(row, integrity, _)] = listing.context["rows"]
    assert (row.sequence, integrity.ok) == (1, True)


# -- any payload the service can append verifies (property) ---------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
KEYS = TEXT | st.sampled_from(EDGE_TEXT)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EDGE_FLOATS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(EDGE_INTEGERS),
    TEXT,
    st.sampled_from(EDGE_TEXT),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=16,
)


@st.composite
def nested_values(draw) -> object:
    """A value wrapped in up to 60 lists and objects: as deep as the API lets input be."""
    value = draw(VALUES)
    for _ in range(draw(st.integers(min_value=0, max_value=60))):
        value = [value] if draw(st.booleans()) else {draw(KEYS): value}
    return value


SUBJECTS = st.dictionaries(KEYS, nested_values(), min_size=1, max_size=4)


def test_generated_payloads_appended_through_the_service_always_verify(
    auditor, evidence_key, tmp_path
):
    appended: list[Evidence] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=st.lists(SUBJECTS, min_size=BATCH, max_size=BATCH))
    def append_and_verify(batch: list[dict]) -> None:
        # given a batch of generated subjects appended through the real service
        rows = [_append(subject, len(appended) + n) for n, subject in enumerate(batch)]
        appended.extend(rows)

        # when the whole chain is verified, then every row so far holds
        result = evidence_verify()
        assert (result.ok, result.count, result.problem) == (True, len(appended), "")
        # and each row stores the bytes it hashed, which hold its subject exactly
        stored = dict(
            Evidence.objects.filter(pk__in=[row.pk for row in rows]).values_list(
                "sequence", "payload_text"
            )
        )
        for row, subject in zip(rows, batch, strict=True):
            text = stored[row.sequence]
            assert hashlib.sha256(text.encode()).hexdigest() == row.payload_sha256
            assert canonical_json(json.loads(text)["subject"]) == canonical_json(subject)
        # and each row, read back with its jsonb copy, holds on its own (the console's check)
        for row in Evidence.objects.filter(pk__in=[row.pk for row in rows]):
            assert stored_row_problem(row) == ""

    append_and_verify()
    assert len(appended) == BATCH * EXAMPLES

    # and the whole generated ledger exports to bundles that verify offline
    for export_format in ("jsonl", "csv"):
        plan = evidence_export_start(
            actor=auditor, export_format=export_format, export_filter=ExportFilter()
        )
        export_write_directory(plan, tmp_path / export_format)
        report = verify_bundle(tmp_path / export_format, public_key=evidence_key)
        assert (report["ok"], report["row_count"], report["problems"]) == (True, plan.row_count, [])


# -- exports carry the stored bytes ---------------------------------------------------------------


def test_exports_of_jsonb_normalised_values_carry_the_stored_bytes_and_verify(
    auditor, evidence_key, tmp_path
):
    # given a row whose subject holds every value jsonb would normalise, and one after it
    row = _append(SPECIAL_SUBJECT)
    _append({"after": True}, 2)

    # when it is exported as JSON Lines, CSV and a ZIP
    bundles = {}
    for export_format in ("jsonl", "csv"):
        plan = evidence_export_start(
            actor=auditor, export_format=export_format, export_filter=ExportFilter()
        )
        bundles[export_format] = tmp_path / export_format
        export_write_directory(plan, bundles[export_format])
    plan = evidence_export_start(actor=auditor, export_format="jsonl", export_filter=ExportFilter())
    bundles["zip"] = tmp_path / "bundle.zip"
    export_write_zip(plan, bundles["zip"])

    # then every bundle verifies offline
    for bundle in bundles.values():
        report = verify_bundle(bundle, public_key=evidence_key)
        assert (report["ok"], report["problems"]) == (True, [])
    # and the row's payload in each file is the stored text, byte for byte
    line = (bundles["jsonl"] / "evidence.jsonl").read_bytes().splitlines()[0]
    exported = {k: v for k, v in json.loads(line).items() if k not in INTEGRITY_FIELDS}
    assert canonical_json(exported) == row.payload_text.encode()
    assert b'"delay":-0.0' in line and b"1e+308" in line and b"5e-324" in line
    assert str(2**64 + 1).encode() in line and "\U0001f600".encode() in line
    with (bundles["csv"] / "evidence.csv").open(encoding="utf-8", newline="") as cells:
        first_row = list(csv.reader(cells))[1]
    assert first_row[CSV_COLUMNS.index("payload_json")] == row.payload_text


def test_csv_export_of_a_payload_longer_than_the_csv_field_limit_verifies(
    auditor, evidence_key, tmp_path
):
    # given a row whose payload is longer than the csv module's default field limit (128 KiB)
    _append({"notes": "x" * 200_000})

    # when it is exported as CSV and verified offline, then it verifies
    plan = evidence_export_start(actor=auditor, export_format="csv", export_filter=ExportFilter())
    export_write_directory(plan, tmp_path / "csv")
    report = verify_bundle(tmp_path / "csv", public_key=evidence_key)
    assert (report["ok"], report["row_count"], report["problems"]) == (True, 1, [])


# -- rows from before the stored text (migration 0013) --------------------------------------------


def test_migration_fill_restores_the_bytes_of_rows_written_before_the_stored_text():
    # given rows appended as before migration 0013: hashed over the canonical JSON of the value,
    # stored only as the jsonb copy (PostgreSQL normalised -0.0 and exponent floats in it)
    originals = [_append(SPECIAL_SUBJECT, 1).payload_text, _append({"plain": 1}, 2).payload_text]
    _tamper("UPDATE closure_evidence SET payload_text = NULL", [])
    before = evidence_verify()
    if using_postgres():
        # the old defect: the re-read jsonb value no longer hashes to payload_sha256
        assert (before.ok, before.first_broken_sequence) == (False, 1)
        assert before.problem == "payload does not match payload_sha256"
    else:
        assert (before.ok, before.count) == (True, 2)

    # when the migration fills the stored text
    fill_payload_text(connection)

    # then each row holds its original bytes again, proven by its hash, and the chain verifies
    assert _stored_texts() == originals
    assert (evidence_verify().ok, evidence_verify().count) == (True, 2)


def test_migration_fill_leaves_a_row_it_cannot_prove_without_text_and_reported():
    # given two rows from before migration 0013, the jsonb copy of the first altered since
    first = _append({"number": 1}, 1)
    second_text = _append({"number": 2}, 2).payload_text
    _tamper("UPDATE closure_evidence SET payload_text = NULL", [])
    _tamper(SET_PAYLOAD, [json.dumps({**first.payload, "signer": "mallory"}), 1])

    # when the migration fills the stored text
    fill_payload_text(connection)

    # then the altered row keeps no text and is still named; the intact one got its bytes
    assert _stored_texts() == [None, second_text]
    result = evidence_verify()
    assert (result.ok, result.first_broken_sequence) == (False, 1)
    assert result.problem == "payload does not match payload_sha256"


@pytest.mark.postgres
def test_migration_fill_leaves_the_append_only_trigger_enabled():
    # given a row from before migration 0013
    _append({"number": 1})
    _tamper("UPDATE closure_evidence SET payload_text = NULL", [])

    # when the migration fills the stored text
    fill_payload_text(connection)

    # then the trigger refuses changes again
    assert _stored_texts() != [None]
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE closure_evidence SET payload_text = 'x'")
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = %s", [TRIGGER])
        assert cursor.fetchone() == ("O",)


# -- issue 14, item 11: a damaged bundle is a report, not a traceback -----------------------------


@pytest.fixture
def zip_bundle(auditor, evidence_key, tmp_path) -> Path:
    for number in range(40):
        _append({"number": number, "notes": "evidence " * 50}, number + 1)
    plan = evidence_export_start(actor=auditor, export_format="jsonl", export_filter=ExportFilter())
    path = tmp_path / "bundle.zip"
    export_write_zip(plan, path)
    return path


def _data_member_span(path: Path) -> tuple[int, int]:
    """Where the compressed bytes of the data file start and how many there are."""
    data = path.read_bytes()
    with zipfile.ZipFile(path) as bundle:
        info = next(i for i in bundle.infolist() if i.filename.endswith("evidence.jsonl"))
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 :][:4])
    return info.header_offset + 30 + name_length + extra_length, info.compress_size


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        del data[len(data) // 2 :]
    elif how == "bad deflate data":
        start, size = _data_member_span(path)
        data[start + size // 3 : start + size // 3 + 64] = b"\xff" * 64
    elif how == "bad central directory":
        start = data.rindex(b"PK\x01\x02")
        data[start : start + 4] = b"XXXX"
    elif how == "not a ZIP":
        data = bytearray(b"these bytes were never a ZIP archive\n" * 20)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("truncated", "not a readable ZIP (truncated or damaged)"),
        ("bad deflate data", "cannot read the data file 'evidence.jsonl' after "),
        ("bad central directory", "not a readable ZIP (Bad magic number for central directory)"),
        ("not a ZIP", "not a readable ZIP (truncated or damaged)"),
    ],
)
def test_verify_export_reports_a_damaged_zip_without_a_traceback(
    zip_bundle, evidence_key, capsys, how, problem
):
    # given a streamed ZIP bundle, damaged
    _damage(zip_bundle, how)

    # when it is verified offline
    status = verify_main([str(zip_bundle), "--public-key", evidence_key])

    # then the JSON report names the problem and the exit status is 1
    output = capsys.readouterr()
    report = json.loads(output.out)
    assert (status, report["ok"], report["bundle"], output.err) == (1, False, str(zip_bundle), "")
    [reported] = report["problems"]
    assert problem in reported


def test_verify_export_in_a_fresh_interpreter_reports_bad_deflate_data(zip_bundle, evidence_key):
    # given a ZIP bundle whose data file's compressed bytes are damaged
    _damage(zip_bundle, "bad deflate data")

    # when the module runs as a command
    done = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "closure.verify_export",
            str(zip_bundle),
            "--public-key",
            evidence_key,
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        check=False,
    )

    # then it exits 1 with its JSON report, and no traceback
    assert (done.returncode, done.stderr) == (1, b"")
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert report["problems"][0].startswith("cannot read the data file 'evidence.jsonl' after ")


# -- parsing stored text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "-9223372036854775809",
        "18446744073709551616",
        "123456789012345678901234567890",
        '{"id":"0123456789012345678901","n":[-0.0,5e-324,1e+308]}',
    ],
)
def test_json_loads_reads_what_json_loads_reads_even_where_orjson_would_not(text):
    # when text with integers beyond 64 bits (which orjson reads as floats) is parsed
    value = chain.json_loads(text)

    # then it is the standard library's value, and re-encodes to the same text
    assert value == json.loads(text)
    assert canonical_json(value) == text.encode()
