"""Retry planning: per failed delivery decide retry, wait or suppress (success-aware)."""

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import BooleanField, Exists, F, Func, OuterRef, Q
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
from closure.evidence.canonical import isoformat
from closure.evidence.ledger import EvidenceFilters, evidence_append
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    Connector,
    ExecutionRecord,
    HealthReport,
    RetryDecision,
    RetryPlan,
)
from closure.models.alerts import stuck_condition
from closure.services.alerts import lock_pending_decisions, unknown_providers
from closure.services.common import signer_of
from closure.services.errors import NotFound

BATCH_SIZE = 1000
# Arbitrary constant naming the plan writers' advisory lock on PostgreSQL.
PLANNING_LOCK_KEY = 0x43415652_504C414E


@dataclass(frozen=True)
class RetryPolicy:
    max_retry_attempts: int = 3
    retry_delay_minutes: float = 15
    backoff_multiplier: float = 2.0
    allow_immediate_retry: bool = False
    max_delay_minutes: float = 1440

    def delay_minutes(self, attempts: int) -> float:
        """Backoff before the next attempt after `attempts` attempts (the original counts)."""
        try:
            growth = self.backoff_multiplier ** max(0, attempts - 1)
        except OverflowError:  # thousands of attempts: far past any cap
            growth = math.inf
        delay = self.retry_delay_minutes * growth if self.retry_delay_minutes else 0.0
        delay = min(self.max_delay_minutes, delay)
        if not self.allow_immediate_retry:
            delay = max(1.0, delay)
        return delay

    def as_dict(self) -> dict:
        return asdict(self)


class InValues(Func):
    """`expression IN values`, with the values as one array parameter on PostgreSQL.

    A plan names thousands of deliveries at once. As `IN (%s, %s, …)` every value is a
    placeholder to build, quote and parse: about 100 ms per 10,000 values, several times per
    plan. As `= ANY(%s)` it is one array. Other databases get the plain IN list. No values
    match nothing and run no query, as `__in=[]` does.
    """

    output_field = BooleanField()

    def __init__(self, expression, values) -> None:
        super().__init__(expression)
        self.values = list(values)

    def as_sql(self, compiler, connection, **extra_context):
        if not self.values:
            raise EmptyResultSet
        sql, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            return f"{sql} = ANY(%s)", (*params, self.values)
        placeholders = ", ".join(["%s"] * len(self.values))
        return f"{sql} IN ({placeholders})", (*params, *self.values)


@dataclass(frozen=True)
class Candidate:
    """What planning reads of one delivery: one row of a batch query, not a model instance."""

    pk: int
    delivery_id: str
    health_public_id: str
    alert_public_id: str
    provider: str
    status: str
    attempt_count: int
    last_attempt_at: datetime | None
    created_at: datetime
    retry_not_before: datetime | None
    connector_enabled: bool
    acknowledged: bool


@dataclass
class Attempts:
    """A delivery's attempts that count (skipped re-checks excluded), oldest first."""

    latest_pk: int | None = None
    latest_execution_id: str | None = None
    failed_status_codes: list[int] = field(default_factory=list)


@dataclass
class PlannedDecision:
    delivery: Candidate
    action: str
    reason: str
    retry_count: int
    delay_minutes: float
    next_retry_at: datetime | None
    attempts: Attempts

    def as_dict(self, policy: RetryPolicy) -> dict:
        delivery = self.delivery
        return {
            "delivery_id": delivery.delivery_id,
            "health_id": delivery.health_public_id,
            "alert_id": delivery.alert_public_id,
            "provider": delivery.provider,
            "action": self.action,
            "reason": self.reason,
            "retry_count": self.retry_count,
            "max_retry_attempts": policy.max_retry_attempts,
            "retry_delay_minutes": self.delay_minutes,
            "latest_execution_id": self.attempts.latest_execution_id,
            "latest_attempt_at": isoformat(delivery.last_attempt_at),
            "next_retry_at": isoformat(self.next_retry_at),
            "failed_status_codes": self.attempts.failed_status_codes,
        }


