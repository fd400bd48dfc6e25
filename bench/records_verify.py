"""Benchmark: records against the ledger (`verify_evidence --records`) on PostgreSQL, rows/s.

Builds its own database (dropped and re-created) holding the records of N deliveries, each
written with its evidence row exactly as the services write them (`evidence_append_many`, the
services' own serializers): one report per 50 deliveries, one alert per 5, one failed initial
attempt per delivery and a delivered retry for every second one, 20 connectors. Then it runs
`evidence_records_verify()` (the check behind `--records`, the API's `?records=true` and the
console's "Also check records") several rounds, and prints the median records per second,
the records checked by kind, and the peak resident memory of the process.

    .venv/bin/python bench/records_verify.py --deliveries 400000     # about 1M records
    .venv/bin/python bench/records_verify.py --deliveries 40000 --rounds 1
"""

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from common import DEFAULT_PG, ROOT, bench_env, django_setup, migrate, recreate_database, report

CONNECTORS = 20
DELIVERIES_PER_ALERT = 5
ALERTS_PER_REPORT = 10
# Deliveries written per transaction: their records in one INSERT per table, their evidence
# in one `evidence_append_many`.
BATCH = 2000
# Run in a process of its own, so its peak memory is the check's alone.
VERIFY = """
import json, os, resource, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cavra.settings")
import django
django.setup()
from closure.evidence.records import evidence_records_verify
started = time.perf_counter()
result = evidence_records_verify()
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({**result.as_dict(), "seconds": seconds, "peak_mib": peak}))
"""


