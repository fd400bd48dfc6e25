"""Input serializers of the actions: strict about JSON types, unknown fields and sizes."""

from rest_framework import serializers

from closure.choices import (
    EVENT_STATUSES_BY_KIND,
    AcknowledgementState,
    EventKind,
    EventStatus,
    MetadataKind,
    ReviewDecision,
)
from closure.evidence.canonical import canonical_json
from closure.inputs.fields import (
    AwareDateTimeField,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
)
from closure.services.events import MAX_BATCH
from closure.services.health import HealthParameters
from closure.services.retries import RetryPolicy

MAX_DETAILS_BYTES = 4096


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


class ClosureReviewInputSerializer(StrictSerializer):
    decision = serializers.ChoiceField(choices=ReviewDecision.choices)
    # risk code → why the risk is accepted; required for every open risk of accept_open_risks.
    risk_notes = serializers.DictField(
        child=StrictCharField(max_length=4000, allow_blank=True), required=False, default=dict
    )
    note = StrictCharField(max_length=4000, required=False, allow_blank=True, default="")


class RunbookExportInputSerializer(StrictSerializer):
    """No options: the runbook is built from the current state."""


class EvidenceExportInputSerializer(StrictSerializer):
    format = serializers.ChoiceField(choices=["jsonl", "csv"], default="jsonl")
    metadata_kind = serializers.ChoiceField(
        choices=MetadataKind.choices, required=False, allow_null=True, default=None
    )
    session_id = StrictCharField(max_length=80, required=False, allow_null=True, default=None)
    health_id = StrictCharField(max_length=64, required=False, allow_null=True, default=None)
    provider = StrictCharField(max_length=1000, required=False, allow_null=True, default=None)
    execution_status = StrictCharField(max_length=16, required=False, allow_null=True, default=None)
    signer = StrictCharField(max_length=150, required=False, allow_null=True, default=None)
    dry_run = StrictBooleanField(required=False, allow_null=True, default=None)
    created_after = AwareDateTimeField(required=False, allow_null=True, default=None)
    created_before = AwareDateTimeField(required=False, allow_null=True, default=None)
    sequence_from = StrictIntegerField(min_value=1, required=False, allow_null=True, default=None)
    sequence_to = StrictIntegerField(min_value=1, required=False, allow_null=True, default=None)
    # Reproduce an earlier export: cut the ledger at this sequence (default: the head now).
    through_sequence = StrictIntegerField(
        min_value=0, required=False, allow_null=True, default=None
    )

    def validate(self, attrs):
        after, before = attrs["created_after"], attrs["created_before"]
        if after and before and after >= before:
            raise serializers.ValidationError(
                {"created_before": ["Must be later than created_after."]}
            )
        low, high = attrs["sequence_from"], attrs["sequence_to"]
        if low and high and low > high:
            raise serializers.ValidationError({"sequence_to": ["Must not be below sequence_from."]})
        return attrs
