"""Retry planning: per failed delivery decide retry, wait or suppress (success-aware)."""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from closure.choices import (
    CLOSING_ACK_STATES,
    AlertLevel,
    DecisionAction,
    DecisionReason,
    DecisionStatus,
    DeliveryStatus,
    ExecutionStatus,
    MetadataKind,
    SuppressionReason,
)
from closure.evidence import EvidenceFilters, evidence_append, isoformat
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    Connector,
    ExecutionRecord,
    HealthReport,
    RetryDecision,
    RetryPlan,
)
from closure.services.alerts import lock_pending_decisions
from closure.services.common import signer_of
from closure.services.errors import InvalidInput, NotFound

BATCH_SIZE = 1000


@dataclass(frozen=True)
class RetryPolicy:
    max_retry_attempts: int = 3
    retry_delay_minutes: float = 15
    backoff_multiplier: float = 2.0
    allow_immediate_retry: bool = False
    max_delay_minutes: float = 1440

    def delay_minutes(self, attempts: int) -> float:
        """Backoff before the next attempt after `attempts` attempts (the original counts)."""
        delay = self.retry_delay_minutes * self.backoff_multiplier ** max(0, attempts - 1)
        delay = min(self.max_delay_minutes, delay)
        if not self.allow_immediate_retry:
            delay = max(1.0, delay)
        return delay

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PlannedDecision:
    delivery: AlertDelivery
    action: str
    reason: str
    retry_count: int
    delay_minutes: float
    next_retry_at: datetime | None
    latest_execution: ExecutionRecord | None
    failed_status_codes: list[int]

    def as_dict(self, policy: RetryPolicy) -> dict:
        delivery = self.delivery
        latest = self.latest_execution
        return {
            "delivery_id": delivery.delivery_id,
            "health_id": delivery.alert.health.health_id,
            "alert_id": delivery.alert.alert_id,
            "provider": delivery.provider,
            "action": self.action,
            "reason": self.reason,
            "retry_count": self.retry_count,
            "max_retry_attempts": policy.max_retry_attempts,
            "retry_delay_minutes": self.delay_minutes,
            "latest_execution_id": latest.execution_id if latest else None,
            "latest_attempt_at": isoformat(delivery.last_attempt_at),
            "next_retry_at": isoformat(self.next_retry_at),
            "failed_status_codes": self.failed_status_codes,
        }


def _candidates(*, providers: list[str], health_id: str, now: datetime):
    """Deliveries that need a decision: failed ones, and pending ones whose first attempt
    was abandoned (lease expired). Deliveries with an attempt in flight are left alone."""
    acknowledged = Acknowledgement.objects.filter(
        health=OuterRef("alert__health"),
        connector=OuterRef("connector"),
        state__in=CLOSING_ACK_STATES,
    )
    in_flight = RetryDecision.objects.filter(
        delivery=OuterRef("pk"), status=DecisionStatus.IN_FLIGHT
    )
    stale_pending = Q(status=DeliveryStatus.PENDING) & (
        Q(leased_until__isnull=True) | Q(leased_until__lte=now)
    )
    queryset = (
        AlertDelivery.objects.filter(Q(status=DeliveryStatus.FAILED) | stale_pending)
        .exclude(leased_until__gt=now)
        .filter(~Exists(in_flight))
        .annotate(acknowledged=Exists(acknowledged))
        .select_related("alert__health", "connector")
        .order_by("id")
    )
    if providers:
        queryset = queryset.filter(provider__in=providers)
    if health_id:
        queryset = queryset.filter(alert__health__health_id=health_id)
    return queryset


