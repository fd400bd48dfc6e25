"""Verifiable exports: byte-stable files, a signed manifest, streamed, recorded as evidence,
and checked offline by `python -m closure.verify_export` with no database and no Django."""

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence import chain
from closure.evidence import export as evidence_export
from closure.evidence.canonical import canonical_json
from closure.evidence.export import ExportDigest, ExportFilter, export_data_chunks
from closure.evidence.ledger import evidence_append, evidence_envelope, evidence_verify
from closure.models import Evidence
from closure.services.errors import InvalidInput
from closure.services.evidence import evidence_export_start
from closure.verify_export import main as verify_main
from closure.verify_export import verify_bundle
from tests.conftest import PROBLEM_CONTENT_TYPE, client_for, closure_counts
from tests.factories import make_evidence

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
EXPORT_URL = "/api/v1/evidence/export/"
REVIEW = MetadataKind.CLOSURE_REVIEW
HEALTH = MetadataKind.HEALTH
T0 = timezone.now().replace(microsecond=0) - timedelta(days=2)


@pytest.fixture
def ledger(db):
    """Six rows of two kinds, an hour apart, one with a signer a spreadsheet would run."""
    rows = []
    for number in range(6):
        rows.append(
            make_evidence(
                kind=REVIEW if number % 2 == 0 else HEALTH,
                session_id=f"subject-{number}",
                signer="=cmd|' /C calc'!A0" if number == 3 else "arthur",
                now=T0 + timedelta(hours=number),
                health_id="h-1" if number < 3 else "h-2",
            )
        )
    return rows


def _export(tmp_path: Path, actor, name: str, *, fmt="jsonl", through=None, **filters) -> Path:
    plan = evidence_export_start(
        actor=actor,
        export_format=fmt,
        export_filter=ExportFilter(**filters),
        through_sequence=through,
    )
    evidence_export.export_write_directory(plan, tmp_path / name)
    return tmp_path / name


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _resign(bundle: Path, manifest: dict, key: Ed25519PrivateKey) -> None:
    """Write `manifest` back, signed with `key` (as an exporter holding that key would)."""
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    public = chain.public_key_b64(key)
    signature = {
        "algorithm": "Ed25519",
        "key_id": chain.key_id(public),
        "public_key": public,
        "value": chain.sign(key, canonical_json(unsigned)),
    }
    signed = {**unsigned, "signature": signature}
    (bundle / "manifest.json").write_bytes(evidence_export.manifest_bytes(signed))


# -- the files ----------------------------------------------------------------------------------


def test_export_of_the_same_input_gives_the_same_bytes(ledger, auditor, evidence_key, tmp_path):
    # given an export of the whole ledger
    first = _export(tmp_path, auditor, "first")
    through = _manifest(first)["ledger"]["through_sequence"]
    # and more evidence appended since (including the first export's own row)
    make_evidence(kind=REVIEW, session_id="later", signer="arthur")

    # when the same input is exported again, as a directory and as a ZIP
    second = _export(tmp_path, auditor, "second", through=through)
    plan = evidence_export_start(
        actor=auditor, export_format="jsonl", export_filter=ExportFilter(), through_sequence=through
    )
    zip_one = b"".join(evidence_export.export_zip_chunks(plan))
    zip_two = b"".join(evidence_export.export_zip_chunks(plan))

    # then the data file, the manifest and the ZIP are byte for byte the same
    assert through == 6
    assert (first / "evidence.jsonl").read_bytes() == (second / "evidence.jsonl").read_bytes()
    assert (first / "manifest.json").read_bytes() == (second / "manifest.json").read_bytes()
    assert zip_one == zip_two
    with zipfile.ZipFile(io.BytesIO(zip_one)) as bundle:
        [data_name] = [n for n in bundle.namelist() if n.endswith("evidence.jsonl")]
        assert bundle.read(data_name) == (first / "evidence.jsonl").read_bytes()


