"""The auditors' admin: every evidence-bearing record read-only, filtered, linked, exported.

Nobody adds, changes or deletes these records here, superusers included. Every changelist is
built to stay fast on a million rows: no full COUNT(*) (a bounded count), provider filters
whose choices come from the small connector table, a date hierarchy drawn from one MIN/MAX
aggregate, and related columns fetched with the page (`list_select_related`). The filtered
changelist exports as CSV or JSON Lines, streamed, and each export is recorded as evidence
first (`closure.services.admin_exports.admin_export_start`). Imported by `closure.admin`.
"""

from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponseBadRequest, HttpResponseNotAllowed, StreamingHttpResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html

from closure import models
from closure.changelist_export import MEDIA_TYPES, export_chunks
from closure.choices import ExecutionStatus
from closure.paginators import BoundedCountPaginator
from closure.public_ids import public_id_kind
from closure.services.admin_exports import admin_export_start
from closure.services.errors import ServiceError

EXPORT_PERMISSION = "closure.export_evidence"
# Provider filter choices: connector names (a small table), at most this many.
MAX_PROVIDER_CHOICES = 200
# Upstream event providers are free text: the choices are those of the newest events.
RECENT_EVENTS_FOR_PROVIDERS = 1000


def provider_filter(field: str = "provider", *, comma_list: bool = False, recent_model=None):
    """A provider filter whose choices never scan the filtered table.

    Choices are connector names, or for upstream events the providers of the newest events.
    `comma_list`: the field holds a comma list of names (evidence of a send to many).
    """

    class ProviderFilter(admin.SimpleListFilter):
        title = "provider"
        parameter_name = "provider"

        def lookups(self, request, model_admin):
            if recent_model is not None:
                newest = recent_model.objects.order_by("-pk").values_list(field, flat=True)
                names = sorted({n for n in newest[:RECENT_EVENTS_FOR_PROVIDERS] if n})
            else:
                names = models.Connector.objects.order_by("name").values_list("name", flat=True)
                names = list(names[:MAX_PROVIDER_CHOICES])
            return [(name, name) for name in names]

        def queryset(self, request, queryset):
            name = self.value()
            if not name:
                return queryset
            if comma_list:
                return queryset.filter(
                    Q(**{field: name})
                    | Q(**{f"{field}__startswith": f"{name},"})
                    | Q(**{f"{field}__endswith": f",{name}"})
                    | Q(**{f"{field}__contains": f",{name},"})
                )
            return queryset.filter(**{field: name})

    return ProviderFilter


def choices_filter(field: str, choices, title: str):
    """A filter on a free-text field whose values come from `choices`: Django's own filter for
    such a field lists `SELECT DISTINCT` values, a scan of the whole table."""

    class ChoicesFilter(admin.SimpleListFilter):
        parameter_name = field

        def lookups(self, request, model_admin):
            return list(choices)

        def queryset(self, request, queryset):
            value = self.value()
            return queryset.filter(**{field: value}) if value else queryset

    ChoicesFilter.title = title
    return ChoicesFilter


def change_link(obj, text: str | None = None):
    """A link to `obj`'s admin page, or a dash."""
    if obj is None:
        return "—"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text or str(obj))


def changelist_link(model, text: str, **params):
    """A link to `model`'s changelist filtered by `params`."""
    url = reverse(f"admin:closure_{model._meta.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(params), text)


def evidence_link(session_id: str):
    return changelist_link(models.Evidence, "Evidence rows of this record", session_id=session_id)


class BoundedDateChangeList(ChangeList):
    """A date hierarchy link past the calendar's end is an invalid filter, not a crash.

    Django computes the end of the chosen year, month or day by date arithmetic after it has
    checked the date, so `?…__year=9999` (or December 9999) overflowed into a 500; such a
    filter now takes the admin's usual way for invalid filters (a redirect to `?e=1`).
    """

    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError) as exc:
            raise IncorrectLookupParameters(exc) from exc


class BoundedDateHierarchyMixin:
    """For a ModelAdmin: its changelist is a `BoundedDateChangeList`."""

    def get_changelist(self, request, **kwargs):
        return BoundedDateChangeList


def bound_date_hierarchies(site: admin.AdminSite) -> None:
    """Give every admin with a date hierarchy, whoever registered it (django-axes' login
    records too), the changelist that cannot overflow. Called once every admin is registered."""
    for model, model_admin in site._registry.items():
        if model_admin.date_hierarchy and not isinstance(model_admin, BoundedDateHierarchyMixin):
            admin_class = type(model_admin)
            bounded = type(admin_class.__name__, (BoundedDateHierarchyMixin, admin_class), {})
            # Replaced in place: the registry's order is the order of the admin's URLs.
            site._registry[model] = bounded(model, site)


