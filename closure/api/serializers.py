"""Input serializers for the actions and output serializers for the resource lists."""

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from closure.api.fields import (
    AwareDateTimeField,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
)
from closure.choices import (
    EVENT_STATUSES_BY_KIND,
    AcknowledgementState,
    EventKind,
    EventStatus,
)
from closure.evidence.canonical import canonical_json
from closure.evidence.ledger import evidence_envelope
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    Connector,
    DeliveryEvent,
    Evidence,
    ExecutionRecord,
    HealthAlert,
    HealthReport,
    RetryDecision,
    RetryPlan,
    WorkerRun,
)
from closure.services.events import MAX_BATCH
from closure.services.health import HealthParameters
from closure.services.retries import RetryPolicy

MAX_DETAILS_BYTES = 4096

# -- inputs -----------------------------------------------------------------------------------


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class DeliveryEventInputSerializer(StrictSerializer):
    # At most 80: the ingest's evidence row is named by its batch's first event_id, and an
    # evidence session_id holds 80 characters (a longer id was a database error on PostgreSQL).
    event_id = StrictCharField(max_length=80)
    kind = serializers.ChoiceField(choices=EventKind.choices)
    status = serializers.ChoiceField(choices=EventStatus.choices)
    occurred_at = AwareDateTimeField(max_days_ahead=1)
    provider = StrictCharField(max_length=64, required=False, allow_blank=True, default="")
    run_id = StrictCharField(max_length=128, required=False, allow_blank=True, default="")
    executive_report_id = StrictCharField(
        max_length=128, required=False, allow_blank=True, default=""
    )
    schedule_enabled = StrictBooleanField(required=False, allow_null=True, default=None)
    details = serializers.DictField(required=False, default=dict)

    def validate_details(self, value):
        encoded = canonical_json(value)
        if len(encoded) > MAX_DETAILS_BYTES:
            raise serializers.ValidationError(f"At most {MAX_DETAILS_BYTES} bytes of JSON.")
        # PostgreSQL's jsonb cannot hold a NUL character (it was a database error there).
        if _has_nul(value):
            raise serializers.ValidationError("Must not contain NUL characters.")
        return value

    def validate(self, attrs):
        allowed = EVENT_STATUSES_BY_KIND[attrs["kind"]]
        if attrs["status"] not in allowed:
            raise serializers.ValidationError(
                {"status": [f"A {attrs['kind']} event is one of: {', '.join(sorted(allowed))}."]}
            )
        return attrs


class DeliveryEventBatchInputSerializer(StrictSerializer):
    events = DeliveryEventInputSerializer(
        many=True, allow_empty=False, min_length=1, max_length=MAX_BATCH
    )


class HealthBuildInputSerializer(StrictSerializer):
    expected_interval_minutes = StrictIntegerField(
        min_value=1, max_value=10080, default=HealthParameters.expected_interval_minutes
    )
    stale_metadata_minutes = StrictIntegerField(
        min_value=1, max_value=43200, default=HealthParameters.stale_metadata_minutes
    )


class AlertDeliverInputSerializer(StrictSerializer):
    health_id = StrictCharField(max_length=64, required=False, allow_blank=True, default="")
    provider = StrictCharField(max_length=1000, required=False, default="all")
    force = StrictBooleanField(required=False, default=False)
    suppression_window_minutes = StrictIntegerField(
        min_value=0, max_value=10080, required=False, default=60
    )


class AcknowledgementInputSerializer(StrictSerializer):
    provider = StrictCharField(max_length=64)
    acknowledgement_state = serializers.ChoiceField(
        choices=AcknowledgementState.choices, default=AcknowledgementState.ACKNOWLEDGED
    )
    external_ref = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    notes = StrictCharField(max_length=4000, required=False, allow_blank=True, default="")


class WaiveInputSerializer(StrictSerializer):
    reason = StrictCharField(max_length=2000)


class ManualRetryInputSerializer(StrictSerializer):
    timeout_seconds = StrictIntegerField(min_value=1, max_value=30, required=False, default=10)


class RetryPolicyInputSerializer(StrictSerializer):
    max_retry_attempts = StrictIntegerField(min_value=1, max_value=50, default=3)
    retry_delay_minutes = StrictFloatField(min_value=0, max_value=10080, default=15)
    backoff_multiplier = StrictFloatField(min_value=1.0, max_value=10.0, default=2.0)
    allow_immediate_retry = StrictBooleanField(default=False)
    max_delay_minutes = StrictFloatField(min_value=0, max_value=43200, default=1440)

    def validate(self, attrs):
        if attrs["retry_delay_minutes"] < 1 and not attrs["allow_immediate_retry"]:
            raise serializers.ValidationError(
                {
                    "retry_delay_minutes": [
                        "Must be at least 1 unless allow_immediate_retry is true."
                    ]
                }
            )
        if attrs["max_delay_minutes"] < attrs["retry_delay_minutes"]:
            raise serializers.ValidationError(
                {"max_delay_minutes": ["Must not be less than retry_delay_minutes."]}
            )
        return attrs

    def to_policy(self) -> RetryPolicy:
        return RetryPolicy(**self.validated_data)


