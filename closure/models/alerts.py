"""Health alerts, their per-connector deliveries, and recipients' acknowledgements."""

from datetime import datetime

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Coalesce

from closure.choices import (
    AcknowledgementState,
    DeliveryStatus,
    SuppressionReason,
)
from closure.models.base import NewestFirstQuerySet, choices_constraint, public_id_field, user_field

ALERT_ID_PREFIX = "gordackexechealthalert-"
DELIVERY_ID_PREFIX = "gordackexechealthalertdelivery-"
ACK_ID_PREFIX = "gordackexechealthack-"


class HealthAlert(models.Model):
    """One send of a health report's alert: which connectors were selected or suppressed."""

    alert_id = public_id_field(ALERT_ID_PREFIX)
    health = models.ForeignKey(
        "closure.HealthReport", on_delete=models.PROTECT, related_name="alerts"
    )
    created_at = models.DateTimeField()
    created_by = user_field()
    forced = models.BooleanField(default=False)
    selected_providers = models.JSONField(default=list)
    # [{"provider": name, "reason": "recently_alerted" | "connector_disabled"}]
    suppressed_providers = models.JSONField(default=list)
    # The public-safe event payload every connector renders its message from.
    payload = models.JSONField(default=dict)

    objects = NewestFirstQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Alert history list (GET A) and "latest alert of a report".
            models.Index(fields=["-created_at", "-id"], name="alert_list_idx"),
        ]

    def __str__(self) -> str:
        return self.alert_id


def stuck_condition(now: datetime) -> Q:
    """A pending delivery whose first attempt was abandoned: no attempt holds its lease."""
    return Q(status=DeliveryStatus.PENDING) & (
        Q(leased_until__isnull=True) | Q(leased_until__lte=now)
    )


# A delivery's state: what its attempts, suppressions and waivers change.
DELIVERY_STATE_FIELDS = (
    "status",
    "suppression_reason",
    "suppression_note",
    "attempt_count",
    "last_attempt_at",
    "retry_not_before",
    "delivered_at",
)


class AlertDeliveryQuerySet(NewestFirstQuerySet):
    def lease_free(self, now: datetime):
        """Deliveries no attempt holds: never leased, released, or the lease expired."""
        return self.exclude(leased_until__gt=now)

    def stuck(self, now: datetime):
        return self.filter(stuck_condition(now))