_CANDIDATE_FIELDS = (
    "pk",
    "delivery_id",
    "provider",
    "status",
    "attempt_count",
    "last_attempt_at",
    "created_at",
    "retry_not_before",
    "acknowledged",
)


def _candidates(*, providers: list[str], health_id: str, now: datetime):
    """Deliveries that need a decision: failed ones, and pending ones whose first attempt
    was abandoned (lease expired). Deliveries with an attempt in flight are left alone.

    Rows are plain values (see `Candidate`), one query per batch with the alert, report and
    connector joined in.
    """
    acknowledged = Acknowledgement.objects.filter(
        health=OuterRef("alert__health"),
        connector=OuterRef("connector"),
        state__in=CLOSING_ACK_STATES,
    )
    in_flight = RetryDecision.objects.in_flight().filter(delivery=OuterRef("pk"))
    queryset = (
        AlertDelivery.objects.filter(Q(status=DeliveryStatus.FAILED) | stuck_condition(now))
        .lease_free(now)
        .filter(~Exists(in_flight))
        .annotate(acknowledged=Exists(acknowledged))
        .order_by("id")
    )
    if providers:
        queryset = queryset.filter(provider__in=providers)
    if health_id:
        queryset = queryset.filter(alert__health__health_id=health_id)
    return queryset.values(
        *_CANDIDATE_FIELDS,
        health_public_id=F("alert__health__health_id"),
        alert_public_id=F("alert__alert_id"),
        connector_enabled=F("connector__enabled"),
    )


def _decide(
    delivery: Candidate, policy: RetryPolicy, now: datetime, attempts: Attempts
) -> PlannedDecision:
    count = delivery.attempt_count
    delay = policy.delay_minutes(count)
    decision = PlannedDecision(
        delivery=delivery,
        action=DecisionAction.RETRY,
        reason=DecisionReason.RETRY_DUE,
        retry_count=count,
        delay_minutes=delay,
        next_retry_at=None,
        attempts=attempts,
    )
    if delivery.acknowledged:
        decision.action, decision.reason = (
            DecisionAction.SUPPRESS,
            DecisionReason.ALERT_ACKNOWLEDGED,
        )
        return decision
    if not delivery.connector_enabled:
        decision.action, decision.reason = (
            DecisionAction.SUPPRESS,
            DecisionReason.CONNECTOR_DISABLED,
        )
        return decision
    if count >= policy.max_retry_attempts:
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


def _attempts_by_delivery(delivery_pks: list[int]) -> dict[int, Attempts]:
    """One query for a batch: every counting attempt of these deliveries, in attempt order."""
    grouped = {pk: Attempts() for pk in delivery_pks}
    rows = (
        ExecutionRecord.objects.filter(InValues(F("delivery_id"), delivery_pks))
        .exclude(execution_status=ExecutionStatus.SKIPPED)
        .order_by("delivery_id", "attempt_number")
        .values_list("delivery_id", "pk", "execution_id", "execution_status", "http_status")
    )
    for delivery_pk, pk, execution_id, execution_status, http_status in rows:
        attempts = grouped[delivery_pk]
        attempts.latest_pk, attempts.latest_execution_id = pk, execution_id
        if execution_status == ExecutionStatus.FAILED and http_status is not None:
            attempts.failed_status_codes.append(http_status)
    return grouped


def retry_plan_compute(
    *, policy: RetryPolicy, providers: list[str], health_id: str, now: datetime
) -> list[PlannedDecision]:
    """Decide for every candidate delivery, in batches of `BATCH_SIZE`: two queries per batch
    (the deliveries, their attempts), whatever the rows hold. Reads only."""
    decisions: list[PlannedDecision] = []
    queryset = _candidates(providers=providers, health_id=health_id, now=now)
    last_pk = 0
    while True:
        batch = [Candidate(**row) for row in queryset.filter(pk__gt=last_pk)[:BATCH_SIZE]]
        if not batch:
            return decisions
        attempts = _attempts_by_delivery([d.pk for d in batch])
        decisions.extend(_decide(d, policy, now, attempts[d.pk]) for d in batch)
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