class RetryPlanInputSerializer(StrictSerializer):
    retry_policy = RetryPolicyInputSerializer(required=False)
    provider = StrictCharField(max_length=1000, required=False, allow_blank=True, default="")
    health_id = StrictCharField(max_length=64, required=False, allow_blank=True, default="")


class ScheduleInputSerializer(StrictSerializer):
    interval_minutes = StrictIntegerField(min_value=1, max_value=10080, required=False)
    cadence = StrictCharField(max_length=64, required=False)
    enabled = StrictBooleanField(required=False)


class WorkerRunInputSerializer(StrictSerializer):
    execute = StrictBooleanField(required=False, default=False)
    dry_run = StrictBooleanField(required=False)
    retry_plan_id = StrictCharField(max_length=64, required=False, allow_blank=True, default="")
    retry_policy = RetryPolicyInputSerializer(required=False)
    max_retry_deliveries = StrictIntegerField(min_value=1, max_value=500, default=25)
    provider = StrictCharField(max_length=1000, required=False, allow_blank=True, default="")
    timeout_seconds = StrictIntegerField(min_value=1, max_value=30, default=10)
    schedule = ScheduleInputSerializer(required=False)

    def validate(self, attrs):
        dry_run = attrs.get("dry_run")
        if dry_run is not None and dry_run == attrs["execute"]:
            raise serializers.ValidationError(
                {
                    "dry_run": [
                        "Contradicts execute: a live run needs execute=true (and dry_run false "
                        "or absent); a dry run needs execute false or absent."
                    ]
                }
            )
        if attrs.get("retry_plan_id") and "retry_policy" in attrs:
            raise serializers.ValidationError(
                {"retry_policy": ["Give either retry_plan_id or retry_policy, not both."]}
            )
        return attrs


# -- outputs ----------------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.STR)
class UsernameField(serializers.Field):
    def to_representation(self, value):
        return value.get_username()


class DeliveryEventSerializer(serializers.ModelSerializer):
    ingested_by = UsernameField(read_only=True)

    class Meta:
        model = DeliveryEvent
        fields = [
            "event_id",
            "kind",
            "status",
            "occurred_at",
            "provider",
            "run_id",
            "executive_report_id",
            "schedule_enabled",
            "details",
            "ingested_at",
            "ingested_by",
        ]


class HealthReportSerializer(serializers.ModelSerializer):
    generated_by = UsernameField(read_only=True)

    class Meta:
        model = HealthReport
        fields = [
            "health_id",
            "generated_at",
            "generated_by",
            "alert_level",
            "alert_count",
            "findings",
            "counts",
            "parameters",
        ]


class ConnectorSerializer(serializers.ModelSerializer):
    """Public fields only: the private configuration shows as set/fingerprint/changed-at."""

    config_set = serializers.SerializerMethodField()

    class Meta:
        model = Connector
        fields = [
            "name",
            "kind",
            "enabled",
            "description",
            "accepted_counts_as_delivered",
            "config_set",
            "config_fingerprint",
            "config_changed_at",
            # Per key: its keyed fingerprint and when it changed; never a value.
            "config_fields",
            "created_at",
        ]

    def get_config_set(self, connector) -> bool:
        return bool(connector.config_ciphertext)


class DeliverySummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertDelivery
        fields = ["delivery_id", "provider", "status", "attempt_count"]


class HealthAlertSerializer(serializers.ModelSerializer):
    health_id = serializers.CharField(source="health.health_id", read_only=True)
    created_by = UsernameField(read_only=True)
    deliveries = DeliverySummarySerializer(many=True, read_only=True)

    class Meta:
        model = HealthAlert
        fields = [
            "alert_id",
            "health_id",
            "created_at",
            "created_by",
            "forced",
            "selected_providers",
            "suppressed_providers",
            "deliveries",
        ]


class AlertDeliverySerializer(serializers.ModelSerializer):
    alert_id = serializers.CharField(source="alert.alert_id", read_only=True)
    health_id = serializers.CharField(source="alert.health.health_id", read_only=True)
    in_flight = serializers.SerializerMethodField()

    class Meta:
        model = AlertDelivery
        fields = [
            "delivery_id",
            "alert_id",
            "health_id",
            "provider",
            "status",
            "suppression_reason",
            "suppression_note",
            "attempt_count",
            "last_attempt_at",
            "retry_not_before",
            "delivered_at",
            "created_at",
            "updated_at",
            "in_flight",
        ]

    def get_in_flight(self, delivery) -> bool:
        return delivery.lease_is_held(timezone.now())