def test_export_csv_of_the_same_input_gives_the_same_bytes(ledger, auditor, evidence_key, tmp_path):
    # given a CSV export, then more evidence appended
    first = _export(tmp_path, auditor, "first", fmt="csv")
    make_evidence(kind=REVIEW, session_id="later", signer="arthur")

    # when the same input is exported again
    second = _export(tmp_path, auditor, "second", fmt="csv", through=6)

    # then both files are byte for byte the same
    assert (first / "evidence.csv").read_bytes() == (second / "evidence.csv").read_bytes()
    assert (first / "manifest.json").read_bytes() == (second / "manifest.json").read_bytes()
    assert _manifest(second)["row_count"] == 6


def test_export_jsonl_lines_are_the_canonical_envelopes_with_a_signed_manifest(
    ledger, auditor, evidence_key, tmp_path
):
    bundle = _export(tmp_path, auditor, "all")

    data = (bundle / "evidence.jsonl").read_bytes()
    expected = b"".join(
        canonical_json(evidence_envelope(row)) + b"\n"
        for row in Evidence.objects.order_by("sequence")[:6]
    )
    assert data == expected
    manifest = _manifest(bundle)
    signature = manifest.pop("signature")
    assert manifest == {
        "schema_version": "cavra.evidence.export.v1",
        "generator": {"name": "cavra-closure", "version": "0.1.0", "export_format": 1},
        "format": "jsonl",
        "file": {
            "name": "evidence.jsonl",
            "media_type": "application/jsonl",
            "sha256": chain.sha256_hex(data),
            "bytes": len(data),
        },
        "filter": {
            "metadata_kind": None,
            "session_id": None,
            "health_id": None,
            "provider": None,
            "execution_status": None,
            "signer": None,
            "dry_run": None,
            "created_after": None,
            "created_before": None,
            "sequence_from": None,
            "sequence_to": None,
        },
        "period": {"created_after": None, "created_before": None},
        "contiguous": True,
        "row_count": 6,
        "first_sequence": 1,
        "last_sequence": 6,
        "ledger": {"through_sequence": 6, "chain_head": ledger[-1].chain_hash},
    }
    assert signature["public_key"] == evidence_key
    assert chain.signature_valid(evidence_key, canonical_json(manifest), signature["value"])


def test_export_is_recorded_as_evidence_before_it_streams(ledger, auditor, evidence_key):
    # when an export is started
    plan = evidence_export_start(
        actor=auditor, export_format="csv", export_filter=ExportFilter(metadata_kind=HEALTH)
    )

    # then one evidence row records who exported what, cut at the head before it
    row = Evidence.objects.get(sequence=7)
    assert row.metadata_kind == MetadataKind.EVIDENCE_EXPORT
    assert (row.session_id, row.signer, row.decision_count) == (plan.export_id, "arthur", 3)
    assert plan.export_id.startswith("gordackfinalevidenceexport-")
    assert len(plan.export_id) == len("gordackfinalevidenceexport-") + 16
    subject = row.payload["subject"]
    assert subject["through_sequence"] == 6
    assert subject["chain_head"] == ledger[-1].chain_hash
    assert (subject["row_count"], subject["first_sequence"], subject["last_sequence"]) == (3, 2, 6)
    assert subject["filter"]["metadata_kind"] == HEALTH
    assert subject["format"] == "csv"
    assert subject["generator"]["name"] == "cavra-closure"


def test_export_refuses_a_through_sequence_beyond_the_head(ledger, auditor):
    with pytest.raises(InvalidInput, match="beyond the ledger head"):
        evidence_export_start(
            actor=auditor, export_format="jsonl", export_filter=ExportFilter(), through_sequence=7
        )
    assert Evidence.objects.count() == 6