class ReadOnlyAdmin(BoundedDateHierarchyMixin, admin.ModelAdmin):
    """Evidence and records are never added, changed or deleted here, by anyone."""

    show_full_result_count = False
    list_per_page = 50
    paginator = BoundedCountPaginator
    # (header, ORM lookup) of each exported column: public fields only.
    export_columns: list[tuple[str, str]] = []

    def get_search_results(self, request, queryset, search_term):
        """Exact matches that an index answers, never a scan of the table.

        Django's `=field` search is `UPPER(field) = UPPER(term)` ORed over every field, related
        ones joined: no index serves it, so one search read a million rows. Here a term is
        matched exactly (as typed, or in lower case: public IDs and hashes are lower case)
        against this table's own search fields, each indexed, or — when it is a public ID of
        another record — against the related field that holds that kind of ID only.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        fields = [name.removeprefix("=") for name in self.get_search_fields(request)]
        kind = public_id_kind(term)
        related = [
            name
            for name in fields
            if "__" in name and kind is not None and name.rsplit("__", 1)[1] == kind.field
        ]
        searched = related or [name for name in fields if "__" not in name]
        if not searched:
            return queryset.none(), False  # no field of this list can hold that term
        values = sorted({term, term.lower()})
        match = Q()
        for name in searched:
            match |= Q(**{f"{name}__in": values})
        return queryset.filter(match), False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # -- export -------------------------------------------------------------------------------

    def has_export_permission(self, request) -> bool:
        return (
            bool(self.export_columns)
            and self.has_view_permission(request)
            and request.user.has_perm(EXPORT_PERMISSION)
        )

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_export"
        return [
            path("export/", self.admin_site.admin_view(self.export_view), name=name),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        context = {"can_export": self.has_export_permission(request), **(extra_context or {})}
        return super().changelist_view(request, context)

    def export_view(self, request):
        """POST only (an export is recorded): the changelist's filters come in the query
        string, the format in the body. Streams the rows after recording the export."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_export_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("The changelist filters are not valid.")
        query = {key: values for key, values in request.GET.lists() if key not in ("p", "e", "all")}
        try:
            export, rows = admin_export_start(
                actor=request.user,
                export_format=request.POST.get("format", ""),
                queryset=changelist.queryset,
                query=query,
                columns=[header for header, _ in self.export_columns],
            )
        except ServiceError as exc:
            return HttpResponseBadRequest(exc.detail)
        response = StreamingHttpResponse(
            export_chunks(rows, self.export_columns, export.format),
            content_type=MEDIA_TYPES[export.format],
        )
        filename = f"{self.opts.model_name}-{export.export_id}.{export.format}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Admin-Export-Id"] = export.export_id
        response["X-Admin-Export-Rows"] = str(export.row_count)
        return response


@admin.register(models.DeliveryEvent)
class DeliveryEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "kind", "status", "provider", "run_id", "occurred_at"]
    list_filter = [
        "kind",
        "status",
        provider_filter(recent_model=models.DeliveryEvent),
        "occurred_at",
    ]
    search_fields = ["=event_id", "=run_id"]
    date_hierarchy = "occurred_at"
    export_columns = [
        ("event_id", "event_id"),
        ("kind", "kind"),
        ("status", "status"),
        ("occurred_at", "occurred_at"),
        ("provider", "provider"),
        ("run_id", "run_id"),
        ("executive_report_id", "executive_report_id"),
        ("schedule_enabled", "schedule_enabled"),
        ("details", "details"),
        ("body_sha256", "body_sha256"),
        ("ingested_at", "ingested_at"),
        ("ingested_by", "ingested_by__username"),
    ]


@admin.register(models.HealthReport)
class HealthReportAdmin(ReadOnlyAdmin):
    list_display = ["health_id", "alert_level", "alert_count", "generated_at", "generated_by"]
    list_filter = ["alert_level", "generated_at"]
    search_fields = ["=health_id"]
    date_hierarchy = "generated_at"
    list_select_related = ["generated_by"]
    readonly_fields = ["related_records"]
    export_columns = [
        ("health_id", "health_id"),
        ("generated_at", "generated_at"),
        ("generated_by", "generated_by__username"),
        ("alert_level", "alert_level"),
        ("alert_count", "alert_count"),
        ("findings", "findings"),
        ("counts", "counts"),
        ("parameters", "parameters"),
    ]

    @admin.display(description="Related records")
    def related_records(self, obj):
        return format_html(
            "{} · {} · {}",
            changelist_link(models.HealthAlert, "Alerts of this report", health__id__exact=obj.pk),
            changelist_link(models.Acknowledgement, "Acknowledgements", health__id__exact=obj.pk),
            changelist_link(
                models.Evidence, "Evidence rows about this report", health_id=obj.health_id
            ),
        )