# What a suppress decision does to its delivery, by reason.
_SUPPRESSION_CHANGES = {
    DecisionReason.MAX_ATTEMPTS_REACHED: {"status": DeliveryStatus.EXHAUSTED},
    DecisionReason.ALERT_ACKNOWLEDGED: {
        "status": DeliveryStatus.SUPPRESSED,
        "suppression_reason": SuppressionReason.ACKNOWLEDGED,
        "suppression_note": "",
    },
    DecisionReason.CONNECTOR_DISABLED: {
        "status": DeliveryStatus.SUPPRESSED,
        "suppression_reason": SuppressionReason.CONNECTOR_DISABLED,
        "suppression_note": "",
    },
}


def _apply_suppressions(planned: list[PlannedDecision], now: datetime) -> None:
    """Exhaust or suppress the deliveries of suppress decisions: one UPDATE per reason."""
    for reason, changes in _SUPPRESSION_CHANGES.items():
        pks = [p.delivery.pk for p in planned if p.reason == reason]
        if pks:
            AlertDelivery.objects.filter(InValues(F("pk"), pks)).update(**changes, updated_at=now)


def _decision_row(
    planned: PlannedDecision, *, plan: RetryPlan, policy: RetryPolicy, now: datetime
) -> RetryDecision:
    """The stored decision; a suppress decision is applied (closed) when it is made."""
    suppress = planned.action == DecisionAction.SUPPRESS
    return RetryDecision(
        plan_id=plan.pk,
        delivery_id=planned.delivery.pk,
        action=planned.action,
        reason=planned.reason,
        status=DecisionStatus.APPLIED if suppress else DecisionStatus.PENDING,
        retry_count=planned.retry_count,
        max_retry_attempts=policy.max_retry_attempts,
        retry_delay_minutes=planned.delay_minutes,
        next_retry_at=planned.next_retry_at,
        latest_execution_id=planned.attempts.latest_pk,
        latest_attempt_at=planned.delivery.last_attempt_at,
        failed_status_codes=planned.attempts.failed_status_codes,
        closed_at=now if suppress else None,
    )


def _unchanged(delivery: Candidate, current: dict, busy: set[int], now: datetime) -> bool:
    """True when the locked row still matches what the plan was computed from."""
    leased = current["leased_until"] is not None and current["leased_until"] > now
    return (
        delivery.pk not in busy
        and not leased
        and current["status"] == delivery.status
        and current["attempt_count"] == delivery.attempt_count
    )


def _planning_lock() -> None:
    """Serialise plan writers until the transaction ends: a transaction-scoped advisory lock
    on PostgreSQL; SQLite's IMMEDIATE transactions already admit one writer at a time."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PLANNING_LOCK_KEY])


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
        raise unknown_providers(unknown)
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
        # One planner writes at a time. Without this, a planner could supersede pending
        # decisions that another planner created after it took its decision locks, while that
        # other planner, holding them, waits for its deliveries: a deadlock.
        _planning_lock()
        # Lock pending decisions, then the deliveries (the order every writer uses), then
        # drop any delivery that changed since it was read: an attempt claimed it, or its
        # status moved on. What is left is planned on locked, current rows.
        candidate_pks = [p.delivery.pk for p in planned]
        candidates = AlertDelivery.objects.filter(InValues(F("pk"), candidate_pks))
        lock_pending_decisions(candidates.values("pk"))
        current = {
            row["pk"]: row
            for row in candidates.select_for_update(of=("self",))
            .order_by("pk")
            .values("pk", "status", "leased_until", "attempt_count")
        }
        busy = set(
            RetryDecision.objects.in_flight()
            .filter(InValues(F("delivery_id"), candidate_pks))
            .values_list("delivery_id", flat=True)
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
        RetryDecision.objects.pending().filter(
            InValues(F("delivery_id"), [p.delivery.pk for p in planned])
        ).update(status=DecisionStatus.SUPERSEDED, closed_at=now)
        _apply_suppressions(planned, now)
        RetryDecision.objects.bulk_create(
            (_decision_row(p, plan=plan, policy=policy, now=now) for p in planned),
            batch_size=BATCH_SIZE,
        )
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
