"""Benchmark 6: evidence chain verification on PostgreSQL, rows per second and peak memory.

Builds its own database (dropped and re-created), fills the ledger with N chained evidence rows
of realistic size (one COPY, hashes computed in Python: about a minute per million rows), then
runs each operation as its own process, several rounds, and prints the median wall time, rows
per second and peak resident memory (VmHWM of that process):

- reference:   a bare psycopg streaming read in sequence order of the stored payload text and
               the hash columns that hashes each payload's text and chain link; no JSON
               parsing, no copies compared, no Django, proves nothing.
- verify:      `manage.py verify_evidence` (streams the whole chain and proves every row)
- checkpoint:  `manage.py evidence_checkpoint` (verifies, then signs the head)
- readiness:   `GET .../final-reporting-release-readiness` with a checkpoint near the head
               (the rows after it are verified, the checkpoint proves the rest)
- with --exports: `manage.py export_evidence` as JSON Lines (and a 10 % slice: peak memory must
               not grow with the rows), CSV, the ZIP the API streams, and the offline verifier

It ends with the median verify rate, the reference rate of the same run, their ratio, the peak
memory and the target (100,000 rows/s).

    .venv/bin/python bench/evidence_throughput.py                 # 1,000,000 rows, 3 rounds
    .venv/bin/python bench/evidence_throughput.py --rows 100000 --rounds 1
"""

import argparse
import base64
import hashlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import DEFAULT_PG, ROOT, bench_env, django_setup, migrate, recreate_database, report

TARGET_ROWS_PER_SECOND = 100_000
# Rows appended after the checkpoint before readiness is read: the checkpoint is near the head.
ROWS_AFTER_CHECKPOINT = 1_000
KINDS = [
    "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-"
    + suffix
    for suffix in (
        "retry-health",
        "retry-health-alert-plan",
        "retry-health-alert-delivery",
        "retry-health-alert-ack",
        "retry-health-alert-delivery-retry-plan",
        "retry-health-alert-delivery-retry-worker-run",
        "retry-health-alert-delivery-retry-execution-record",
    )
]
COLUMNS = (
    "sequence, metadata_kind, session_id, created_at, signer, health_id, provider, "
    "execution_status, dry_run, decision_count, blocked_count, approval_required_count, payload, "
    "payload_text, payload_sha256, previous_hash, chain_hash"
)


def build_rows(count: int) -> float:
    """COPY `count` chained rows into the ledger; returns the seconds it took."""
    from django.db import connection

    from closure.evidence.canonical import canonical_json, isoformat
    from closure.evidence.chain import GENESIS_HASH, orjson

    def encode(payload: dict) -> bytes:
        # These payloads hold no floats, so orjson's sorted output is their canonical JSON
        # (and verify_evidence below proves every row).
        if orjson is not None:
            return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        return canonical_json(payload)

    rng = random.Random(42)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    previous = GENESIS_HASH
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # One COPY of the whole ledger outlasts the application's statement timeout.
        cursor.execute("SET statement_timeout = 0")
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY closure_evidence ({COLUMNS}) FROM STDIN") as copy,
    ):
        for sequence in range(1, count + 1):
            kind = KINDS[sequence % len(KINDS)]
            created = start + timedelta(seconds=sequence * 3)
            health_id = f"gordackexecdeliveryhealth-{sequence // 50:016x}"
            provider = f"exec-webhook-{sequence % 20:02d}"
            status = rng.choice(["delivered", "failed", "skipped", ""])
            session_id = f"gordackexechealthalertexec-{sequence:016x}"
            subject = {
                "execution_id": session_id,
                "execution_status": status,
                "executed_at": isoformat(created),
                "executed_by": "bench-operator",
                "health_id": health_id,
                "alert_id": f"gordackexechealthalert-{sequence // 5:016x}",
                "delivery_id": f"gordackexechealthalertdelivery-{sequence // 2:016x}",
                "provider": provider,
                "attempt_number": 1 + sequence % 3,
                "trigger": "retry",
                "http_status": 200 if status == "delivered" else 503,
                "error_class": "" if status == "delivered" else "http_5xx",
                "latency_ms": rng.randint(20, 900),
                "request_fingerprint": hashlib.sha256(b"r%d" % sequence).hexdigest(),
                "response_sha256": hashlib.sha256(b"s%d" % sequence).hexdigest(),
            }
            payload = {
                "schema_version": "cavra.evidence.metadata.v1",
                "product": "CAVRA",
                "metadata_kind": kind,
                "session_id": session_id,
                "created_at": isoformat(created),
                "signer": "bench-operator",
                "decision_count": 1,
                "blocked_count": int(status == "failed"),
                "approval_required_count": 0,
                "health_id": health_id,
                "provider": provider,
                "execution_status": status,
                "dry_run": False,
                "subject": subject,
            }
            text = encode(payload)
            payload_sha = hashlib.sha256(text).hexdigest()
            row_chain = hashlib.sha256((previous + payload_sha).encode()).hexdigest()
            copy.write_row(
                (
                    sequence,
                    kind,
                    session_id,
                    created,
                    "bench-operator",
                    health_id,
                    provider,
                    status,
                    False,
                    1,
                    int(status == "failed"),
                    0,
                    text.decode(),
                    text.decode(),
                    payload_sha,
                    previous,
                    row_chain,
                )
            )
            previous = row_chain
    elapsed = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE closure_evidence")
    return elapsed