def test_export_streams_in_bounded_chunks(ledger, auditor, monkeypatch):
    # given tiny fetch and chunk sizes
    monkeypatch.setattr(evidence_export, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(evidence_export, "FETCH_ROWS", 2)
    plan = evidence_export_start(actor=auditor, export_format="jsonl", export_filter=ExportFilter())
    digest = ExportDigest()

    # when the data file is produced
    chunks = list(export_data_chunks(plan, digest))

    # then it came in several chunks, none much larger than the limit, adding up to the file
    longest_line = max(len(canonical_json(evidence_envelope(r))) + 1 for r in ledger)
    assert len(chunks) >= 3
    assert all(len(c) < 1000 + longest_line for c in chunks)
    assert (digest.row_count, digest.size) == (6, sum(len(c) for c in chunks))


# -- offline verification -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_verify_export_accepts_an_untouched_bundle(ledger, auditor, evidence_key, tmp_path, fmt):
    bundle = _export(tmp_path, auditor, "b", fmt=fmt)

    report = verify_bundle(bundle, public_key=evidence_key)

    assert report["problems"] == []
    assert report["ok"] is True
    assert (report["row_count"], report["first_sequence"], report["last_sequence"]) == (6, 1, 6)
    assert report["signature"] == {"ok": True, "key_id": chain.key_id(evidence_key), "pinned": True}
    assert report["chain"] == {
        "ok": True,
        "contiguous": True,
        "first_broken_sequence": None,
        "problem": None,
    }
    # the data file and the manifest are found from any of the bundle's paths
    data = bundle / f"evidence.{fmt}"
    for path in (bundle / "manifest.json", data):
        assert verify_bundle(path, public_key=evidence_key)["ok"] is True


def test_export_csv_quotes_cells_a_spreadsheet_would_run(ledger, auditor, evidence_key, tmp_path):
    bundle = _export(tmp_path, auditor, "b", fmt="csv")

    rows = list(csv.reader(io.StringIO((bundle / "evidence.csv").read_text(), newline="")))

    assert rows[0] == list(chain.CSV_COLUMNS)
    assert rows[4][4] == "'=cmd|' /C calc'!A0"
    assert json.loads(rows[4][12])["signer"] == "=cmd|' /C calc'!A0"
    assert (bundle / "evidence.csv").read_bytes().count(b"\r\n") == 7
    assert verify_bundle(bundle, public_key=evidence_key)["ok"] is True


def test_verify_export_names_the_sequence_of_an_altered_row(
    ledger, auditor, evidence_key, tmp_path
):
    # given a bundle whose fourth line was altered (kept canonical)
    bundle = _export(tmp_path, auditor, "b")
    lines = (bundle / "evidence.jsonl").read_bytes().splitlines(keepends=True)
    row = json.loads(lines[3])
    lines[3] = canonical_json({**row, "decision_count": 99}) + b"\n"
    (bundle / "evidence.jsonl").write_bytes(b"".join(lines))

    report = verify_bundle(bundle, public_key=evidence_key)

    assert report["ok"] is False
    assert report["chain"]["first_broken_sequence"] == 4
    assert report["problems"] == [
        "the data file's SHA-256 does not match the manifest",
        "the data file's size does not match the manifest",
        "chain broken at sequence 4: payload does not match payload_sha256",
    ]


def test_verify_export_names_the_gap_of_a_removed_row(ledger, auditor, evidence_key, tmp_path):
    bundle = _export(tmp_path, auditor, "b")
    lines = (bundle / "evidence.jsonl").read_bytes().splitlines(keepends=True)
    (bundle / "evidence.jsonl").write_bytes(b"".join(lines[:2] + lines[3:]))

    report = verify_bundle(bundle, public_key=evidence_key)

    assert report["ok"] is False
    assert report["chain"]["first_broken_sequence"] == 3
    assert "chain broken at sequence 3: sequence gap: expected 3" in report["problems"]
    assert "row_count is 5, the manifest says 6" in report["problems"]


def test_verify_export_refuses_an_edited_manifest_and_a_foreign_key(
    ledger, auditor, evidence_key, tmp_path
):
    # given a bundle whose manifest row count was edited
    bundle = _export(tmp_path, auditor, "b")
    manifest = _manifest(bundle)
    (bundle / "manifest.json").write_bytes(
        evidence_export.manifest_bytes({**manifest, "row_count": 5})
    )
    edited = verify_bundle(bundle, public_key=evidence_key)
    # and the same edit re-signed by someone else's key
    _resign(bundle, {**manifest, "row_count": 5}, Ed25519PrivateKey.generate())
    foreign = verify_bundle(bundle, public_key=evidence_key)
    embedded = verify_bundle(bundle, public_key=None)

    assert edited["signature"]["ok"] is False
    assert "the manifest signature does not verify" in edited["problems"]
    assert foreign["signature"]["ok"] is False
    assert foreign["problems"][0].startswith("the manifest is signed by key ")
    # trusting the embedded key proves only integrity: the signature holds, the count does not
    assert embedded["signature"] == {
        "ok": True,
        "key_id": embedded["signature"]["key_id"],
        "pinned": False,
    }
    assert embedded["problems"] == ["row_count is 6, the manifest says 5"]


def test_verify_export_names_a_row_outside_the_exported_filter(
    ledger, auditor, evidence_key, settings, tmp_path
):
    # given an export of one kind, whose manifest is then widened to another (and re-signed
    # with the real key, as only the exporter could)
    bundle = _export(tmp_path, auditor, "b", metadata_kind=HEALTH)
    manifest = _manifest(bundle)
    assert (manifest["contiguous"], manifest["row_count"]) == (False, 3)
    assert verify_bundle(bundle, public_key=evidence_key)["ok"] is True
    manifest["filter"]["metadata_kind"] = REVIEW
    _resign(bundle, manifest, chain.private_key_from_b64(settings.CAVRA_EVIDENCE_SIGNING_KEY))

    report = verify_bundle(bundle, public_key=evidence_key)

    assert report["ok"] is False
    assert report["problems"] == [
        f"sequence 2 does not belong in this export: metadata_kind is not {REVIEW.value!r}"
    ]


def test_verify_export_checks_a_time_range_export(ledger, auditor, evidence_key, tmp_path):
    bundle = _export(
        tmp_path,
        auditor,
        "b",
        created_after=T0 + timedelta(hours=2),
        created_before=T0 + timedelta(hours=4),
    )

    manifest = _manifest(bundle)
    report = verify_bundle(bundle, public_key=evidence_key)

    assert manifest["period"] == {
        "created_after": chain.isoformat(T0 + timedelta(hours=2)),
        "created_before": chain.isoformat(T0 + timedelta(hours=4)),
    }
    assert (report["ok"], report["first_sequence"], report["last_sequence"]) == (True, 3, 4)


def test_verify_export_cli_exit_status_and_key_requirement(
    ledger, auditor, evidence_key, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("CAVRA_EVIDENCE_PUBLIC_KEY", raising=False)
    bundle = _export(tmp_path, auditor, "b")

    assert verify_main([str(bundle), "--public-key", evidence_key]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    with pytest.raises(SystemExit) as usage:
        verify_main([str(bundle)])
    assert usage.value.code == 2
    assert "give the published key" in capsys.readouterr().err
    monkeypatch.setenv(
        "CAVRA_EVIDENCE_PUBLIC_KEY", chain.public_key_b64(Ed25519PrivateKey.generate())
    )
    assert verify_main([str(bundle)]) == 1
    assert verify_main([str(tmp_path / "missing")]) == 1


def test_verify_export_runs_with_no_database_and_no_django(ledger, auditor, evidence_key, tmp_path):
    # given a bundle, and an environment with neither Django settings nor a database
    bundle = _export(tmp_path, auditor, "b")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}

    # when the verifier runs as a module in a fresh interpreter
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "closure.verify_export", str(bundle), "--public-key", evidence_key],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    imports = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-c",
            "import sys, closure.verify_export; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )

    # then it succeeds, and it never imported Django
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    assert imports.stdout.strip() == b"[]"
    assert "DATABASE_URL" not in env
    assert "DJANGO_SETTINGS_MODULE" not in env


def test_verify_export_in_a_fresh_interpreter_rejects_a_tampered_bundle(
    ledger, auditor, evidence_key, tmp_path
):
    # given a ZIP bundle whose fifth row was changed (kept canonical, hashes untouched)
    plan = evidence_export_start(actor=auditor, export_format="jsonl", export_filter=ExportFilter())
    original = b"".join(evidence_export.export_zip_chunks(plan))
    tampered = tmp_path / "tampered.zip"
    with (
        zipfile.ZipFile(io.BytesIO(original)) as source,
        zipfile.ZipFile(tampered, "w") as target,
    ):
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("evidence.jsonl"):
                lines = data.splitlines(keepends=True)
                row = json.loads(lines[4])
                lines[4] = canonical_json({**row, "signer": "mallory"}) + b"\n"
                data = b"".join(lines)
            target.writestr(name, data)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}

    # when the verifier runs on it with no database and no Django settings
    done = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "closure.verify_export",
            str(tampered),
            "--public-key",
            evidence_key,
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )

    # then it fails, naming the fifth row
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert report["signature"]["ok"] is True
    assert report["chain"]["first_broken_sequence"] == 5
    assert report["problems"] == [
        "the data file's SHA-256 does not match the manifest",
        "the data file's size does not match the manifest",
        "chain broken at sequence 5: payload does not match payload_sha256",
    ]