@admin.register(models.HealthAlert)
class HealthAlertAdmin(ReadOnlyAdmin):
    list_display = ["alert_id", "health_link", "forced", "created_at", "created_by"]
    list_filter = ["forced", "created_at"]
    search_fields = ["=alert_id", "=health__health_id"]
    date_hierarchy = "created_at"
    list_select_related = ["health", "created_by"]
    readonly_fields = ["related_records"]
    export_columns = [
        ("alert_id", "alert_id"),
        ("health_id", "health__health_id"),
        ("created_at", "created_at"),
        ("created_by", "created_by__username"),
        ("forced", "forced"),
        ("selected_providers", "selected_providers"),
        ("suppressed_providers", "suppressed_providers"),
        ("payload", "payload"),
    ]

    @admin.display(description="health report", ordering="health__generated_at")
    def health_link(self, obj):
        return change_link(obj.health)

    @admin.display(description="Related records")
    def related_records(self, obj):
        return format_html(
            "{} · {} · {}",
            changelist_link(models.AlertDelivery, "Deliveries", alert__id__exact=obj.pk),
            changelist_link(models.Acknowledgement, "Acknowledgements", alert__id__exact=obj.pk),
            evidence_link(obj.alert_id),
        )


@admin.register(models.AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "delivery_id",
        "alert_link",
        "provider",
        "status",
        "attempt_count",
        "created_at",
        "updated_at",
    ]
    list_filter = ["status", provider_filter(), "suppression_reason", "created_at"]
    search_fields = ["=delivery_id", "=alert__alert_id"]
    date_hierarchy = "created_at"
    list_select_related = ["alert"]
    exclude = ["lease_owner", "leased_until", "lease_version"]
    readonly_fields = ["related_records"]
    export_columns = [
        ("delivery_id", "delivery_id"),
        ("alert_id", "alert__alert_id"),
        ("health_id", "alert__health__health_id"),
        ("provider", "provider"),
        ("status", "status"),
        ("suppression_reason", "suppression_reason"),
        ("suppression_note", "suppression_note"),
        ("attempt_count", "attempt_count"),
        ("last_attempt_at", "last_attempt_at"),
        ("retry_not_before", "retry_not_before"),
        ("delivered_at", "delivered_at"),
        ("created_at", "created_at"),
        ("updated_at", "updated_at"),
    ]

    @admin.display(description="alert", ordering="alert__created_at")
    def alert_link(self, obj):
        return change_link(obj.alert)

    @admin.display(description="Related records")
    def related_records(self, obj):
        return format_html(
            "{} · {} · {}",
            changelist_link(
                models.ExecutionRecord, "Execution records", delivery__id__exact=obj.pk
            ),
            changelist_link(models.RetryDecision, "Retry decisions", delivery__id__exact=obj.pk),
            evidence_link(obj.delivery_id),
        )


@admin.register(models.Acknowledgement)
class AcknowledgementAdmin(ReadOnlyAdmin):
    list_display = ["ack_id", "health_link", "provider", "state", "acknowledged_at"]
    list_filter = ["state", provider_filter(), "acknowledged_at"]
    search_fields = ["=ack_id", "=health__health_id"]
    date_hierarchy = "acknowledged_at"
    list_select_related = ["health"]
    readonly_fields = ["related_records"]
    export_columns = [
        ("ack_id", "ack_id"),
        ("alert_id", "alert__alert_id"),
        ("health_id", "health__health_id"),
        ("provider", "provider"),
        ("state", "state"),
        ("external_ref", "external_ref"),
        ("notes", "notes"),
        ("acknowledged_at", "acknowledged_at"),
        ("acknowledged_by", "acknowledged_by__username"),
    ]

    @admin.display(description="health report", ordering="health__generated_at")
    def health_link(self, obj):
        return change_link(obj.health)

    @admin.display(description="Related records")
    def related_records(self, obj):
        return evidence_link(obj.ack_id)