class AcknowledgementSerializer(serializers.ModelSerializer):
    alert_id = serializers.CharField(source="alert.alert_id", read_only=True)
    health_id = serializers.CharField(source="health.health_id", read_only=True)
    acknowledgement_state = serializers.CharField(source="state", read_only=True)
    acknowledged_by = UsernameField(read_only=True)

    class Meta:
        model = Acknowledgement
        fields = [
            "ack_id",
            "alert_id",
            "health_id",
            "provider",
            "acknowledgement_state",
            "external_ref",
            "notes",
            "acknowledged_at",
            "acknowledged_by",
        ]


class RetryDecisionSerializer(serializers.ModelSerializer):
    retry_plan_id = serializers.CharField(source="plan.retry_plan_id", read_only=True)
    delivery_id = serializers.CharField(source="delivery.delivery_id", read_only=True)
    alert_id = serializers.CharField(source="delivery.alert.alert_id", read_only=True)
    health_id = serializers.CharField(source="delivery.alert.health.health_id", read_only=True)
    provider = serializers.CharField(source="delivery.provider", read_only=True)
    latest_execution_id = serializers.CharField(
        source="latest_execution.execution_id", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = RetryDecision
        fields = [
            "retry_plan_id",
            "delivery_id",
            "alert_id",
            "health_id",
            "provider",
            "action",
            "reason",
            "status",
            "retry_count",
            "max_retry_attempts",
            "retry_delay_minutes",
            "latest_execution_id",
            "latest_attempt_at",
            "next_retry_at",
            "failed_status_codes",
        ]


class RetryPlanSerializer(serializers.ModelSerializer):
    generated_by = UsernameField(read_only=True)
    retry_policy = serializers.JSONField(source="policy", read_only=True)
    provider = serializers.JSONField(source="provider_filter", read_only=True)
    health_id = serializers.CharField(source="health_filter", read_only=True)

    class Meta:
        model = RetryPlan
        fields = [
            "retry_plan_id",
            "generated_at",
            "generated_by",
            "alert_level",
            "decision_count",
            "retryable_count",
            "waiting_count",
            "suppressed_count",
            "retry_policy",
            "provider",
            "health_id",
        ]


class WorkerRunSerializer(serializers.ModelSerializer):
    started_by = UsernameField(read_only=True)
    retry_plan_id = serializers.CharField(
        source="retry_plan.retry_plan_id", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = WorkerRun
        fields = [
            "run_id",
            "dry_run",
            "status",
            "started_at",
            "finished_at",
            "started_by",
            "retry_plan_id",
            "parameters",
            "schedule",
            "summary",
            "selected_retries",
        ]


class ExecutionRecordSerializer(serializers.ModelSerializer):
    executed_by = UsernameField(read_only=True)
    worker_run_id = serializers.CharField(
        source="worker_run.run_id", read_only=True, default=None, allow_null=True
    )
    retry_plan_id = serializers.CharField(
        source="decision.plan.retry_plan_id", read_only=True, default=None, allow_null=True
    )
    health_id = serializers.CharField(source="delivery.alert.health.health_id", read_only=True)
    alert_id = serializers.CharField(source="delivery.alert.alert_id", read_only=True)
    delivery_id = serializers.CharField(source="delivery.delivery_id", read_only=True)
    public_evidence_refs = serializers.SerializerMethodField()

    class Meta:
        model = ExecutionRecord
        fields = [
            "execution_id",
            "execution_status",
            "skip_reason",
            "executed_at",
            "executed_by",
            "worker_run_id",
            "retry_plan_id",
            "health_id",
            "alert_id",
            "delivery_id",
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
            "public_evidence_refs",
        ]

    def get_public_evidence_refs(self, record) -> list[str]:
        alert = record.delivery.alert
        return [alert.health.health_id, alert.alert_id, record.delivery.delivery_id]


class EvidenceSerializer(serializers.Serializer):
    """The evidence envelope; the fields are listed for the schema, the body is the envelope."""

    sequence = serializers.IntegerField()
    metadata_kind = serializers.CharField()
    session_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    signer = serializers.CharField()
    schema_version = serializers.CharField()
    product = serializers.CharField()
    decision_count = serializers.IntegerField()
    blocked_count = serializers.IntegerField()
    approval_required_count = serializers.IntegerField()
    health_id = serializers.CharField()
    provider = serializers.CharField()
    execution_status = serializers.CharField()
    dry_run = serializers.BooleanField(allow_null=True)
    subject = serializers.DictField()
    payload_sha256 = serializers.CharField()
    previous_hash = serializers.CharField()
    chain_hash = serializers.CharField()

    def to_representation(self, instance: Evidence) -> dict:
        return evidence_envelope(instance)
