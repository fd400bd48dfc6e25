"""Reads behind the console pages: the flow's state and the charts' series. No writes here."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Q, Value
from django.db.models.functions import Least, TruncDay, TruncHour
from django.utils import timezone

from closure.choices import DecisionAction, DeliveryStatus, ExecutionStatus
from closure.models import (
    AlertDelivery,
    Connector,
    HealthReport,
    RetryDecision,
    RetryPlan,
    WorkerRun,
)

# Choices offered in the console's forms: the newest reports and plans.
RECENT_CHOICES = 20
# Deliveries with this many attempts or more share the last bar of the attempts chart.
ATTEMPTS_CAP = 6


@dataclass(frozen=True)
class FlowState:
    """What the five steps of the flow page show (closure comes from `closure_dashboard`)."""

    latest_report: HealthReport | None
    deliveries: dict[str, int]  # of the latest report's alerts, by status
    alert_count: int
    latest_plan: RetryPlan | None
    open_decisions: dict[str, int]  # retry_due, retry_later, wait
    latest_run: WorkerRun | None


def flow_state(*, now: datetime | None = None) -> FlowState:
    """Five queries, whatever the number of records."""
    now = now or timezone.now()
    latest = (
        HealthReport.objects.annotate(alert_total=Count("alerts", distinct=True))
        .newest_first()
        .first()
    )
    deliveries = dict.fromkeys(DeliveryStatus.values, 0)
    if latest is not None:
        counts = AlertDelivery.objects.filter(alert__health=latest).aggregate(
            **{status: Count("pk", filter=Q(status=status)) for status in DeliveryStatus.values}
        )
        deliveries.update(counts)
    open_decisions = RetryDecision.objects.pending().aggregate(
        retry_due=Count("pk", filter=Q(action=DecisionAction.RETRY, next_retry_at__lte=now)),
        retry_later=Count("pk", filter=Q(action=DecisionAction.RETRY, next_retry_at__gt=now)),
        wait=Count("pk", filter=Q(action=DecisionAction.WAIT)),
    )
    return FlowState(
        latest_report=latest,
        deliveries=deliveries,
        alert_count=latest.alert_total if latest is not None else 0,
        latest_plan=RetryPlan.objects.newest_first().first(),
        open_decisions=open_decisions,
        latest_run=WorkerRun.objects.select_related("retry_plan").newest_first().first(),
    )


def recent_reports():
    return HealthReport.objects.newest_first()[:RECENT_CHOICES]


def recent_plans():
    return RetryPlan.objects.newest_first()[:RECENT_CHOICES]


def connectors():
    return Connector.objects.order_by("name")


# -- charts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeBucket:
    start: datetime
    delivered: int
    failed: int
    other: int  # accepted, skipped, superseded

    @property
    def total(self) -> int:
        return self.delivered + self.failed + self.other


SPANS = {
    # name: (number of buckets, bucket length, truncation)
    "24h": (24, timedelta(hours=1), TruncHour),
    "14d": (14, timedelta(days=1), TruncDay),
}


def attempts_over_time(executions, *, span: str = "24h", now: datetime | None = None):
    """Delivery attempts per hour (last 24 hours) or per day (last 14 days), by outcome.

    One grouped query over `executions` (already filtered by the page's FilterSet).
    """
    count, step, trunc = SPANS[span]
    now = now or timezone.now()
    last_start = _floor(now, step)
    first_start = last_start - step * (count - 1)
    rows = (
        executions.filter(executed_at__gte=first_start)
        .order_by()
        .annotate(bucket=trunc("executed_at", tzinfo=UTC))
        .values("bucket")
        .annotate(
            delivered=Count("pk", filter=Q(execution_status=ExecutionStatus.DELIVERED)),
            failed=Count("pk", filter=Q(execution_status=ExecutionStatus.FAILED)),
            total=Count("pk"),
        )
    )
    by_start = {row["bucket"]: row for row in rows}
    buckets = []
    for index in range(count):
        start = first_start + step * index
        row = by_start.get(start, {"delivered": 0, "failed": 0, "total": 0})
        other = row["total"] - row["delivered"] - row["failed"]
        buckets.append(TimeBucket(start, row["delivered"], row["failed"], other))
    return buckets


def _floor(moment: datetime, step: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    if step >= timedelta(days=1):
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def attempts_per_delivery(deliveries) -> list[tuple[str, int]]:
    """How many deliveries took 0, 1, 2 … attempts (the last bar is "6 or more").

    One grouped query over `deliveries` (already filtered by the page's FilterSet).
    """
    rows = (
        deliveries.order_by()
        .annotate(attempts=Least("attempt_count", Value(ATTEMPTS_CAP)))
        .values("attempts")
        .annotate(n=Count("pk"))
    )
    counts = {row["attempts"]: row["n"] for row in rows}
    return [
        (f"{n}+" if n == ATTEMPTS_CAP else str(n), counts.get(n, 0))
        for n in range(0, ATTEMPTS_CAP + 1)
    ]