def build(deliveries: int) -> float:
    """Write the records and their evidence; returns the seconds it took."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from closure.choices import (
        DeliveryStatus,
        ExecutionStatus,
        ExecutionTrigger,
        MetadataKind,
    )
    from closure.evidence.ledger import EvidenceEntry, EvidenceFilters, evidence_append_many
    from closure.evidence.record_deliveries import DeliveryChange, delivery_replay
    from closure.models import AlertDelivery, ExecutionRecord, HealthAlert, HealthReport
    from closure.services.alerts import alert_payload
    from closure.services.attempts import execution_serialize
    from closure.services.connectors import connector_save
    from closure.services.health import health_report_serialize

    started = time.perf_counter()
    user = get_user_model().objects.create_user(username="bench-operator")
    connectors = [
        connector_save(
            actor=user,
            name=f"exec-webhook-{n:02d}",
            kind="webhook",
            private_config={"url": f"https://hooks.example.invalid/exec/{n}"},
        )
        for n in range(CONNECTORS)
    ]
    per_report = DELIVERIES_PER_ALERT * ALERTS_PER_REPORT
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for first in range(0, deliveries, BATCH):
        count = min(BATCH, deliveries - first)
        now = start + timedelta(minutes=first // BATCH)
        retried = now + timedelta(seconds=30)
        entries: list[EvidenceEntry] = []
        with transaction.atomic(durable=True):
            reports = HealthReport.objects.bulk_create(
                HealthReport(
                    generated_at=now,
                    generated_by=user,
                    alert_level="critical",
                    alert_count=1,
                    findings=[
                        {
                            "severity": "critical",
                            "category": "failed_executive_report_delivery",
                            "message": "1 failed executive report deliveries have no later "
                            "delivered event for the same run and provider.",
                            "count": 1,
                            "refs": [f"delivery-{first + n}"],
                        }
                    ],
                    counts={"events": 1, "findings": 1, "critical_findings": 1},
                    parameters={"expected_interval_minutes": 60, "stale_metadata_minutes": 180},
                )
                for n in range(0, count, per_report)
            )
            entries += [
                EvidenceEntry(
                    kind=MetadataKind.HEALTH,
                    session_id=r.health_id,
                    signer=user.username,
                    subject=health_report_serialize(r),
                    filters=EvidenceFilters(health_id=r.health_id),
                )
                for r in reports
            ]
            alerts = []
            for n in range(0, count, DELIVERIES_PER_ALERT):
                alert = HealthAlert(
                    health=reports[n // per_report],
                    created_at=now,
                    created_by=user,
                    selected_providers=[],
                    suppressed_providers=[],
                )
                alert.payload = alert_payload(alert.health, alert.alert_id)
                alerts.append(alert)
            rows = [
                AlertDelivery(
                    alert=alerts[n // DELIVERIES_PER_ALERT],
                    connector=connectors[(first + n) % CONNECTORS],
                    provider=connectors[(first + n) % CONNECTORS].name,
                    created_at=now,
                    updated_at=now,
                )
                for n in range(count)
            ]
            sent: dict[str, list[str]] = {a.alert_id: [] for a in alerts}
            for delivery in rows:
                delivery.alert.selected_providers.append(delivery.provider)
                sent[delivery.alert.alert_id].append(delivery.delivery_id)
            HealthAlert.objects.bulk_create(alerts)
            entries += [
                EvidenceEntry(
                    kind=MetadataKind.ALERT_PLAN,
                    session_id=a.alert_id,
                    signer=user.username,
                    subject={
                        "alert_id": a.alert_id,
                        "health_id": a.health.health_id,
                        "alert_level": a.health.alert_level,
                        "forced": False,
                        "selected_providers": a.selected_providers,
                        "suppressed_providers": [],
                        "delivery_ids": sent[a.alert_id],
                        "suppression_window_minutes": 60,
                    },
                )
                for a in alerts
            ]
            records = []
            for n, delivery in enumerate(rows):
                attempts = [(now, ExecutionTrigger.INITIAL, ExecutionStatus.FAILED, 503)]
                if n % 2:
                    attempts.append(
                        (retried, ExecutionTrigger.MANUAL, ExecutionStatus.DELIVERED, 200)
                    )
                changes = []
                for number, (at, trigger, status, http_status) in enumerate(attempts, 1):
                    records.append(
                        ExecutionRecord(
                            delivery=delivery,
                            executed_at=at,
                            executed_by=user,
                            execution_status=status,
                            provider=delivery.provider,
                            attempt_number=number,
                            trigger=trigger,
                            http_status=http_status,
                            error_class="http_5xx" if status == ExecutionStatus.FAILED else "",
                            latency_ms=40,
                            # A real digest: its digits are as random as a live record's.
                            execution_hash=hashlib.sha256(
                                f"{first + n}:{number}".encode()
                            ).hexdigest(),
                        )
                    )
                    changes.append(DeliveryChange(number, at, attempt=(status, None)))
                for name, value in delivery_replay(now, changes).items():
                    setattr(delivery, name, value)
                assert delivery.status in (DeliveryStatus.FAILED, DeliveryStatus.DELIVERED)
            AlertDelivery.objects.bulk_create(rows)
            ExecutionRecord.objects.bulk_create(records)
            evidence_append_many(entries, now=now)
            # An attempt's evidence row is written when the attempt is recorded, at its time.
            for at in (now, retried):
                evidence_append_many(
                    [
                        EvidenceEntry(
                            kind=MetadataKind.ALERT_DELIVERY
                            if r.trigger == ExecutionTrigger.INITIAL
                            else MetadataKind.EXECUTION_RECORD,
                            session_id=r.execution_id,
                            signer=user.username,
                            subject=execution_serialize(r),
                        )
                        for r in records
                        if r.executed_at == at
                    ],
                    now=at,
                )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--database", default="cavra_bench_records")
    args = parser.parse_args()

    env = bench_env(recreate_database(args.pg, args.database))
    migrate(env)
    django_setup(env)
    from closure.models import Evidence

    seconds = build(args.deliveries)
    from django.db import connection

    with connection.cursor() as cursor:
        # What autovacuum does on a live database: statistics for the planner.
        cursor.execute("ANALYZE")
    evidence = Evidence.objects.count()
    print(f"built {args.deliveries:,} deliveries and {evidence:,} evidence rows in {seconds:.0f} s")

    rates = []
    for _ in range(args.rounds):
        finished = subprocess.run(  # noqa: S603
            [sys.executable, "-c", VERIFY], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if finished.returncode:
            raise SystemExit(finished.stderr[-3000:])
        result = json.loads(finished.stdout)
        if result["mismatch_count"]:
            raise SystemExit(f"records do not verify: {result['mismatches'][:3]}")
        records = sum(result["checked"].values())
        rates.append(records / result["seconds"])
        peak = result["peak_mib"]
    print("records checked: " + ", ".join(f"{n:,} {k}" for k, n in result["checked"].items() if n))
    report(
        f"records verification ({records:,} records), median", statistics.median(rates), "rows/s"
    )
    report("peak resident memory of the verifying process", peak, "MiB")


if __name__ == "__main__":
    main()