class AlertDelivery(models.Model):
    """The delivery of one alert to one connector; `status` is its current state.

    pending → delivered; pending → failed → (retries) → delivered | exhausted; any state that is
    not delivered → suppressed (acknowledged, connector disabled, waived).
    """

    delivery_id = public_id_field(DELIVERY_ID_PREFIX)
    alert = models.ForeignKey(HealthAlert, on_delete=models.PROTECT, related_name="deliveries")
    connector = models.ForeignKey(
        "closure.Connector", on_delete=models.PROTECT, related_name="deliveries"
    )
    # The connector's name at send time, kept for evidence and filtering.
    provider = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    suppression_reason = models.CharField(
        max_length=32, choices=SuppressionReason.choices, blank=True, default=""
    )
    suppression_note = models.TextField(blank=True, default="")
    attempt_count = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # The connector's Retry-After: no retry before this instant.
    retry_not_before = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    # Attempt lease: whoever holds it (a worker run or a manual retry) is the only one allowed
    # to call the connector for this delivery; `lease_version` fences late writers.
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    leased_until = models.DateTimeField(null=True, blank=True)
    lease_version = models.PositiveIntegerField(default=0)

    objects = AlertDeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"
        permissions = [("waive_delivery", "Can waive a failed or exhausted delivery")]
        constraints = [
            choices_constraint("status", DeliveryStatus, "delivery_status_valid"),
            models.UniqueConstraint(fields=["alert", "connector"], name="delivery_one_per_alert"),
            # A suppressed delivery always says why; no other status carries a reason.
            models.CheckConstraint(
                condition=(
                    Q(
                        status=DeliveryStatus.SUPPRESSED,
                        suppression_reason__in=SuppressionReason.values,
                    )
                    | (~Q(status=DeliveryStatus.SUPPRESSED) & Q(suppression_reason=""))
                ),
                name="delivery_suppression_reason_matches",
            ),
            models.CheckConstraint(
                condition=Q(status=DeliveryStatus.DELIVERED, delivered_at__isnull=False)
                | ~Q(status=DeliveryStatus.DELIVERED),
                name="delivery_delivered_has_time",
            ),
        ]
        indexes = [
            # Retry planning and the closure dashboard: deliveries by current status.
            models.Index(fields=["status", "id"], name="delivery_status_idx"),
            # /api/v1/deliveries/ ordering.
            models.Index(fields=["-created_at", "-id"], name="delivery_list_idx"),
            # Closure dashboard: the oldest delivered (or accepted) deliveries still awaiting
            # acknowledgement, read in the order they reached the connector until 20 are found.
            models.Index(
                Coalesce("delivered_at", "last_attempt_at"),
                F("id"),
                condition=Q(status__in=[DeliveryStatus.DELIVERED, DeliveryStatus.ACCEPTED]),
                name="delivery_reached_idx",
            ),
        ]

    def __str__(self) -> str:
        return self.delivery_id

    def lease_is_held(self, now: datetime) -> bool:
        return bool(self.lease_owner) and self.leased_until is not None and self.leased_until > now

    def claim(self, *, owner: str, until: datetime) -> int:
        """Take the attempt lease (row already locked by the caller); returns the fence token."""
        self.lease_owner = owner
        self.leased_until = until
        self.lease_version = F("lease_version") + 1
        self.save(update_fields=["lease_owner", "leased_until", "lease_version"])
        self.refresh_from_db(fields=["lease_version"])
        return self.lease_version

    def suppress(self, *, reason: str, note: str, now: datetime) -> None:
        self.status = DeliveryStatus.SUPPRESSED
        self.suppression_reason = reason
        self.suppression_note = note
        self.updated_at = now
        self.save(update_fields=["status", "suppression_reason", "suppression_note", "updated_at"])

    def mark_exhausted(self, *, now: datetime) -> None:
        self.status = DeliveryStatus.EXHAUSTED
        self.updated_at = now
        self.save(update_fields=["status", "updated_at"])


class Acknowledgement(models.Model):
    """A recipient's acknowledgement of a health report's alert on one connector."""

    ack_id = public_id_field(ACK_ID_PREFIX)
    alert = models.ForeignKey(
        HealthAlert, on_delete=models.PROTECT, related_name="acknowledgements"
    )
    health = models.ForeignKey(
        "closure.HealthReport", on_delete=models.PROTECT, related_name="acknowledgements"
    )
    connector = models.ForeignKey(
        "closure.Connector", on_delete=models.PROTECT, related_name="acknowledgements"
    )
    provider = models.CharField(max_length=64)
    state = models.CharField(
        max_length=16,
        choices=AcknowledgementState.choices,
        default=AcknowledgementState.ACKNOWLEDGED,
    )
    external_ref = models.CharField(max_length=200, blank=True, default="")
    notes = models.TextField(blank=True, default="")
    acknowledged_at = models.DateTimeField()
    acknowledged_by = user_field()

    objects = NewestFirstQuerySet.as_manager()

    class Meta:
        ordering = ["-acknowledged_at", "-id"]
        permissions = [("acknowledge_alert", "Can record an acknowledgement of an alert")]
        constraints = [choices_constraint("state", AcknowledgementState, "ack_state_valid")]
        indexes = [
            # "Is this report acknowledged on this connector?" (planning, closure dashboard).
            models.Index(fields=["health", "connector", "state"], name="ack_health_connector_idx"),
            models.Index(fields=["-acknowledged_at", "-id"], name="ack_list_idx"),
        ]

    def __str__(self) -> str:
        return self.ack_id