def _decide(
    delivery: AlertDelivery, policy: RetryPolicy, now: datetime, executions
) -> PlannedDecision:
    attempts = delivery.attempt_count
    latest = executions[-1] if executions else None
    failed_codes = [
        e.http_status
        for e in executions
        if e.execution_status == ExecutionStatus.FAILED and e.http_status is not None
    ]
    delay = policy.delay_minutes(attempts)
    decision = PlannedDecision(
        delivery=delivery,
        action=DecisionAction.RETRY,
        reason=DecisionReason.RETRY_DUE,
        retry_count=attempts,
        delay_minutes=delay,
        next_retry_at=None,
        latest_execution=latest,
        failed_status_codes=failed_codes,
    )
    if delivery.acknowledged:
        decision.action, decision.reason = (
            DecisionAction.SUPPRESS,
            DecisionReason.ALERT_ACKNOWLEDGED,
        )
        return decision
    if not delivery.connector.enabled:
        decision.action, decision.reason = (
            DecisionAction.SUPPRESS,
            DecisionReason.CONNECTOR_DISABLED,
        )
        return decision
    if attempts >= policy.max_retry_attempts:
        decision.action = DecisionAction.SUPPRESS
        decision.reason = DecisionReason.MAX_ATTEMPTS_REACHED
        return decision
    base = delivery.last_attempt_at or delivery.created_at
    next_retry_at = base + timedelta(minutes=delay)
    reason = DecisionReason.BACKOFF_PENDING
    if delivery.retry_not_before and delivery.retry_not_before > next_retry_at:
        next_retry_at = delivery.retry_not_before
        reason = DecisionReason.RETRY_AFTER_PENDING
    decision.next_retry_at = next_retry_at
    if now < next_retry_at:
        decision.action, decision.reason = DecisionAction.WAIT, reason
    return decision


def _executions_by_delivery(delivery_pks: list[int]) -> dict[int, list[ExecutionRecord]]:
    grouped: dict[int, list[ExecutionRecord]] = {pk: [] for pk in delivery_pks}
    for record in (
        ExecutionRecord.objects.filter(delivery_id__in=delivery_pks)
        .exclude(execution_status=ExecutionStatus.SKIPPED)
        .only(
            "id",
            "delivery_id",
            "execution_id",
            "execution_status",
            "http_status",
            "attempt_number",
            "executed_at",
        )
        .order_by("delivery_id", "attempt_number")
    ):
        grouped[record.delivery_id].append(record)
    return grouped


def retry_plan_compute(
    *, policy: RetryPolicy, providers: list[str], health_id: str, now: datetime
) -> list[PlannedDecision]:
    """Decide for every candidate delivery, in batches. Reads only."""
    decisions: list[PlannedDecision] = []
    queryset = _candidates(providers=providers, health_id=health_id, now=now)
    last_pk = 0
    while True:
        batch = list(queryset.filter(pk__gt=last_pk)[:BATCH_SIZE])
        if not batch:
            return decisions
        executions = _executions_by_delivery([d.pk for d in batch])
        decisions.extend(_decide(d, policy, now, executions[d.pk]) for d in batch)
        last_pk = batch[-1].pk


def plan_level(retryable: int, waiting: int) -> str:
    if retryable:
        return AlertLevel.CRITICAL
    if waiting:
        return AlertLevel.WARNING
    return AlertLevel.HEALTHY


def plan_serialize(plan: RetryPlan, decisions: list[dict]) -> dict:
    return {
        "retry_plan_id": plan.retry_plan_id,
        "generated_at": isoformat(plan.generated_at),
        "generated_by": plan.generated_by.get_username(),
        "alert_level": plan.alert_level,
        "decision_count": plan.decision_count,
        "retryable_count": plan.retryable_count,
        "waiting_count": plan.waiting_count,
        "suppressed_count": plan.suppressed_count,
        "retry_policy": plan.policy,
        "provider": plan.provider_filter,
        "health_id": plan.health_filter or None,
        "retry_decisions": decisions,
    }


def _apply_suppression(planned: PlannedDecision, now: datetime) -> None:
    delivery = planned.delivery
    if planned.reason == DecisionReason.MAX_ATTEMPTS_REACHED:
        if delivery.status != DeliveryStatus.EXHAUSTED:
            delivery.mark_exhausted(now=now)
    elif planned.reason == DecisionReason.ALERT_ACKNOWLEDGED:
        delivery.suppress(reason=SuppressionReason.ACKNOWLEDGED, note="", now=now)
    else:
        delivery.suppress(reason=SuppressionReason.CONNECTOR_DISABLED, note="", now=now)


def _unchanged(delivery: AlertDelivery, current: dict, busy: set[int], now: datetime) -> bool:
    """True when the locked row still matches what the plan was computed from."""
    leased = current["leased_until"] is not None and current["leased_until"] > now
    return (
        delivery.pk not in busy
        and not leased
        and current["status"] == delivery.status
        and current["attempt_count"] == delivery.attempt_count
    )


