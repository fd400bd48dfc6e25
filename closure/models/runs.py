"""Retry worker runs and the immutable execution record of every delivery attempt."""

from django.db import models
from django.db.models import F, Q

from closure.choices import (
    ErrorClass,
    ExecutionStatus,
    ExecutionTrigger,
    SkipReason,
    WorkerRunStatus,
)
from closure.models.base import NewestFirstQuerySet, choices_constraint, public_id_field, user_field

WORKER_RUN_ID_PREFIX = "gordackexechealthalertworker-"
EXECUTION_ID_PREFIX = "gordackexechealthalertexec-"


class WorkerRunQuerySet(NewestFirstQuerySet):
    def running(self):
        return self.filter(status=WorkerRunStatus.RUNNING)

    def finished(self):
        return self.exclude(status=WorkerRunStatus.RUNNING)

    def stale(self, before):
        """Live runs still marked running whose last heartbeat is older than `before`: their
        worker died (a dry run records itself in one transaction and is never left running)."""
        return self.filter(status=WorkerRunStatus.RUNNING, dry_run=False, heartbeat_at__lt=before)


class WorkerRun(models.Model):
    """One run of the retry worker, dry or live."""

    run_id = public_id_field(WORKER_RUN_ID_PREFIX)
    dry_run = models.BooleanField()
    status = models.CharField(
        max_length=16, choices=WorkerRunStatus.choices, default=WorkerRunStatus.RUNNING
    )
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_by = user_field()
    retry_plan = models.ForeignKey(
        "closure.RetryPlan", on_delete=models.PROTECT, null=True, blank=True, related_name="runs"
    )
    parameters = models.JSONField(default=dict)
    schedule = models.JSONField(default=dict, blank=True)
    summary = models.JSONField(default=dict)
    selected_retries = models.JSONField(default=list)

    objects = WorkerRunQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]
        permissions = [("execute_retry", "Can run the retry worker live and retry by hand")]
        constraints = [
            choices_constraint("status", WorkerRunStatus, "workerrun_status_valid"),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True) | Q(finished_at__gte=F("started_at")),
                name="workerrun_finished_after_start",
            ),
        ]
        indexes = [
            # Closure dashboard: the latest live run.
            models.Index(fields=["dry_run", "-started_at", "-id"], name="workerrun_latest_idx"),
            models.Index(fields=["-started_at", "-id"], name="workerrun_list_idx"),
        ]

    def __str__(self) -> str:
        return self.run_id


# What an execution record stores of its attempt, named as its evidence and the API name it.
EXECUTION_OUTCOME_FIELDS = (
    "provider",
    "attempt_number",
    "trigger",
    "http_status",
    "error_class",
    "latency_ms",
    "retry_after_seconds",
    "request_fingerprint",
    "response_sha256",
    "execution_hash",
)


class ExecutionRecord(models.Model):
    """One immutable record per delivery attempt (plus `skipped` records for re-checks)."""

    execution_id = public_id_field(EXECUTION_ID_PREFIX)
    delivery = models.ForeignKey(
        "closure.AlertDelivery", on_delete=models.PROTECT, related_name="executions"
    )
    decision = models.ForeignKey(
        "closure.RetryDecision",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="executions",
    )
    worker_run = models.ForeignKey(
        WorkerRun, on_delete=models.PROTECT, null=True, blank=True, related_name="executions"
    )
    execution_status = models.CharField(max_length=16, choices=ExecutionStatus.choices)
    skip_reason = models.CharField(
        max_length=32, choices=SkipReason.choices, blank=True, default=""
    )
    executed_at = models.DateTimeField()
    executed_by = user_field()
    provider = models.CharField(max_length=64)
    attempt_number = models.PositiveIntegerField()
    trigger = models.CharField(max_length=16, choices=ExecutionTrigger.choices)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_class = models.CharField(
        max_length=32, choices=ErrorClass.choices, blank=True, default=""
    )
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    retry_after_seconds = models.PositiveIntegerField(null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    response_sha256 = models.CharField(max_length=64, blank=True, default="")
    response_excerpt = models.CharField(max_length=200, blank=True, default="")
    execution_hash = models.CharField(max_length=64)

    objects = NewestFirstQuerySet.as_manager()

    class Meta:
        ordering = ["-executed_at", "-id"]
        constraints = [
            choices_constraint("execution_status", ExecutionStatus, "execution_status_valid"),
            choices_constraint("trigger", ExecutionTrigger, "execution_trigger_valid"),
            models.CheckConstraint(
                condition=Q(attempt_number__gte=1), name="execution_attempt_gte_1"
            ),
            # Exactly one record per attempt that counts for the delivery; skipped re-checks
            # make no attempt, and a superseded attempt lost its lease to the one that counts.
            models.UniqueConstraint(
                fields=["delivery", "attempt_number"],
                condition=~Q(
                    execution_status__in=[ExecutionStatus.SKIPPED, ExecutionStatus.SUPERSEDED]
                ),
                name="execution_one_per_attempt",
            ),
            models.CheckConstraint(
                condition=Q(
                    execution_status__in=[ExecutionStatus.FAILED, ExecutionStatus.SUPERSEDED]
                )
                | Q(error_class=""),
                name="execution_error_only_when_failed",
            ),
        ]
        indexes = [
            models.Index(fields=["-executed_at", "-id"], name="execution_list_idx"),
            # Planning reads each delivery's attempts in order.
            models.Index(fields=["delivery", "attempt_number"], name="execution_delivery_idx"),
            models.Index(fields=["execution_status", "-executed_at"], name="execution_status_idx"),
            # The provider filter of the admin changelist, the console list and the API list:
            # one connector's attempts, newest first, and their bounded count.
            models.Index(fields=["provider", "-executed_at", "-id"], name="execution_provider_idx"),
        ]

    def __str__(self) -> str:
        return self.execution_id