# -- the fast path (orjson) gives the standard library's bytes ------------------------------------


def test_export_and_verify_of_floats_orjson_writes_differently(auditor, evidence_key, tmp_path):
    # given a row whose payload holds floats that orjson writes otherwise than json (5e-05)
    with transaction.atomic():
        row = evidence_append(
            kind=REVIEW,
            session_id="floats",
            signer="arthur",
            subject={"small": 5e-05, "ratio": 2.5, "tiny": 1.2618626328942063e-05},
        )
    assert chain.orjson is not None
    assert chain.orjson.dumps(row.payload, option=chain.orjson.OPT_SORT_KEYS) != canonical_json(
        row.payload
    )

    # when the ledger is verified and exported
    verified = evidence_verify()
    bundle = _export(tmp_path, auditor, "b", through=1)

    # then the row verifies, and its exported line is the standard canonical JSON
    assert (verified.ok, verified.count) == (True, 1)
    line = (bundle / "evidence.jsonl").read_bytes()
    assert line == canonical_json(evidence_envelope(row)) + b"\n"
    assert b'"small":5e-05' in line
    assert verify_bundle(bundle, public_key=evidence_key)["ok"] is True


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_bytes_and_verification_are_the_same_without_orjson(
    ledger, auditor, evidence_key, tmp_path, monkeypatch, fmt
):
    # given an export made with orjson
    fast = _export(tmp_path, auditor, "fast", fmt=fmt, through=6)

    # when the same export is made and verified with the standard library only
    monkeypatch.setattr(chain, "orjson", None)
    plain = _export(tmp_path, auditor, "plain", fmt=fmt, through=6)
    report = verify_bundle(fast, public_key=evidence_key)

    # then the bytes are the same, and the bundle verifies
    name = f"evidence.{fmt}"
    assert (fast / name).read_bytes() == (plain / name).read_bytes()
    assert (fast / "manifest.json").read_bytes() == (plain / "manifest.json").read_bytes()
    assert (report["ok"], report["row_count"]) == (True, 6)


