"""Executive delivery retry health: judged from the upstream pipeline's evidence."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Exists, OuterRef
from django.utils import timezone

from closure.choices import (
    ALERT_LEVEL_RANK,
    AlertLevel,
    EventKind,
    EventStatus,
    MetadataKind,
    Severity,
)
from closure.evidence.canonical import isoformat
from closure.evidence.ledger import EvidenceFilters, evidence_append
from closure.models import DeliveryEvent, HealthReport
from closure.services.common import signer_of

MAX_REFS = 20


@dataclass(frozen=True)
class HealthParameters:
    expected_interval_minutes: int = 60
    stale_metadata_minutes: int = 180

    def as_dict(self) -> dict:
        return {
            "expected_interval_minutes": self.expected_interval_minutes,
            "stale_metadata_minutes": self.stale_metadata_minutes,
        }


def _finding(severity: str, category: str, message: str, count: int, refs: list[str]) -> dict:
    return {
        "severity": severity,
        "category": category,
        "message": message,
        "count": count,
        "refs": refs[:MAX_REFS],
    }


def _unrecovered_failures(kind: str, success_statuses: list[str]):
    """Failed events of `kind` with no later success for the same run_id and provider."""
    later_success = DeliveryEvent.objects.filter(
        kind=kind,
        status__in=success_statuses,
        run_id=OuterRef("run_id"),
        provider=OuterRef("provider"),
        occurred_at__gt=OuterRef("occurred_at"),
    )
    return (
        DeliveryEvent.objects.filter(kind=kind, status=EventStatus.FAILED)
        .filter(~Exists(later_success))
        .newest_first()
    )


# The upstream event kinds whose failures must be followed by a success: (kind, finding
# category, noun in its message, the statuses that count as a later success).
RECOVERABLE_EVENT_KINDS = (
    (
        EventKind.REPORT_DELIVERY,
        "failed_executive_report_delivery",
        "executive report deliveries",
        [EventStatus.DELIVERED],
    ),
    (
        EventKind.RETRY_EXECUTION,
        "failed_executive_delivery_retry_execution",
        "retry executions",
        [EventStatus.DELIVERED, EventStatus.SUCCEEDED],
    ),
)


def _missed_worker_findings(
    newest_run: dict | None, parameters: HealthParameters, now: datetime
) -> list[dict]:
    missed_after = now - timedelta(minutes=2 * parameters.expected_interval_minutes)
    if newest_run is None:
        message, refs = "No upstream retry worker run has been reported.", []
    elif newest_run["occurred_at"] < missed_after:
        message = (
            f"The newest upstream retry worker run ({isoformat(newest_run['occurred_at'])}) "
            f"is older than twice the expected interval of "
            f"{parameters.expected_interval_minutes} minutes."
        )
        refs = [newest_run["event_id"]]
    else:
        return []
    return [_finding(Severity.CRITICAL, "missed_executive_delivery_retry_worker", message, 1, refs)]


def _stale_plan_findings(parameters: HealthParameters, now: datetime) -> list[dict]:
    stale_after = now - timedelta(minutes=parameters.stale_metadata_minutes)
    if DeliveryEvent.objects.filter(
        kind=EventKind.RETRY_PLAN, occurred_at__gte=stale_after
    ).exists():
        return []
    return [
        _finding(
            Severity.WARNING,
            "stale_executive_delivery_retry_plan",
            f"No upstream retry plan in the last {parameters.stale_metadata_minutes} minutes.",
            1,
            [],
        )
    ]


def _unrecovered_failure_findings() -> list[dict]:
    findings = []
    for kind, category, noun, successes in RECOVERABLE_EVENT_KINDS:
        failures = _unrecovered_failures(kind, successes)
        refs = list(failures.values_list("event_id", flat=True)[:MAX_REFS])
        if refs:
            count = len(refs) if len(refs) < MAX_REFS else failures.count()
            findings.append(
                _finding(
                    Severity.CRITICAL,
                    category,
                    f"{count} failed {noun} have no later delivered event for the same run "
                    f"and provider.",
                    count,
                    refs,
                )
            )
    return findings


def _disabled_schedule_findings(newest_run: dict | None) -> list[dict]:
    if newest_run is None or newest_run["schedule_enabled"] is not False:
        return []
    return [
        _finding(
            Severity.WARNING,
            "disabled_executive_delivery_retry_schedule",
            "The newest upstream retry worker run reports its schedule disabled.",
            1,
            [newest_run["event_id"]],
        )
    ]


def _alert_level(findings: list[dict]) -> AlertLevel:
    """The most severe finding's level, healthy when there is none."""
    level = AlertLevel.HEALTHY
    for finding in findings:
        if ALERT_LEVEL_RANK[finding["severity"]] > ALERT_LEVEL_RANK[level]:
            level = AlertLevel(finding["severity"])
    return level


def _counts(findings: list[dict]) -> dict:
    """Stored events by kind and status, and the findings by severity."""
    by_kind_status = (
        DeliveryEvent.objects.order_by().values("kind", "status").annotate(n=Count("id"))
    )
    counts: dict = {"events": 0, "by_kind": {}}
    for row in by_kind_status:
        counts["events"] += row["n"]
        counts["by_kind"].setdefault(row["kind"], {})[row["status"]] = row["n"]
    counts["findings"] = len(findings)
    counts["critical_findings"] = sum(f["severity"] == Severity.CRITICAL for f in findings)
    counts["warning_findings"] = sum(f["severity"] == Severity.WARNING for f in findings)
    return counts


def health_compute(*, parameters: HealthParameters, now: datetime | None = None) -> dict:
    """Judge health from the stored events. Reads only; the result is not stored."""
    now = now or timezone.now()
    newest_run = (
        DeliveryEvent.objects.filter(kind=EventKind.RETRY_WORKER_RUN)
        .newest_first()
        .values("event_id", "occurred_at", "schedule_enabled")
        .first()
    )
    findings = [
        *_missed_worker_findings(newest_run, parameters, now),
        *_stale_plan_findings(parameters, now),
        *_unrecovered_failure_findings(),
        *_disabled_schedule_findings(newest_run),
    ]
    return {
        "generated_at": now,
        "alert_level": _alert_level(findings),
        "alert_count": len(findings),
        "findings": findings,
        "counts": _counts(findings),
        "parameters": parameters.as_dict(),
    }


def health_report_serialize(report: HealthReport) -> dict:
    return {
        "health_id": report.health_id,
        "generated_at": isoformat(report.generated_at),
        "generated_by": report.generated_by.get_username(),
        "alert_level": report.alert_level,
        "alert_count": report.alert_count,
        "findings": report.findings,
        "counts": report.counts,
        "parameters": report.parameters,
    }


def health_report_build(*, actor, parameters: HealthParameters) -> HealthReport:
    """Compute health now and store it with its evidence, in one transaction."""
    with transaction.atomic(durable=True):
        computed = health_compute(parameters=parameters)
        report = HealthReport.objects.create(generated_by=actor, **computed)
        evidence_append(
            kind=MetadataKind.HEALTH,
            session_id=report.health_id,
            signer=signer_of(actor),
            subject=health_report_serialize(report),
            filters=EvidenceFilters(health_id=report.health_id),
            decision_count=report.alert_count,
            blocked_count=report.counts["critical_findings"],
            now=report.generated_at,
        )
    return report
