"""The final reporting closure dashboard: one function per risk, one query each."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import (
    BooleanField,
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

from closure import models
from closure.choices import (
    CLOSING_ACK_STATES,
    AlertLevel,
    CircuitState,
    DecisionAction,
    DeliveryStatus,
    ExecutionStatus,
    ExecutionTrigger,
    Severity,
    WorkerRunStatus,
)
from closure.evidence.canonical import isoformat
from closure.models.alerts import stuck_condition

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
    return models.Acknowledgement.objects.filter(
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
        models.AlertDelivery.objects.filter(reached)
        .filter(~Exists(_closing_ack()))
        .annotate(reached_at=Coalesce("delivered_at", "last_attempt_at"))
    )


def unconfirmed_deliveries():
    """Accepted deliveries (a Teams 202) on connectors that do not count that as delivered,
    with no acknowledgement on that connector yet: nobody knows whether the alert arrived."""
    return models.AlertDelivery.objects.filter(
        status=DeliveryStatus.ACCEPTED, connector__accepted_counts_as_delivered=False
    ).filter(~Exists(_closing_ack()))


def _failed_retry_execution():
    """A failed retry execution (by the worker or by hand) of the outer delivery."""
    return models.ExecutionRecord.objects.filter(
        delivery=OuterRef("pk"),
        execution_status=ExecutionStatus.FAILED,
        trigger__in=[ExecutionTrigger.RETRY, ExecutionTrigger.MANUAL],
    )


def retry_execution_failed_condition() -> Q:
    """Deliveries a retry execution failed for, not since delivered, acknowledged or waived.

    Current state: a later attempt that delivers (or is accepted) moves the delivery out of
    `failed`/`exhausted`, a waiver or an acknowledgement suppresses it, and an acknowledgement
    on that connector closes it even where the delivery keeps its status. A failed initial send
    alone is the `delivery_failed` risk, not this one.
    """
    return (
        Q(status__in=[DeliveryStatus.FAILED, DeliveryStatus.EXHAUSTED])
        & Exists(_failed_retry_execution())
        & ~Exists(_closing_ack())
    )


def _risk(code, severity, count, summary, refs, action) -> dict:
    return {
        "code": code,
        "severity": severity,
        "count": count,
        "summary": summary,
        "refs": refs,
        "action": action,
    }


def _count(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def _health_report_risks(now: datetime) -> list[dict]:
    """Query 1: the latest health report, and whether any alert of it reached a connector.

    The report is picked in a subquery so that the planner sees one outer row and probes the
    alerts and deliveries of that report by index, instead of hashing every delivery of every
    report.
    """
    newest = models.HealthReport.objects.newest_first().values("pk")[:1]
    latest = (
        models.HealthReport.objects.filter(pk=Subquery(newest))
        .annotate(
            alert_sent=Exists(models.AlertDelivery.objects.filter(alert__health=OuterRef("pk")))
        )
        .only("health_id", "generated_at", "alert_level")
        .first()
    )
    risks = []
    stale_minutes = settings.CAVRA_HEALTH_STALE_MINUTES
    if latest is None or latest.generated_at < now - timedelta(minutes=stale_minutes):
        risks.append(
            _risk(
                "executive_retry_health_missing_or_stale",
                Severity.WARNING,
                1,
                "No health report has been built yet."
                if latest is None
                else f"The latest health report ({isoformat(latest.generated_at)}) is older "
                f"than {stale_minutes} minutes.",
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
    return risks


def _delivery_counts(now: datetime) -> tuple[dict, dict]:
    """Query 2: deliveries by status in one aggregate, and the totals of the open groups.

    Failed deliveries include first attempts whose process died (pending with an expired
    lease); delivered-but-unacknowledged and accepted-but-unconfirmed ones are counted too.
    """
    counts = models.AlertDelivery.objects.aggregate(
        **{status: Count("pk", filter=Q(status=status)) for status in DeliveryStatus.values},
        failed_open=Count("pk", filter=Q(status=DeliveryStatus.FAILED) | stuck_condition(now)),
        unacknowledged=Count("pk", filter=Q(pk__in=unacknowledged_deliveries().values("pk"))),
        unconfirmed=Count("pk", filter=Q(pk__in=unconfirmed_deliveries().values("pk"))),
        retry_execution_failed=Count("pk", filter=retry_execution_failed_condition()),
    )
    totals = {
        "failed": counts.pop("failed_open"),
        "exhausted": counts[DeliveryStatus.EXHAUSTED],
        "unacknowledged": counts.pop("unacknowledged"),
        "unconfirmed": counts.pop("unconfirmed"),
        "retry_execution_failed": counts.pop("retry_execution_failed"),
    }
    return counts, totals


def _open_delivery_refs(totals: dict, now: datetime) -> dict[str, list[str]]:
    """Query 3 (only when a group is open): up to MAX_REFS public IDs of each open delivery
    group, oldest first, in one query.

    A delivery whose retry execution failed is also `failed` or `exhausted`, so it is ranked a
    second time, among those deliveries only, in the same query.
    """
    refs: dict[str, list[str]] = {
        "failed": [],
        "exhausted": [],
        "unconfirmed": [],
        "retry_execution_failed": [],
    }
    if not any(totals[name] for name in refs):
        return refs
    group = Case(
        When(status=DeliveryStatus.EXHAUSTED, then=Value("exhausted")),
        When(status=DeliveryStatus.ACCEPTED, then=Value("unconfirmed")),
        default=Value("failed"),
    )
    ranked = (
        models.AlertDelivery.objects.filter(
            Q(status__in=[DeliveryStatus.FAILED, DeliveryStatus.EXHAUSTED])
            | stuck_condition(now)
            | Q(pk__in=unconfirmed_deliveries().values("pk"))
        )
        .annotate(
            group=group,
            rank=Window(RowNumber(), partition_by=[group], order_by=[F("created_at"), F("id")]),
            retry_execution_failed=Case(
                When(retry_execution_failed_condition(), then=Value(True)),
                default=Value(False),
                output_field=BooleanField(),
            ),
            retry_execution_failed_rank=Window(
                RowNumber(),
                partition_by=[F("retry_execution_failed")],
                order_by=[F("created_at"), F("id")],
            ),
        )
        .filter(
            Q(rank__lte=MAX_REFS)
            | Q(retry_execution_failed=True, retry_execution_failed_rank__lte=MAX_REFS)
        )
        .order_by("created_at", "id")
        .values_list("group", "delivery_id", "rank", "retry_execution_failed")
    )
    for group_name, delivery_id, rank, retry_execution_failed in ranked:
        if rank <= MAX_REFS:
            refs[group_name].append(delivery_id)
        if retry_execution_failed and len(refs["retry_execution_failed"]) < MAX_REFS:
            refs["retry_execution_failed"].append(delivery_id)
    return refs


def _open_delivery_risks(totals: dict, refs: dict[str, list[str]]) -> list[dict]:
    """Failed, exhausted and unconfirmed deliveries (no query: counts and refs are read)."""
    failed, exhausted, unconfirmed = totals["failed"], totals["exhausted"], totals["unconfirmed"]
    risks = []
    if failed:
        risks.append(
            _risk(
                "executive_retry_health_alert_delivery_failed",
                Severity.CRITICAL,
                failed,
                f"{_count(failed, 'alert delivery', 'alert deliveries')} failed and "
                f"{'is' if failed == 1 else 'are'} not yet delivered, acknowledged or waived.",
                refs["failed"],
                f"Plan retries (POST {A}/retry-plan) and run the worker live "
                f"(POST {A}/retry-worker-run with execute=true), or acknowledge the alert.",
            )
        )
    if exhausted:
        risks.append(
            _risk(
                "executive_retry_health_alert_delivery_exhausted",
                Severity.CRITICAL,
                exhausted,
                f"{_count(exhausted, 'alert delivery', 'alert deliveries')} used up "
                f"the retry attempts.",
                refs["exhausted"],
                f"Retry by hand (POST {A}/deliveries/{{delivery_id}}/retry) or waive with a "
                f"reason (POST {A}/deliveries/{{delivery_id}}/waive).",
            )
        )
    if unconfirmed:
        risks.append(
            _risk(
                "executive_retry_health_alert_delivery_unconfirmed",
                Severity.WARNING,
                unconfirmed,
                f"{_count(unconfirmed, 'alert delivery was', 'alert deliveries were')} "
                f"accepted by the connector (202) but not confirmed as delivered.",
                refs["unconfirmed"],
                f"Confirm receipt and record it (POST {A}/{{health_id}}/acknowledgements), "
                f"retry by hand or waive; or, if the connector's workflow is trusted, set "
                f"'accepted counts as delivered' on the connector in the admin.",
            )
        )
    return risks


def _retry_execution_failed_risks(totals: dict, refs: dict[str, list[str]]) -> list[dict]:
    """Deliveries a retry execution failed for and that are still open (no query: the count
    is part of query 2, the refs of query 3).

    Critical, like the failed and exhausted delivery risks: the alert has still not reached
    its recipient, and now a retry did not get it there either.
    """
    total = totals["retry_execution_failed"]
    if not total:
        return []
    return [
        _risk(
            "executive_retry_health_alert_retry_execution_failed",
            Severity.CRITICAL,
            total,
            f"{_count(total, 'alert delivery has', 'alert deliveries have')} a failed retry "
            f"execution and {'is' if total == 1 else 'are'} not since delivered, acknowledged "
            f"or waived.",
            refs["retry_execution_failed"],
            "Read why it failed (GET /api/v1/execution-records/?delivery_id={delivery_id}"
            "&execution_status=failed), fix the cause, then retry until an attempt delivers "
            f"(POST {A}/deliveries/{{delivery_id}}/retry, or the worker live); or record the "
            f"recipient's acknowledgement (POST {A}/{{health_id}}/acknowledgements); or waive "
            f"with a reason (POST {A}/deliveries/{{delivery_id}}/waive).",
        )
    ]


def _overdue_retry_risks(now: datetime) -> list[dict]:
    """Query 4: retry decisions due for longer than the grace period and not executed."""
    grace_minutes = settings.CAVRA_RETRY_OVERDUE_GRACE_MINUTES
    total, rows = _refs_with_total(
        models.RetryDecision.objects.filter(
            action=DecisionAction.RETRY,
            next_retry_at__lt=now - timedelta(minutes=grace_minutes),
        )
        .pending()
        .select_related("delivery")
        .order_by("next_retry_at", "id")
    )
    if not total:
        return []
    return [
        _risk(
            "executive_retry_health_alert_retry_overdue",
            Severity.WARNING,
            total,
            f"{_count(total, 'retry decision has', 'retry decisions have')} been due for more "
            f"than {grace_minutes} minutes without being executed.",
            [row.delivery.delivery_id for row in rows],
            f"Run the retry worker live: POST {A}/retry-worker-run with execute=true.",
        )
    ]


def _worker_run_risks() -> list[dict]:
    """Query 5: the latest finished live worker run failed or was abandoned."""
    latest_live = (
        models.WorkerRun.objects.filter(dry_run=False)
        .finished()
        .newest_first()
        .only("run_id", "status")
        .first()
    )
    if not latest_live or latest_live.status not in {
        WorkerRunStatus.FAILED,
        WorkerRunStatus.ABANDONED,
    }:
        return []
    return [
        _risk(
            "executive_retry_health_alert_retry_worker_failed",
            Severity.WARNING,
            1,
            f"The latest live retry worker run is {latest_live.status}.",
            [latest_live.run_id],
            f"Inspect its execution records, then run the worker live again: "
            f"POST {A}/retry-worker-run with execute=true.",
        )
    ]


def _acknowledgement_risks(total: int, now: datetime) -> list[dict]:
    """Query 6 (only when some are outstanding): delivered alerts not yet acknowledged (or
    resolved) on their connector, the oldest first."""
    if not total:
        return []
    rows = list(
        unacknowledged_deliveries()
        .order_by("reached_at", "id")
        .values("delivery_id", "reached_at")[:MAX_REFS]
    )
    sla = settings.CAVRA_ACKNOWLEDGEMENT_SLA_MINUTES
    breached = rows[0]["reached_at"] < now - timedelta(minutes=sla)
    return [
        _risk(
            "executive_retry_health_alert_acknowledgement_outstanding",
            Severity.CRITICAL if breached else Severity.WARNING,
            total,
            f"{_count(total, 'delivered alert awaits', 'delivered alerts await')} acknowledgement"
            + (f"; the oldest for more than {sla} minutes." if breached else "."),
            [row["delivery_id"] for row in rows],
            f"Record the recipient's acknowledgement: POST {A}/{{health_id}}/acknowledgements.",
        )
    ]


def _circuit_risks() -> list[dict]:
    """Query 7: connector circuits that are open or probing: no retries reach them for now."""
    total, rows = _refs_with_total(
        models.ConnectorCircuit.objects.exclude(state=CircuitState.CLOSED)
        .select_related("connector")
        .order_by("connector__name")
    )
    if not total:
        return []
    names = [row.connector.name for row in rows]
    return [
        _risk(
            "executive_retry_health_alert_connector_circuit_open",
            Severity.WARNING,
            total,
            f"{_count(total, 'connector circuit is', 'connector circuits are')} open after "
            f"repeated failures: {', '.join(names)}. Retries to "
            f"{'it' if total == 1 else 'them'} wait for the cool-down, then one probe is sent.",
            names,
            "Check the connector's destination and configuration in the admin; the circuit "
            "closes when its probe delivers.",
        )
    ]


def closure_dashboard(*, now: datetime | None = None) -> dict:
    """The final reporting closure dashboard, from the current state of every record.

    A fixed number of queries whatever the number of records (the seven risk reads, then the
    summary; the failed retry executions are read with the delivery counts and refs); reads
    only.
    """
    now = now or timezone.now()
    risks = _health_report_risks(now)
    delivery_counts, totals = _delivery_counts(now)
    delivery_refs = _open_delivery_refs(totals, now)
    risks += _open_delivery_risks(totals, delivery_refs)
    risks += _retry_execution_failed_risks(totals, delivery_refs)
    risks += _overdue_retry_risks(now)
    risks += _worker_run_risks()
    risks += _acknowledgement_risks(totals["unacknowledged"], now)
    risks += _circuit_risks()
    summary = closure_summary(delivery_counts)
    if not risks:
        closure_state, level = "closed", AlertLevel.HEALTHY
    elif all(r["severity"] == Severity.WARNING for r in risks):
        closure_state, level = "open", AlertLevel.WARNING
    else:
        closure_state, level = "open", AlertLevel.CRITICAL
    return {
        "schema_version": CLOSURE_SCHEMA_VERSION,
        "product": "CAVRA",
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
        _grouped(models.RetryPlan.objects.all(), "retry_plans", None)
        .union(
            _grouped(models.WorkerRun.objects.filter(dry_run=False), "worker_runs", "status"),
            _grouped(models.ExecutionRecord.objects.all(), "executions", "execution_status"),
            _grouped(models.Acknowledgement.objects.all(), "acknowledgements", None),
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
