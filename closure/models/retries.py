"""Retry plans and their per-delivery decisions."""

from django.db import models
from django.db.models import Q

from closure.choices import (
    OPEN_DECISION_STATUSES,
    AlertLevel,
    DecisionAction,
    DecisionReason,
    DecisionStatus,
)
from closure.models.base import NewestFirstQuerySet, choices_constraint, public_id_field, user_field

RETRY_PLAN_ID_PREFIX = "gordackexechealthalertretry-"


class RetryPlan(models.Model):
    """A retry plan: the policy used and the counts of its decisions."""

    retry_plan_id = public_id_field(RETRY_PLAN_ID_PREFIX)
    generated_at = models.DateTimeField()
    generated_by = user_field()
    policy = models.JSONField(default=dict)
    provider_filter = models.JSONField(default=list, blank=True)
    health_filter = models.CharField(max_length=64, blank=True, default="")
    alert_level = models.CharField(max_length=16, choices=AlertLevel.choices)
    decision_count = models.PositiveIntegerField(default=0)
    retryable_count = models.PositiveIntegerField(default=0)
    waiting_count = models.PositiveIntegerField(default=0)
    suppressed_count = models.PositiveIntegerField(default=0)

    objects = NewestFirstQuerySet.as_manager()

    class Meta:
        ordering = ["-generated_at", "-id"]
        permissions = [("plan_retry", "Can plan retries and dry-run the retry worker")]
        constraints = [choices_constraint("alert_level", AlertLevel, "retryplan_level_valid")]
        indexes = [models.Index(fields=["-generated_at", "-id"], name="retryplan_list_idx")]

    def __str__(self) -> str:
        return self.retry_plan_id


class RetryDecisionQuerySet(models.QuerySet):
    """A decision is open while pending (waiting for its time or a worker) or in flight (a
    worker run claimed it and is attempting the delivery)."""

    def pending(self):
        return self.filter(status=DecisionStatus.PENDING)

    def in_flight(self):
        return self.filter(status=DecisionStatus.IN_FLIGHT)

    def open(self):
        return self.filter(status__in=sorted(OPEN_DECISION_STATUSES))

    def due(self, now, *, retry_plan_id: str = "", providers=()):
        """Pending `retry` decisions whose time has come, oldest due first: of the named plan,
        or of any plan when none is named (a newer plan supersedes older pending decisions,
        so each delivery has at most one), for the named providers or all."""
        queryset = self.filter(
            status=DecisionStatus.PENDING,
            action=DecisionAction.RETRY,
            next_retry_at__lte=now,
        )
        if retry_plan_id:
            queryset = queryset.filter(plan__retry_plan_id=retry_plan_id)
        if providers:
            queryset = queryset.filter(delivery__provider__in=providers)
        return queryset.order_by("next_retry_at", "id")


class RetryDecision(models.Model):
    """One plan's decision for one failed delivery: retry, wait or suppress."""

    plan = models.ForeignKey(RetryPlan, on_delete=models.PROTECT, related_name="decisions")
    delivery = models.ForeignKey(
        "closure.AlertDelivery", on_delete=models.PROTECT, related_name="decisions"
    )
    action = models.CharField(max_length=16, choices=DecisionAction.choices)
    reason = models.CharField(max_length=32, choices=DecisionReason.choices)
    status = models.CharField(max_length=16, choices=DecisionStatus.choices)
    # Attempts made before this decision (the original send counts).
    retry_count = models.PositiveIntegerField()
    max_retry_attempts = models.PositiveIntegerField()
    retry_delay_minutes = models.FloatField()
    next_retry_at = models.DateTimeField(null=True, blank=True)
    latest_execution = models.ForeignKey(
        "closure.ExecutionRecord",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    latest_attempt_at = models.DateTimeField(null=True, blank=True)
    failed_status_codes = models.JSONField(default=list)
    claimed_by_run = models.ForeignKey(
        "closure.WorkerRun",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="claimed_decisions",
    )
    closed_at = models.DateTimeField(null=True, blank=True)

    objects = RetryDecisionQuerySet.as_manager()

    class Meta:
        ordering = ["plan_id", "id"]
        constraints = [
            choices_constraint("action", DecisionAction, "decision_action_valid"),
            choices_constraint("reason", DecisionReason, "decision_reason_valid"),
            choices_constraint("status", DecisionStatus, "decision_status_valid"),
            # At most one open decision per delivery: a new plan supersedes the old one.
            models.UniqueConstraint(
                fields=["delivery"],
                condition=Q(status__in=sorted(OPEN_DECISION_STATUSES)),
                name="decision_one_open_per_delivery",
            ),
            # Suppress decisions are applied when the plan is made; they are never open.
            models.CheckConstraint(
                condition=~Q(action=DecisionAction.SUPPRESS)
                | ~Q(status__in=sorted(OPEN_DECISION_STATUSES)),
                name="decision_suppress_never_open",
            ),
        ]
        indexes = [
            # Worker claims: open retry decisions that are due, oldest first.
            models.Index(fields=["status", "action", "next_retry_at"], name="decision_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.plan_id}:{self.delivery_id}:{self.action}"
