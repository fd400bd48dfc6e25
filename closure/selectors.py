"""Every non-trivial read: dashboards and the querysets behind lists. No writes here."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from closure.choices import (
    CLOSING_ACK_STATES,
    AlertLevel,
    CircuitState,
    DecisionAction,
    DecisionStatus,
    DeliveryStatus,
    ExecutionStatus,
    Severity,
    WorkerRunStatus,
)
from closure.evidence.canonical import isoformat
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    ConnectorCircuit,
    ExecutionRecord,
    HealthAlert,
    HealthReport,
    RetryDecision,
    RetryPlan,
    WorkerRun,
)

CLOSURE_SCHEMA_VERSION = (
    "cavra.go-backend-pilot.rollback-drill-final-reporting-closure-dashboard.v1"
)
MAX_REFS = 20
B = "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
R = f"{B}/recovery-executive-report"
A = f"{R}/delivery-retry-health-alerts"


def _refs_with_total(queryset) -> tuple[int, list]:
    """Up to MAX_REFS rows plus the total count, in one query (a window count)."""
    rows = list(queryset.annotate(total=Window(expression=Count("pk")))[:MAX_REFS])
    return (rows[0].total if rows else 0), rows


def _closing_ack():
    return Acknowledgement.objects.filter(
        health=OuterRef("alert__health"),
        connector=OuterRef("connector"),
        state__in=CLOSING_ACK_STATES,
    )


def unacknowledged_deliveries():
    """Delivered deliveries whose report is not yet acknowledged/resolved on that connector.

    An `accepted` delivery counts as delivered when its connector says so
    (`accepted_counts_as_delivered`); `reached_at` is when it got there.
    """
    reached = Q(status=DeliveryStatus.DELIVERED) | Q(
        status=DeliveryStatus.ACCEPTED, connector__accepted_counts_as_delivered=True
    )
    return (
        AlertDelivery.objects.filter(reached)
        .filter(~Exists(_closing_ack()))
        .annotate(reached_at=Coalesce("delivered_at", "last_attempt_at"))
    )


def unconfirmed_deliveries():
    """Accepted deliveries (a Teams 202) on connectors that do not count that as delivered,
    with no acknowledgement on that connector yet: nobody knows whether the alert arrived."""
    return AlertDelivery.objects.filter(
        status=DeliveryStatus.ACCEPTED, connector__accepted_counts_as_delivered=False
    ).filter(~Exists(_closing_ack()))


def _risk(code, severity, count, summary, refs, action) -> dict:
    return {
        "code": code,
        "severity": severity,
        "count": count,
        "summary": summary,
        "refs": refs,
        "action": action,
    }


def closure_dashboard(*, now: datetime | None = None) -> dict:
    """The final reporting closure dashboard, from the current state of every record.

    A fixed number of queries whatever the number of records; reads only.
    """
    now = now or timezone.now()
    risks: list[dict] = []

    # 1. Latest health report, and whether any alert of it reached a connector. The report is
    # picked in a subquery so that the planner sees one outer row and probes the alerts and
    # deliveries of that report by index, instead of hashing every delivery of every report.
    newest = HealthReport.objects.order_by("-generated_at", "-id").values("pk")[:1]
    latest = (
        HealthReport.objects.filter(pk=Subquery(newest))
        .annotate(alert_sent=Exists(AlertDelivery.objects.filter(alert__health=OuterRef("pk"))))
        .only("health_id", "generated_at", "alert_level")
        .first()
    )
    stale_before = now - timedelta(minutes=settings.CAVRA_HEALTH_STALE_MINUTES)
    if latest is None or latest.generated_at < stale_before:
        risks.append(
            _risk(
                "executive_retry_health_missing_or_stale",
                Severity.WARNING,
                1,
                "No health report has been built yet."
                if latest is None
                else f"The latest health report ({isoformat(latest.generated_at)}) is older "
                f"than {settings.CAVRA_HEALTH_STALE_MINUTES} minutes.",
                [latest.health_id] if latest else [],
                f"Build a fresh health report: POST {R}/delivery-retry-health.",
            )
        )
    if latest is not None and latest.alert_level != AlertLevel.HEALTHY and not latest.alert_sent:
        risks.append(
            _risk(
                "executive_retry_health_alert_not_sent",
                Severity.CRITICAL,
                1,
                f"The latest health report is {latest.alert_level} and no alert of it was sent.",
                [latest.health_id],
                f"Send the alert: POST {A}/deliver.",
            )
        )

    # 2. Deliveries by status in one aggregate, including failed first attempts whose
    # process died (pending with an expired lease) and delivered-but-unacknowledged ones.
    lease_expired = Q(leased_until__isnull=True) | Q(leased_until__lte=now)
    stuck = Q(status=DeliveryStatus.PENDING) & lease_expired
    delivery_counts = AlertDelivery.objects.aggregate(
        **{status: Count("pk", filter=Q(status=status)) for status in DeliveryStatus.values},
        failed_open=Count("pk", filter=Q(status=DeliveryStatus.FAILED) | stuck),
        unacknowledged=Count("pk", filter=Q(pk__in=unacknowledged_deliveries().values("pk"))),
        unconfirmed=Count("pk", filter=Q(pk__in=unconfirmed_deliveries().values("pk"))),
    )
    failed_total = delivery_counts.pop("failed_open")
    exhausted_total = delivery_counts[DeliveryStatus.EXHAUSTED]
    ack_total = delivery_counts.pop("unacknowledged")
    unconfirmed_total = delivery_counts.pop("unconfirmed")

    # 3. Up to MAX_REFS public IDs of each open delivery group, oldest first, in one query.
    failed_refs: list[str] = []
    exhausted_refs: list[str] = []
    unconfirmed_refs: list[str] = []
    if failed_total or exhausted_total or unconfirmed_total:
        group = Case(
            When(status=DeliveryStatus.EXHAUSTED, then=Value("exhausted")),
            When(status=DeliveryStatus.ACCEPTED, then=Value("unconfirmed")),
            default=Value("failed"),
        )
        ranked = (
            AlertDelivery.objects.filter(
                Q(status__in=[DeliveryStatus.FAILED, DeliveryStatus.EXHAUSTED])
                | stuck
                | Q(pk__in=unconfirmed_deliveries().values("pk"))
            )
            .annotate(
                group=group,
                rank=Window(RowNumber(), partition_by=[group], order_by=[F("created_at"), F("id")]),
            )
            .filter(rank__lte=MAX_REFS)
            .order_by("created_at", "id")
            .values_list("group", "delivery_id")
        )
        refs_by_group = {
            "failed": failed_refs,
            "exhausted": exhausted_refs,
            "unconfirmed": unconfirmed_refs,
        }
        for group_name, delivery_id in ranked:
            refs_by_group[group_name].append(delivery_id)
    if failed_total:
        risks.append(
            _risk(
                "executive_retry_health_alert_delivery_failed",
                Severity.CRITICAL,
                failed_total,
                f"{_count(failed_total, 'alert delivery', 'alert deliveries')} failed and "
                f"{'is' if failed_total == 1 else 'are'} not yet delivered, acknowledged or "
                f"waived.",
                failed_refs,
                f"Plan retries (POST {A}/retry-plan) and run the worker live "
                f"(POST {A}/retry-worker-run with execute=true), or acknowledge the alert.",
            )
        )
    if exhausted_total:
        risks.append(
            _risk(
                "executive_retry_health_alert_delivery_exhausted",
                Severity.CRITICAL,
                exhausted_total,
                f"{_count(exhausted_total, 'alert delivery', 'alert deliveries')} used up "
                f"the retry attempts.",
                exhausted_refs,
                f"Retry by hand (POST {A}/deliveries/{{delivery_id}}/retry) or waive with a "
                f"reason (POST {A}/deliveries/{{delivery_id}}/waive).",
            )
        )
    if unconfirmed_total:
        risks.append(
            _risk(
                "executive_retry_health_alert_delivery_unconfirmed",
                Severity.WARNING,
                unconfirmed_total,
                f"{_count(unconfirmed_total, 'alert delivery was', 'alert deliveries were')} "
                f"accepted by the connector (202) but not confirmed as delivered.",
                unconfirmed_refs,
                f"Confirm receipt and record it (POST {A}/{{health_id}}/acknowledgements), "
                f"retry by hand or waive; or, if the connector's workflow is trusted, set "
                f"'accepted counts as delivered' on the connector in the admin.",
            )
        )

    # 4. Retry decisions due for longer than the grace period and not executed.
    grace = timedelta(minutes=settings.CAVRA_RETRY_OVERDUE_GRACE_MINUTES)
    overdue_total, overdue_rows = _refs_with_total(
        RetryDecision.objects.filter(
            status=DecisionStatus.PENDING,
            action=DecisionAction.RETRY,
            next_retry_at__lt=now - grace,
        )
        .select_related("delivery")
        .order_by("next_retry_at", "id")
    )
    if overdue_total:
        risks.append(
            _risk(
                "executive_retry_health_alert_retry_overdue",
                Severity.WARNING,
                overdue_total,
                f"{_count(overdue_total, 'retry decision has', 'retry decisions have')} "
                f"been due for more than "
                f"{settings.CAVRA_RETRY_OVERDUE_GRACE_MINUTES} minutes without being executed.",
                [row.delivery.delivery_id for row in overdue_rows],
                f"Run the retry worker live: POST {A}/retry-worker-run with execute=true.",
            )
        )

    # 5. The latest live worker run failed or was abandoned.
    latest_live = (
        WorkerRun.objects.filter(dry_run=False)
        .exclude(status=WorkerRunStatus.RUNNING)
        .order_by("-started_at", "-id")
        .only("run_id", "status")
        .first()
    )
    if latest_live and latest_live.status in {WorkerRunStatus.FAILED, WorkerRunStatus.ABANDONED}:
        risks.append(
            _risk(
                "executive_retry_health_alert_retry_worker_failed",
                Severity.WARNING,
                1,
                f"The latest live retry worker run is {latest_live.status}.",
                [latest_live.run_id],
                f"Inspect its execution records, then run the worker live again: "
                f"POST {A}/retry-worker-run with execute=true.",
            )
        )

    # 6. Delivered alerts not yet acknowledged (or resolved) on their connector.
    if ack_total:
        ack_rows = list(
            unacknowledged_deliveries()
            .order_by("reached_at", "id")
            .values("delivery_id", "reached_at")[:MAX_REFS]
        )
        ack_refs = [row["delivery_id"] for row in ack_rows]
        sla = settings.CAVRA_ACKNOWLEDGEMENT_SLA_MINUTES
        oldest = ack_rows[0]["reached_at"]
        breached = oldest < now - timedelta(minutes=sla)
        risks.append(
            _risk(
                "executive_retry_health_alert_acknowledgement_outstanding",
                Severity.CRITICAL if breached else Severity.WARNING,
                ack_total,
                f"{_count(ack_total, 'delivered alert awaits', 'delivered alerts await')} "
                f"acknowledgement"
                + (f"; the oldest for more than {sla} minutes." if breached else "."),
                ack_refs,
                f"Record the recipient's acknowledgement: POST {A}/{{health_id}}/acknowledgements.",
            )
        )

    # 7. Connector circuits that are open or probing: no retries reach them for now.
    circuit_total, circuit_rows = _refs_with_total(
        ConnectorCircuit.objects.exclude(state=CircuitState.CLOSED)
        .select_related("connector")
        .order_by("connector__name")
    )
    if circuit_total:
        names = [row.connector.name for row in circuit_rows]
        risks.append(
            _risk(
                "executive_retry_health_alert_connector_circuit_open",
                Severity.WARNING,
                circuit_total,
                f"{_count(circuit_total, 'connector circuit is', 'connector circuits are')} "
                f"open after repeated failures: {', '.join(names)}. Retries to "
                f"{'it' if circuit_total == 1 else 'them'} wait for the cool-down, then one "
                f"probe is sent.",
                names,
                "Check the connector's destination and configuration in the admin; the circuit "
                "closes when its probe delivers.",
            )
        )

    summary = closure_summary(delivery_counts)
    if not risks:
        closure_state, level = "closed", AlertLevel.HEALTHY
    elif all(r["severity"] == Severity.WARNING for r in risks):
        closure_state, level = "open", AlertLevel.WARNING
    else:
        closure_state, level = "open", AlertLevel.CRITICAL
    return {
        "schema_version": CLOSURE_SCHEMA_VERSION,
        "generated_at": isoformat(now),
        "closure_state": closure_state,
        "alert_level": level,
        "open_item_count": len(risks),
        "open_items": [r["code"] for r in risks],
        "risks": risks,
        "summary": summary,
        "recommended_actions": [r["action"] for r in risks],
        "controls": [
            "Computed from the current state of every record, not a recent window.",
            "Reading this dashboard changes nothing.",
            "Only public identifiers, counts, states and connector names are shown; connector "
            "secrets never appear.",
            "Every change it reflects is recorded in the hash-chained evidence ledger.",
        ],
    }


def _counts_by(queryset, field: str, choices) -> dict:
    counts = dict.fromkeys(choices.values, 0)
    for row in queryset.order_by().values(field).annotate(n=Count("pk")):
        counts[row[field]] = row["n"]
    return counts


def _grouped(queryset, topic: str, field: str | None):
    """Counts of `queryset` by `field` (or in total), tagged with `topic`, for one UNION."""
    group = F(field) if field else Value("", output_field=CharField())
    return (
        queryset.order_by()
        .annotate(topic=Value(topic, output_field=CharField()), group=group)
        .values("topic", "group")
        # COUNT(*), not COUNT(id): PostgreSQL can then answer from an index on `field` alone
        # (an index-only scan, half the time of reading a million rows).
        .annotate(n=Count("*"))
    )


def closure_summary(delivery_counts: dict) -> dict:
    """Counts of plans, live runs and executions by status, and acknowledgements.

    One query: the four grouped counts are sent as a single UNION ALL.
    """
    counts = (
        _grouped(RetryPlan.objects.all(), "retry_plans", None)
        .union(
            _grouped(WorkerRun.objects.filter(dry_run=False), "worker_runs", "status"),
            _grouped(ExecutionRecord.objects.all(), "executions", "execution_status"),
            _grouped(Acknowledgement.objects.all(), "acknowledgements", None),
            all=True,
        )
        .order_by()
    )
    summary: dict = {
        "retry_plans": 0,
        "worker_runs": dict.fromkeys(WorkerRunStatus.values, 0),
        "executions": dict.fromkeys(ExecutionStatus.values, 0),
        "deliveries": delivery_counts,
        "acknowledgements": 0,
    }
    for row in counts:
        if row["group"]:
            summary[row["topic"]][row["group"]] = row["n"]
        else:
            summary[row["topic"]] = row["n"]
    return summary


def _count(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def alert_dashboard() -> dict:
    """Counts for the alert dashboard: alerts, deliveries by status, acknowledgements."""
    return {
        "alerts": HealthAlert.objects.count(),
        "deliveries": _counts_by(AlertDelivery.objects, "status", DeliveryStatus),
        "acknowledgements": Acknowledgement.objects.count(),
        "outstanding_acknowledgements": unacknowledged_deliveries().count(),
    }


__all__ = ["alert_dashboard", "closure_dashboard"]