# -- the API and the command --------------------------------------------------------------------


def _zip_of(response) -> bytes:
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def test_api_export_streams_a_zip_bundle_that_verifies(ledger, auditor, evidence_key, tmp_path):
    # when an auditor exports one kind as CSV
    response = client_for(auditor).post(
        EXPORT_URL, {"format": "csv", "metadata_kind": REVIEW}, format="json"
    )

    # then a ZIP bundle streams, and the export is recorded
    assert response["Content-Type"] == "application/zip"
    assert response.streaming
    body = _zip_of(response)
    export = Evidence.objects.get(metadata_kind=MetadataKind.EVIDENCE_EXPORT)
    assert response["X-Evidence-Export-Id"] == export.session_id
    assert response["Content-Disposition"] == (
        f'attachment; filename="cavra-evidence-6-{export.session_id[-16:]}.zip"'
    )
    path = tmp_path / "bundle.zip"
    path.write_bytes(body)
    report = verify_bundle(path, public_key=evidence_key)
    assert report["problems"] == []
    assert (report["format"], report["row_count"], report["last_sequence"]) == ("csv", 3, 5)


def test_api_export_idempotent_replay_streams_the_same_bytes_and_records_nothing(
    ledger, auditor, evidence_key
):
    reader = client_for(auditor)
    headers = {"HTTP_IDEMPOTENCY_KEY": "export-1"}

    first = _zip_of(reader.post(EXPORT_URL, {}, format="json", **headers))
    count = Evidence.objects.count()
    replay = reader.post(EXPORT_URL, {}, format="json", **headers)

    assert replay["Idempotent-Replayed"] == "true"
    assert _zip_of(replay) == first
    assert Evidence.objects.count() == count == 7