# Runs a command in this interpreter and records its peak resident memory (VmHWM) at exit.
# ru_maxrss of a child would include the parent's memory at fork time, so it is not used.
PEAK_WRAPPER = """
import atexit, os, runpy, sys

def record_peak(path=sys.argv[1]):
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:")).split()[1]
    with open(path, "w") as out:
        out.write(peak)

atexit.register(record_peak)
target = sys.argv[2:]
if target[0] == "-m":
    sys.argv = target[1:]
    runpy.run_module(target[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = target
    sys.path.insert(0, os.path.dirname(os.path.abspath(target[0])))  # as `python script.py`
    runpy.run_path(target[0], run_name="__main__")
"""

REFERENCE_QUERY = (
    "SELECT sequence, payload_text, payload_sha256, previous_hash, chain_hash "
    "FROM closure_evidence ORDER BY sequence"
)


def reference_read(url: str) -> None:
    """The floor: stream the rows as verify does and hash each payload's text and chain link,
    without parsing or re-encoding any JSON (so it proves nothing)."""
    import psycopg

    count, digest = 0, hashlib.sha256()
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        for _sequence, payload, payload_sha, previous, _chain in cursor.stream(
            REFERENCE_QUERY, size=2000
        ):
            digest.update(hashlib.sha256(payload.encode()).digest())
            hashlib.sha256((previous + payload_sha).encode()).hexdigest()
            count += 1
    print(json.dumps({"count": count, "digest": digest.hexdigest()}))


def measure(argv: list[str], env: dict) -> tuple[float, float, str]:
    """Run one command in its own process; (seconds, peak RSS in MiB, stdout)."""
    with tempfile.NamedTemporaryFile() as peak_file:
        started = time.perf_counter()
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-c", PEAK_WRAPPER, peak_file.name, *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        peak_kib = int(Path(peak_file.name).read_text() or 0)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-800:]}")
    return elapsed, peak_kib / 1024, done.stdout.decode()


def append_after_checkpoint(count: int) -> None:
    """Append `count` rows through the ledger, as the application does."""
    from django.db import transaction

    from closure.choices import MetadataKind
    from closure.evidence.ledger import evidence_append

    for number in range(count):
        with transaction.atomic():
            evidence_append(
                kind=MetadataKind.HEALTH,
                session_id=f"gordackexecdeliveryhealth-{number:016x}",
                signer="bench-operator",
                subject={"number": number},
            )


