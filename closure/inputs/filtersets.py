"""One FilterSet per model, shared by the API lists and the console pages."""

import django_filters as filters

from closure import models
from closure.choices import (
    AcknowledgementState,
    AlertLevel,
    ClosureState,
    ConnectorKind,
    DecisionAction,
    DeliveryStatus,
    EventKind,
    EventStatus,
    ExecutionStatus,
    ExecutionTrigger,
    MetadataKind,
    ReviewDecision,
    WorkerRunStatus,
)


def _date_range(field: str):
    return (
        filters.IsoDateTimeFilter(field_name=field, lookup_expr="gte"),
        filters.IsoDateTimeFilter(field_name=field, lookup_expr="lt"),
    )


class DeliveryEventFilterSet(filters.FilterSet):
    kind = filters.ChoiceFilter(choices=EventKind.choices)
    status = filters.ChoiceFilter(choices=EventStatus.choices)
    provider = filters.CharFilter()
    run_id = filters.CharFilter()
    occurred_after, occurred_before = _date_range("occurred_at")

    class Meta:
        model = models.DeliveryEvent
        fields = ["kind", "status", "provider", "run_id"]


class HealthReportFilterSet(filters.FilterSet):
    alert_level = filters.ChoiceFilter(choices=AlertLevel.choices)
    generated_after, generated_before = _date_range("generated_at")

    class Meta:
        model = models.HealthReport
        fields = ["alert_level"]


class ConnectorFilterSet(filters.FilterSet):
    kind = filters.ChoiceFilter(choices=ConnectorKind.choices)
    enabled = filters.BooleanFilter()

    class Meta:
        model = models.Connector
        fields = ["kind", "enabled"]


class HealthAlertFilterSet(filters.FilterSet):
    health_id = filters.CharFilter(field_name="health__health_id")
    provider = filters.CharFilter(field_name="deliveries__provider", distinct=True)
    created_after, created_before = _date_range("created_at")

    class Meta:
        model = models.HealthAlert
        fields = ["health_id", "provider", "forced"]


class AlertDeliveryFilterSet(filters.FilterSet):
    status = filters.ChoiceFilter(choices=DeliveryStatus.choices)
    provider = filters.CharFilter()
    health_id = filters.CharFilter(field_name="alert__health__health_id")
    alert_id = filters.CharFilter(field_name="alert__alert_id")
    created_after, created_before = _date_range("created_at")

    class Meta:
        model = models.AlertDelivery
        fields = ["status", "provider", "health_id", "alert_id"]


class AcknowledgementFilterSet(filters.FilterSet):
    acknowledgement_state = filters.ChoiceFilter(
        field_name="state", choices=AcknowledgementState.choices
    )
    provider = filters.CharFilter()
    health_id = filters.CharFilter(field_name="health__health_id")
    acknowledged_after, acknowledged_before = _date_range("acknowledged_at")

    class Meta:
        model = models.Acknowledgement
        fields = ["acknowledgement_state", "provider", "health_id"]


class RetryPlanFilterSet(filters.FilterSet):
    alert_level = filters.ChoiceFilter(choices=AlertLevel.choices)
    generated_after, generated_before = _date_range("generated_at")
    action = filters.ChoiceFilter(
        field_name="decisions__action", choices=DecisionAction.choices, distinct=True
    )

    class Meta:
        model = models.RetryPlan
        fields = ["alert_level", "action"]


class WorkerRunFilterSet(filters.FilterSet):
    status = filters.ChoiceFilter(choices=WorkerRunStatus.choices)
    dry_run = filters.BooleanFilter()
    started_after, started_before = _date_range("started_at")

    class Meta:
        model = models.WorkerRun
        fields = ["status", "dry_run"]


class ExecutionRecordFilterSet(filters.FilterSet):
    execution_status = filters.ChoiceFilter(choices=ExecutionStatus.choices)
    trigger = filters.ChoiceFilter(choices=ExecutionTrigger.choices)
    provider = filters.CharFilter()
    health_id = filters.CharFilter(field_name="delivery__alert__health__health_id")
    delivery_id = filters.CharFilter(field_name="delivery__delivery_id")
    worker_run_id = filters.CharFilter(field_name="worker_run__run_id")
    error_class = filters.CharFilter()
    executed_after, executed_before = _date_range("executed_at")

    class Meta:
        model = models.ExecutionRecord
        fields = ["execution_status", "trigger", "provider", "health_id", "error_class"]


class EvidenceFilterSet(filters.FilterSet):
    metadata_kind = filters.ChoiceFilter(choices=MetadataKind.choices)
    session_id = filters.CharFilter()
    health_id = filters.CharFilter()
    provider = filters.CharFilter()
    execution_status = filters.CharFilter()
    dry_run = filters.BooleanFilter()
    signer = filters.CharFilter()
    created_after, created_before = _date_range("created_at")
    sequence_from = filters.NumberFilter(field_name="sequence", lookup_expr="gte")
    sequence_to = filters.NumberFilter(field_name="sequence", lookup_expr="lte")

    class Meta:
        model = models.Evidence
        fields = ["metadata_kind", "session_id", "health_id", "provider", "signer"]


class ClosureReviewFilterSet(filters.FilterSet):
    decision = filters.ChoiceFilter(choices=ReviewDecision.choices)
    closure_state = filters.ChoiceFilter(choices=ClosureState.choices)
    reviewer = filters.CharFilter(field_name="reviewer__username")
    reviewed_after, reviewed_before = _date_range("reviewed_at")

    class Meta:
        model = models.ClosureReview
        fields = ["decision", "closure_state", "reviewer"]


class EvidenceCheckpointFilterSet(filters.FilterSet):
    key_id = filters.CharFilter()
    checkpointed_after, checkpointed_before = _date_range("checkpointed_at")

    class Meta:
        model = models.EvidenceCheckpoint
        fields = ["key_id"]