@admin.register(models.RetryPlan)
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
    readonly_fields = ["related_records"]
    export_columns = [
        ("retry_plan_id", "retry_plan_id"),
        ("generated_at", "generated_at"),
        ("generated_by", "generated_by__username"),
        ("alert_level", "alert_level"),
        ("policy", "policy"),
        ("provider_filter", "provider_filter"),
        ("health_filter", "health_filter"),
        ("decision_count", "decision_count"),
        ("retryable_count", "retryable_count"),
        ("waiting_count", "waiting_count"),
        ("suppressed_count", "suppressed_count"),
    ]

    @admin.display(description="Related records")
    def related_records(self, obj):
        return format_html(
            "{} · {} · {}",
            changelist_link(models.RetryDecision, "Decisions", plan__id__exact=obj.pk),
            changelist_link(models.WorkerRun, "Worker runs", retry_plan__id__exact=obj.pk),
            evidence_link(obj.retry_plan_id),
        )


@admin.register(models.RetryDecision)
class RetryDecisionAdmin(ReadOnlyAdmin):
    list_display = ["id", "plan_link", "delivery_link", "action", "reason", "status"]
    list_display_links = ["id"]
    list_filter = ["action", "reason", "status", provider_filter("delivery__provider")]
    search_fields = ["=plan__retry_plan_id", "=delivery__delivery_id"]
    # A decision is made with its plan: the plan's time is the decision's.
    date_hierarchy = "plan__generated_at"
    list_select_related = ["plan", "delivery"]
    export_columns = [
        ("retry_plan_id", "plan__retry_plan_id"),
        ("delivery_id", "delivery__delivery_id"),
        ("provider", "delivery__provider"),
        ("action", "action"),
        ("reason", "reason"),
        ("status", "status"),
        ("retry_count", "retry_count"),
        ("max_retry_attempts", "max_retry_attempts"),
        ("retry_delay_minutes", "retry_delay_minutes"),
        ("next_retry_at", "next_retry_at"),
        ("latest_execution_id", "latest_execution__execution_id"),
        ("latest_attempt_at", "latest_attempt_at"),
        ("failed_status_codes", "failed_status_codes"),
        ("claimed_by_run_id", "claimed_by_run__run_id"),
        ("closed_at", "closed_at"),
    ]

    @admin.display(description="retry plan")
    def plan_link(self, obj):
        return change_link(obj.plan)

    @admin.display(description="delivery")
    def delivery_link(self, obj):
        return change_link(obj.delivery)


@admin.register(models.WorkerRun)
class WorkerRunAdmin(ReadOnlyAdmin):
    list_display = ["run_id", "dry_run", "status", "started_at", "finished_at", "started_by"]
    list_filter = ["dry_run", "status", "started_at"]
    search_fields = ["=run_id"]
    date_hierarchy = "started_at"
    list_select_related = ["started_by"]
    readonly_fields = ["related_records"]
    export_columns = [
        ("run_id", "run_id"),
        ("dry_run", "dry_run"),
        ("status", "status"),
        ("started_at", "started_at"),
        ("finished_at", "finished_at"),
        ("started_by", "started_by__username"),
        ("retry_plan_id", "retry_plan__retry_plan_id"),
        ("parameters", "parameters"),
        ("schedule", "schedule"),
        ("summary", "summary"),
        ("selected_retries", "selected_retries"),
    ]

    @admin.display(description="Related records")
    def related_records(self, obj):
        return format_html(
            "{} · {}",
            changelist_link(
                models.ExecutionRecord, "Execution records", worker_run__id__exact=obj.pk
            ),
            evidence_link(obj.run_id),
        )