def retry_scope_validate(*, providers: list[str], health_id: str) -> list[str]:
    """Check the optional filters of a plan or a worker run; return the provider names.

    No name, or `all`, means every connector. A name that is neither a connector nor the
    provider of a delivery, or a health_id that names no report, is an error: a typo must not
    yield an empty plan that looks `healthy`.
    """
    if health_id and not HealthReport.objects.filter(health_id=health_id).exists():
        raise NotFound(f"health report {health_id!r} does not exist")
    if not providers or providers == ["all"]:
        return []
    known = set(Connector.objects.filter(name__in=providers).values_list("name", flat=True))
    known.update(
        AlertDelivery.objects.filter(provider__in=providers).values_list("provider", flat=True)
    )
    unknown = [name for name in providers if name not in known]
    if unknown:
        raise InvalidInput(
            f"unknown provider: {', '.join(unknown)}",
            code="unknown_provider",
            errors={"provider": [f"Unknown connector: {name}." for name in unknown]},
        )
    return list(dict.fromkeys(providers))


def retry_plan_create(
    *, actor, policy: RetryPolicy, providers: list[str] | None = None, health_id: str = ""
) -> tuple[RetryPlan, dict]:
    """Build and store a plan, superseding older pending decisions, with its evidence.

    Returns the plan and its public representation (with the decisions).
    """
    providers = retry_scope_validate(providers=providers or [], health_id=health_id)
    now = timezone.now()
    with transaction.atomic(durable=True):
        planned = retry_plan_compute(
            policy=policy, providers=providers, health_id=health_id, now=now
        )
        # Lock pending decisions, then the deliveries (the order every writer uses), then
        # drop any delivery that changed since it was read: an attempt claimed it, or its
        # status moved on. What is left is planned on locked, current rows.
        candidate_pks = [p.delivery.pk for p in planned]
        lock_pending_decisions(candidate_pks)
        current = {
            row["pk"]: row
            for row in AlertDelivery.objects.select_for_update(of=("self",))
            .filter(pk__in=candidate_pks)
            .order_by("pk")
            .values("pk", "status", "leased_until", "attempt_count")
        }
        busy = set(
            RetryDecision.objects.filter(
                delivery_id__in=candidate_pks, status=DecisionStatus.IN_FLIGHT
            ).values_list("delivery_id", flat=True)
        )
        planned = [p for p in planned if _unchanged(p.delivery, current[p.delivery.pk], busy, now)]
        counts = dict.fromkeys(DecisionAction.values, 0)
        for p in planned:
            counts[p.action] += 1
        plan = RetryPlan.objects.create(
            generated_at=now,
            generated_by=actor,
            policy=policy.as_dict(),
            provider_filter=providers,
            health_filter=health_id,
            alert_level=plan_level(counts[DecisionAction.RETRY], counts[DecisionAction.WAIT]),
            decision_count=len(planned),
            retryable_count=counts[DecisionAction.RETRY],
            waiting_count=counts[DecisionAction.WAIT],
            suppressed_count=counts[DecisionAction.SUPPRESS],
        )
        RetryDecision.objects.filter(
            delivery_id__in=[p.delivery.pk for p in planned],
            status=DecisionStatus.PENDING,
        ).update(status=DecisionStatus.SUPERSEDED, closed_at=now)
        rows = []
        for p in planned:
            suppress = p.action == DecisionAction.SUPPRESS
            if suppress:
                _apply_suppression(p, now)
            rows.append(
                RetryDecision(
                    plan=plan,
                    delivery=p.delivery,
                    action=p.action,
                    reason=p.reason,
                    status=DecisionStatus.APPLIED if suppress else DecisionStatus.PENDING,
                    retry_count=p.retry_count,
                    max_retry_attempts=policy.max_retry_attempts,
                    retry_delay_minutes=p.delay_minutes,
                    next_retry_at=p.next_retry_at,
                    latest_execution=p.latest_execution,
                    latest_attempt_at=p.delivery.last_attempt_at,
                    failed_status_codes=p.failed_status_codes,
                    closed_at=now if suppress else None,
                )
            )
        RetryDecision.objects.bulk_create(rows, batch_size=BATCH_SIZE)
        decisions = [p.as_dict(policy) for p in planned]
        public = plan_serialize(plan, decisions)
        evidence_append(
            kind=MetadataKind.RETRY_PLAN,
            session_id=plan.retry_plan_id,
            signer=signer_of(actor),
            subject=public,
            filters=EvidenceFilters(
                health_id=health_id, provider=",".join(providers), dry_run=None
            ),
            decision_count=plan.decision_count,
            blocked_count=plan.suppressed_count,
            approval_required_count=plan.retryable_count,
            now=now,
        )
    return plan, public