def readiness_get_seconds(rounds: int) -> tuple[float, dict]:
    """Median seconds of an auditor's readiness GET through the API, and the last answer."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from closure.selectors import B

    client = Client(HTTP_HOST="localhost")
    client.force_login(get_user_model().objects.get(username="bench-auditor"))
    timings, body = [], {}
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get(f"{B}/final-reporting-release-readiness", secure=True)
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, (response.status_code, response.content[:400])
        body = response.json()
    return statistics.median(timings), body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each timed operation")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server URL, no database")
    parser.add_argument("--database", default="cavra_bench_evidence")
    parser.add_argument("--exports", action="store_true", help="also measure the exports")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--reference", help=argparse.SUPPRESS)  # internal: the reference read
    args = parser.parse_args()
    if args.reference:
        reference_read(args.reference)
        return

    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    url = recreate_database(args.pg, args.database)
    env = bench_env(
        url,
        CAVRA_EVIDENCE_SIGNING_KEY=base64.b64encode(raw).decode(),
        CAVRA_CONNECTOR_KEYS=Fernet.generate_key().decode(),
    )
    migrate(env)
    django_setup(env)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection

    from closure.evidence import chain

    auditor = get_user_model().objects.create_user("bench-auditor")
    auditor.groups.add(Group.objects.get(name="auditors"))

    rows = args.rows
    build_seconds = build_rows(rows)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('closure_evidence'))")
        table_size = cursor.fetchone()[0]
    connection.close()
    print(f"rows: {rows:,} (table {table_size}); rounds: {args.rounds}")
    print(f"orjson fast path: {'on' if chain.orjson else 'off'}")
    print(f"build (one COPY, hashes in Python): {build_seconds:.1f} s")
    print(f"{'operation':<26} {'median s':>9} {'rows/s':>10} {'MiB/s':>7} {'peak RSS':>9}")

    work = Path(tempfile.mkdtemp(prefix="cavra-evidence-bench-"))
    medians: dict[str, float] = {}
    peaks: dict[str, float] = {}

    def run(label: str, argv: list[str], counted: int, *, rounds: int = 1, output=None) -> str:
        timings, memory, out = [], [], ""
        for _ in range(rounds):
            if output is not None:
                shutil.rmtree(output, ignore_errors=True)
                Path(output).unlink(missing_ok=True)
            seconds, peak, out = measure(argv, env)
            timings.append(seconds)
            memory.append(peak)
        seconds = statistics.median(timings)
        medians[label] = counted / seconds
        peaks[label] = max(memory)
        size = ""
        if output is not None:
            data = Path(output)
            if data.is_dir():
                data = next(data.glob("evidence.*"))
            size = f"{data.stat().st_size / 2**20 / seconds:7.1f}"
        print(
            f"{label:<26} {seconds:9.1f} {counted / seconds:>10,.0f} {size:>7} "
            f"{max(memory):7.1f} MiB"
        )
        return out

    reference = json.loads(
        run(
            "reference (psycopg read)",
            [str(Path(__file__).resolve()), "--reference", url],
            rows,
            rounds=args.rounds,
        )
    )
    assert reference["count"] == rows, reference
    verified = json.loads(run("verify_evidence", ["manage.py", "verify_evidence"], rows,
                              rounds=args.rounds))  # fmt: skip
    assert verified["ok"] and verified["count"] == rows, verified
    run("evidence_checkpoint", ["manage.py", "evidence_checkpoint"], rows)

    append_after_checkpoint(ROWS_AFTER_CHECKPOINT)
    readiness_seconds, body = readiness_get_seconds(args.rounds)
    connection.close()
    chain_check = next(c for c in body["checks"] if c["id"] == "evidence_chain_verifies")
    assert chain_check["status"] == "pass", chain_check
    head = rows + ROWS_AFTER_CHECKPOINT
    print(
        f"{'readiness GET (API)':<26} {readiness_seconds:9.3f} "
        f"{'':>10} {'':>7} (in the benchmark process)"
    )
    print(f"  {chain_check['evidence'][-1]}")

    if args.exports:
        measure_exports(run, env, work, head, medians)
    shutil.rmtree(work)

    verify_rate = medians["verify_evidence"]
    floor = medians["reference (psycopg read)"]
    print()
    report("verify_evidence, median", verify_rate, "rows/s", reference=floor)
    report("reference (psycopg read), same run", floor, "rows/s")
    print(f"{'verify / reference':<52} {verify_rate / floor:>12.2f}")
    report("verify_evidence, peak memory", peaks["verify_evidence"], "MiB")
    report("readiness GET, checkpoint near the head", readiness_seconds * 1000, "ms")
    met = "met" if verify_rate >= TARGET_ROWS_PER_SECOND else "NOT met"
    print(f"{'target':<52} {TARGET_ROWS_PER_SECOND:>12,} rows/s   {met}")
    if not args.keep:
        with __import__("psycopg").connect(f"{args.pg}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


def measure_exports(run, env: dict, work: Path, head: int, medians: dict) -> None:
    """The exports and the offline verifier, as before benchmark 6 narrowed this benchmark."""

    def export(name: str, *extra: str) -> list[str]:
        return ["manage.py", "export_evidence", "--user", "bench-auditor", "--output",
                str(work / name), "--through-sequence", str(head), *extra]  # fmt: skip

    tenth = head // 10
    run("export jsonl (10 % slice)", export("tenth", "--sequence-to", str(tenth)), tenth,
        output=work / "tenth")  # fmt: skip
    run("export jsonl", export("jsonl"), head, output=work / "jsonl")
    run("export csv", export("csv", "--format", "csv"), head, output=work / "csv")
    run("export zip (API stream)", export("b.zip"), head, output=work / "b.zip")
    public = json.loads(measure(["manage.py", "evidence_public_key"], env)[2])["public_key"]
    offline = run(
        "verify_export (offline)",
        ["-m", "closure.verify_export", str(work / "jsonl"), "--public-key", public],
        head,
    )
    assert json.loads(offline)["ok"] is True, offline
    print(
        f"export jsonl / reference: "
        f"{medians['export jsonl'] / medians['reference (psycopg read)']:.2f}"
    )


if __name__ == "__main__":
    main()