@admin.register(models.ExecutionRecord)
class ExecutionRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "execution_id",
        "delivery_link",
        "provider",
        "execution_status",
        "trigger",
        "attempt_number",
        "http_status",
        "error_class",
        "executed_at",
        "worker_run_link",
    ]
    list_filter = [
        "execution_status",
        "trigger",
        "error_class",
        provider_filter(),
        "executed_at",
    ]
    search_fields = ["=execution_id", "=delivery__delivery_id", "=worker_run__run_id"]
    date_hierarchy = "executed_at"
    list_select_related = ["delivery", "worker_run"]
    readonly_fields = ["related_records"]
    export_columns = [
        ("execution_id", "execution_id"),
        ("execution_status", "execution_status"),
        ("executed_at", "executed_at"),
        ("executed_by", "executed_by__username"),
        ("worker_run_id", "worker_run__run_id"),
        ("retry_plan_id", "decision__plan__retry_plan_id"),
        ("health_id", "delivery__alert__health__health_id"),
        ("alert_id", "delivery__alert__alert_id"),
        ("delivery_id", "delivery__delivery_id"),
        ("provider", "provider"),
        ("attempt_number", "attempt_number"),
        ("trigger", "trigger"),
        ("skip_reason", "skip_reason"),
        ("http_status", "http_status"),
        ("error_class", "error_class"),
        ("latency_ms", "latency_ms"),
        ("retry_after_seconds", "retry_after_seconds"),
        ("request_fingerprint", "request_fingerprint"),
        ("response_sha256", "response_sha256"),
        ("execution_hash", "execution_hash"),
    ]

    @admin.display(description="delivery")
    def delivery_link(self, obj):
        return change_link(obj.delivery)

    @admin.display(description="worker run")
    def worker_run_link(self, obj):
        return change_link(obj.worker_run)

    @admin.display(description="Related records")
    def related_records(self, obj):
        return evidence_link(obj.execution_id)


@admin.register(models.Evidence)
class EvidenceAdmin(ReadOnlyAdmin):
    list_display = ["sequence", "metadata_kind", "session_id", "signer", "created_at"]
    list_filter = [
        "metadata_kind",
        provider_filter(comma_list=True),
        "dry_run",
        choices_filter("execution_status", ExecutionStatus.choices, "execution status"),
        "created_at",
    ]
    search_fields = ["=session_id", "=health_id", "=chain_hash", "=signer"]
    date_hierarchy = "created_at"
    readonly_fields = ["subject_record"]
    export_columns = [
        ("sequence", "sequence"),
        ("metadata_kind", "metadata_kind"),
        ("session_id", "session_id"),
        ("created_at", "created_at"),
        ("signer", "signer"),
        ("health_id", "health_id"),
        ("provider", "provider"),
        ("execution_status", "execution_status"),
        ("dry_run", "dry_run"),
        ("decision_count", "decision_count"),
        ("blocked_count", "blocked_count"),
        ("approval_required_count", "approval_required_count"),
        ("payload", "payload"),
        ("payload_sha256", "payload_sha256"),
        ("previous_hash", "previous_hash"),
        ("chain_hash", "chain_hash"),
    ]

    @admin.display(description="Subject record")
    def subject_record(self, obj):
        """The record this row is about, found from its public ID's prefix."""
        kind = public_id_kind(obj.session_id)
        if kind is None:
            return obj.session_id
        from django.apps import apps

        model = apps.get_model("closure", kind.model_name)
        subject = model.objects.filter(**{kind.field: obj.session_id}).first()
        try:
            return change_link(subject, obj.session_id) if subject else obj.session_id
        except NoReverseMatch:
            return obj.session_id


@admin.register(models.EvidenceCheckpoint)
class EvidenceCheckpointAdmin(ReadOnlyAdmin):
    list_display = ["head_sequence", "chain_head", "key_id", "checkpointed_at"]
    # By key: a search, not a list filter (whose choices would be a DISTINCT over the table).
    list_filter = ["checkpointed_at"]
    search_fields = ["=chain_head", "=key_id"]
    date_hierarchy = "checkpointed_at"
    export_columns = [
        ("head_sequence", "head_sequence"),
        ("row_count", "row_count"),
        ("chain_head", "chain_head"),
        ("checkpointed_at", "checkpointed_at"),
        ("key_id", "key_id"),
        ("public_key", "public_key"),
        ("signature", "signature"),
    ]


@admin.register(models.ClosureReview)
class ClosureReviewAdmin(ReadOnlyAdmin):
    list_display = ["review_id", "decision", "closure_state", "alert_level", "reviewed_at"]
    list_filter = ["decision", "closure_state", "reviewed_at"]
    search_fields = ["=review_id", "=snapshot_sha256"]
    date_hierarchy = "reviewed_at"
    list_select_related = ["reviewer"]
    readonly_fields = ["related_records"]
    export_columns = [
        ("review_id", "review_id"),
        ("reviewed_at", "reviewed_at"),
        ("reviewer", "reviewer__username"),
        ("decision", "decision"),
        ("closure_state", "closure_state"),
        ("alert_level", "alert_level"),
        ("open_items", "open_items"),
        ("risk_notes", "risk_notes"),
        ("note", "note"),
        ("snapshot_sha256", "snapshot_sha256"),
    ]

    @admin.display(description="Related records")
    def related_records(self, obj):
        return evidence_link(obj.review_id)
