"""Upstream delivery facts and the health reports judged from them."""

from django.db import models

from closure.choices import AlertLevel, EventKind, EventStatus
from closure.models.base import NewestFirstQuerySet, choices_constraint, public_id_field, user_field

HEALTH_ID_PREFIX = "gordackexecdeliveryhealth-"


class DeliveryEvent(models.Model):
    """One fact from the upstream executive-report delivery pipeline, stored once by event_id."""

    event_id = models.CharField(max_length=128, unique=True)
    kind = models.CharField(max_length=32, choices=EventKind.choices)
    status = models.CharField(max_length=16, choices=EventStatus.choices)
    occurred_at = models.DateTimeField()
    provider = models.CharField(max_length=64, blank=True, default="")
    run_id = models.CharField(max_length=128, blank=True, default="")
    executive_report_id = models.CharField(max_length=128, blank=True, default="")
    schedule_enabled = models.BooleanField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    # SHA-256 of the canonical event body: a repeat with another body is a conflict.
    body_sha256 = models.CharField(max_length=64)
    ingested_at = models.DateTimeField(auto_now_add=True)
    ingested_by = user_field()

    objects = NewestFirstQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        constraints = [
            choices_constraint("kind", EventKind, "deliveryevent_kind_valid"),
            choices_constraint("status", EventStatus, "deliveryevent_status_valid"),
        ]
        indexes = [
            # Health findings: newest event of a kind, and failures without a later success
            # for the same run and provider.
            models.Index(
                fields=["kind", "run_id", "provider", "occurred_at"], name="event_kind_run_idx"
            ),
            models.Index(fields=["kind", "-occurred_at"], name="event_kind_recent_idx"),
            # The /api/v1/delivery-events/ list ordering.
            models.Index(fields=["-occurred_at", "-id"], name="event_list_idx"),
        ]

    def __str__(self) -> str:
        return self.event_id


class HealthReport(models.Model):
    """An executive delivery retry health report: level, findings, counts and parameters."""

    health_id = public_id_field(HEALTH_ID_PREFIX)
    generated_at = models.DateTimeField()
    generated_by = user_field()
    alert_level = models.CharField(max_length=16, choices=AlertLevel.choices)
    alert_count = models.PositiveIntegerField()
    findings = models.JSONField(default=list)
    counts = models.JSONField(default=dict)
    parameters = models.JSONField(default=dict)

    objects = NewestFirstQuerySet.as_manager()

    class Meta:
        ordering = ["-generated_at", "-id"]
        get_latest_by = ["generated_at", "id"]
        constraints = [
            choices_constraint("alert_level", AlertLevel, "healthreport_level_valid"),
        ]
        indexes = [
            # "Latest report" on the closure dashboard and the default of POST deliver.
            models.Index(fields=["-generated_at", "-id"], name="health_latest_idx"),
        ]

    def __str__(self) -> str:
        return self.health_id

    @property
    def is_degraded(self) -> bool:
        return self.alert_level != AlertLevel.HEALTHY