def test_api_export_refusals_write_nothing(ledger, auditor, operator, evidence_key):
    before = closure_counts()

    forbidden = client_for(operator).post(EXPORT_URL, {}, format="json")
    unknown = client_for(auditor).post(EXPORT_URL, {"kind": "x"}, format="json")
    beyond = client_for(auditor).post(EXPORT_URL, {"through_sequence": 99}, format="json")
    backwards = client_for(auditor).post(
        EXPORT_URL, {"sequence_from": 4, "sequence_to": 2}, format="json"
    )

    assert forbidden.status_code == 403
    assert (unknown.status_code, unknown.json()["errors"]) == (400, {"kind": ["Unknown field."]})
    assert beyond["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert (beyond.status_code, beyond.json()["errors"]) == (
        400,
        {"through_sequence": ["The ledger ends at sequence 6."]},
    )
    assert backwards.json()["errors"] == {"sequence_to": ["Must not be below sequence_from."]}
    assert closure_counts() == before


def test_export_evidence_command_writes_a_directory_or_a_zip(
    ledger, auditor, evidence_key, tmp_path, capsys
):
    call_command(
        "export_evidence",
        "--user",
        "arthur",
        "--output",
        str(tmp_path / "d"),
        "--sequence-from",
        "2",
    )
    summary = json.loads(capsys.readouterr().out)
    call_command("export_evidence", "--user", "arthur", "--output", str(tmp_path / "b.zip"))

    assert (summary["row_count"], summary["first_sequence"], summary["last_sequence"]) == (5, 2, 6)
    assert verify_bundle(tmp_path / "d", public_key=evidence_key)["ok"] is True
    assert verify_bundle(tmp_path / "b.zip", public_key=evidence_key)["ok"] is True
    assert Evidence.objects.filter(metadata_kind=MetadataKind.EVIDENCE_EXPORT).count() == 2


def test_export_evidence_command_refuses_a_user_without_the_permission(ledger, operator, tmp_path):
    with pytest.raises(CommandError, match="lacks the export_evidence permission"):
        call_command("export_evidence", "--user", "olivia", "--output", str(tmp_path / "d"))
    assert Evidence.objects.count() == 6
    assert not (tmp_path / "d").exists()
