"""Output serializers of the resource lists: the listed fields of each record."""

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from closure import models
from closure.evidence.ledger import evidence_envelope
from closure.models.alerts import DELIVERY_STATE_FIELDS
from closure.models.runs import EXECUTION_OUTCOME_FIELDS
from closure.services.attempts import execution_serialize
from closure.services.events import EVENT_BODY_FIELDS
from closure.services.worker_runs import worker_run_serialize


@extend_schema_field(OpenApiTypes.STR)
class UsernameField(serializers.Field):
    def to_representation(self, value):
        return value.get_username()


class DeliveryEventSerializer(serializers.ModelSerializer):
    ingested_by = UsernameField(read_only=True)

    class Meta:
        model = models.DeliveryEvent
        fields = [*EVENT_BODY_FIELDS, "ingested_at", "ingested_by"]


class HealthReportSerializer(serializers.ModelSerializer):
    generated_by = UsernameField(read_only=True)

    class Meta:
        model = models.HealthReport
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
        model = models.Connector
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
        model = models.AlertDelivery
        fields = ["delivery_id", "provider", "status", "attempt_count"]


class HealthAlertSerializer(serializers.ModelSerializer):
    health_id = serializers.CharField(source="health.health_id", read_only=True)
    created_by = UsernameField(read_only=True)
    deliveries = DeliverySummarySerializer(many=True, read_only=True)

    class Meta:
        model = models.HealthAlert
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
        model = models.AlertDelivery
        fields = [
            "delivery_id",
            "alert_id",
            "health_id",
            "provider",
            *DELIVERY_STATE_FIELDS,
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
        model = models.Acknowledgement
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
        model = models.RetryDecision
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
        model = models.RetryPlan
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


# A worker run as every answer shows it is `worker_run_serialize`, the one representation; the
# fields below describe it to the schema (tests/test_output_representation.py keeps them equal).
class WorkerRunSerializer(serializers.ModelSerializer):
    started_by = UsernameField(read_only=True)
    retry_plan_id = serializers.CharField(
        source="retry_plan.retry_plan_id", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = models.WorkerRun
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

    def to_representation(self, instance):
        return worker_run_serialize(instance)


# An execution record as every answer and its evidence show it is `execution_serialize`, the one
# representation; the fields below describe it to the schema (tests/test_output_representation.py
# keeps them equal).
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
    public_evidence_refs = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = models.ExecutionRecord
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
            *EXECUTION_OUTCOME_FIELDS,
            "public_evidence_refs",
        ]

    def to_representation(self, instance):
        return execution_serialize(instance)


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

    def to_representation(self, instance: models.Evidence) -> dict:
        return evidence_envelope(instance)
