"""The auditors' tool: every evidence-bearing record read-only, connectors for platform owners."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

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
from closure.services.connectors import connector_save
from closure.services.errors import ServiceError


class ReadOnlyAdmin(admin.ModelAdmin):
    """Evidence and records are never added, changed or deleted here, by anyone."""

    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DeliveryEvent)
class DeliveryEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "kind", "status", "provider", "run_id", "occurred_at"]
    list_filter = ["kind", "status", "provider", "occurred_at"]
    search_fields = ["=event_id", "=run_id"]
    date_hierarchy = "occurred_at"
    list_select_related = []


@admin.register(HealthReport)
class HealthReportAdmin(ReadOnlyAdmin):
    list_display = ["health_id", "alert_level", "alert_count", "generated_at", "generated_by"]
    list_filter = ["alert_level", "generated_at"]
    search_fields = ["=health_id"]
    date_hierarchy = "generated_at"
    list_select_related = ["generated_by"]


@admin.register(HealthAlert)
class HealthAlertAdmin(ReadOnlyAdmin):
    list_display = ["alert_id", "health", "forced", "created_at", "created_by"]
    list_filter = ["forced", "created_at"]
    search_fields = ["=alert_id", "=health__health_id"]
    date_hierarchy = "created_at"
    list_select_related = ["health", "created_by"]
    exclude = ["payload"]


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["delivery_id", "alert", "provider", "status", "attempt_count", "updated_at"]
    list_filter = ["status", "provider", "suppression_reason", "created_at"]
    search_fields = ["=delivery_id", "=alert__alert_id"]
    date_hierarchy = "created_at"
    list_select_related = ["alert"]


@admin.register(Acknowledgement)
class AcknowledgementAdmin(ReadOnlyAdmin):
    list_display = ["ack_id", "health", "provider", "state", "acknowledged_at"]
    list_filter = ["state", "provider", "acknowledged_at"]
    search_fields = ["=ack_id", "=health__health_id"]
    date_hierarchy = "acknowledged_at"
    list_select_related = ["health"]


@admin.register(RetryPlan)
class RetryPlanAdmin(ReadOnlyAdmin):
    list_display = [
        "retry_plan_id",
        "alert_level",
        "decision_count",
        "retryable_count",
        "waiting_count",
        "suppressed_count",
        "generated_at",
    ]
    list_filter = ["alert_level", "generated_at"]
    search_fields = ["=retry_plan_id"]
    date_hierarchy = "generated_at"


@admin.register(RetryDecision)
class RetryDecisionAdmin(ReadOnlyAdmin):
    list_display = ["plan", "delivery", "action", "reason", "status", "next_retry_at"]
    list_filter = ["action", "reason", "status"]
    search_fields = ["=plan__retry_plan_id", "=delivery__delivery_id"]
    list_select_related = ["plan", "delivery"]


@admin.register(WorkerRun)
class WorkerRunAdmin(ReadOnlyAdmin):
    list_display = ["run_id", "dry_run", "status", "started_at", "finished_at", "started_by"]
    list_filter = ["dry_run", "status", "started_at"]
    search_fields = ["=run_id"]
    date_hierarchy = "started_at"
    list_select_related = ["started_by"]


@admin.register(ExecutionRecord)
class ExecutionRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "execution_id",
        "provider",
        "execution_status",
        "trigger",
        "attempt_number",
        "http_status",
        "error_class",
        "executed_at",
    ]
    list_filter = ["execution_status", "trigger", "error_class", "provider", "executed_at"]
    search_fields = ["=execution_id", "=delivery__delivery_id"]
    date_hierarchy = "executed_at"


@admin.register(Evidence)
class EvidenceAdmin(ReadOnlyAdmin):
    list_display = ["sequence", "metadata_kind", "session_id", "signer", "created_at"]
    list_filter = ["metadata_kind", "dry_run", "execution_status", "created_at"]
    search_fields = ["=session_id", "=health_id", "=chain_hash"]
    date_hierarchy = "created_at"


class ConnectorForm(forms.ModelForm):
    """Secrets are write-only: typed in, never shown back. Blank keeps the stored values."""

    url = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Destination URL. Leave blank to keep the stored one.",
    )
    signing_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Standard Webhooks secret (whsec_…). Leave blank to keep the stored one.",
    )

    class Meta:
        model = Connector
        fields = ["name", "kind", "enabled", "description"]

    def private_config(self) -> dict | None:
        url = self.cleaned_data.get("url")
        secret = self.cleaned_data.get("signing_secret")
        if not url and not secret:
            return None
        config = dict(self.instance.private_config) if self.instance.pk else {}
        if url:
            config["url"] = url
        if secret:
            config["signing_secret"] = secret
        return config


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    form = ConnectorForm
    list_display = ["name", "kind", "enabled", "config_fingerprint", "config_changed_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["=name"]
    readonly_fields = ["config_fingerprint", "config_changed_at", "created_at"]

    def has_delete_permission(self, request, obj=None):
        return False  # deliveries reference connectors; disable one instead

    def save_model(self, request, obj, form, change):
        try:
            saved = connector_save(
                actor=request.user,
                name=form.cleaned_data["name"],
                kind=form.cleaned_data["kind"],
                enabled=form.cleaned_data["enabled"],
                description=form.cleaned_data["description"],
                private_config=form.private_config(),
            )
        except ServiceError as exc:
            raise ValidationError(exc.detail) from exc
        obj.pk = saved.pk
