"""API views: authenticate, authorize, validate, call one service, render.

Authentication is DRF's (bearer token or session); the console's login redirect does not apply
here, so every view is marked login-not-required for the middleware and guarded by DRF instead.
"""

import json

from django.contrib.auth.decorators import login_not_required
from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from closure import models
from closure.api import schema as api_schema
from closure.api import serializers as s
from closure.api.filtering import refuse_unknown_query_parameters
from closure.api.idempotency import REPLAYED_HEADER, IdempotencyKeyMixin
from closure.api.permissions import requires
from closure.choices import MetadataKind
from closure.evidence.ledger import evidence_envelope, evidence_verify, evidence_written
from closure.evidence.records import evidence_records_verify, verification_body
from closure.inputs import serializers as i
from closure.inputs.filtersets import (
    AcknowledgementFilterSet,
    AlertDeliveryFilterSet,
    ConnectorFilterSet,
    DeliveryEventFilterSet,
    EvidenceFilterSet,
    ExecutionRecordFilterSet,
    HealthAlertFilterSet,
    HealthReportFilterSet,
    RetryPlanFilterSet,
    WorkerRunFilterSet,
)
from closure.selectors import alert_dashboard, closure_dashboard
from closure.services.alerts import (
    acknowledgement_create,
    delivery_retry_now,
    delivery_waive,
    health_alert_send,
)
from closure.services.attempts import execution_serialize
from closure.services.common import actor_summary
from closure.services.errors import NotFound
from closure.services.events import delivery_events_ingest
from closure.services.health import (
    HealthParameters,
    health_compute,
    health_report_build,
    health_report_serialize,
)
from closure.services.retries import RetryPolicy, retry_plan_create
from closure.services.worker_runs import worker_run_present
from closure.worker import WorkerOptions, worker_run_execute

RETRY_PLAN_SCHEMA_VERSION = (
    "cavra.go-backend-pilot.rollback-drill-executive-health-alert-delivery-retry-plan.v1"
)
RETRY_PLAN_CONTROLS = [
    "Planning calls no connector: it decides, per failed delivery, retry, wait or suppress.",
    "A delivery delivered, acknowledged or waived since its failure is not planned again.",
    "The actor is the authenticated user; no actor field of the request is trusted.",
    "The plan is recorded in the hash-chained evidence ledger; connector secrets never appear.",
]


class ApiLoginMixin:
    @classmethod
    def as_view(cls, *args, **kwargs):
        return login_not_required(super().as_view(*args, **kwargs))


class IdempotentReplay(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class ActionView(IdempotencyKeyMixin, ApiLoginMixin, APIView):
    """An action endpoint: one input serializer, one service.

    POSTs honour an `Idempotency-Key` header: a replay returns the stored response with
    `Idempotent-Replayed: true` and runs nothing.
    """

    # The query parameters a GET of this view reads, besides `format`; any other is a 400.
    # None leaves the check to the filter backend (the views that are lists).
    query_parameters: tuple[str, ...] | None = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method in ("GET", "HEAD") and self.query_parameters is not None:
            refuse_unknown_query_parameters(
                request, {*self.query_parameters, api_settings.URL_FORMAT_OVERRIDE}
            )
        stored = self.idempotency_reserve(request)
        if stored is not None:
            response = Response(stored.body, status=stored.status, content_type=stored.content_type)
            response[REPLAYED_HEADER] = "true"
            raise IdempotentReplay(response)

    def handle_exception(self, exc):
        if isinstance(exc, IdempotentReplay):
            return exc.response
        try:
            return super().handle_exception(exc)
        except Exception:
            # An unhandled error never reaches finalize_response: free the key, as a 5xx does.
            self.idempotency_release()
            raise

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self.idempotency_record is not None:
            self.idempotency_store(
                status=response.status_code,
                body=json.loads(JSONRenderer().render(response.data)),
                content_type=response.content_type or "application/json",
            )
        return response

    def validated(self, serializer_class, data=None):
        serializer = serializer_class(data=self.request.data if data is None else data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def actor(self) -> dict:
        summary = actor_summary(self.request.user)
        summary["authentication"] = "token" if self.request.auth is not None else "session"
        return summary

    def dispatch(self, request, *args, **kwargs):
        # The evidence rows the request's service writes, so its answer needs no re-read.
        with evidence_written() as self.written:
            return super().dispatch(request, *args, **kwargs)

    def written_envelope(self, kind: str, session_id: str) -> dict:
        """The envelope of the evidence row this request's service wrote for `session_id`."""
        for row in reversed(self.written):
            if row.metadata_kind == kind and row.session_id == session_id:
                return evidence_envelope(row)
        raise LookupError(f"the service wrote no {kind} evidence row for {session_id}")

    def changed(
        self,
        body: dict,
        *,
        kind: str,
        session_id: str | None,
        status_code: int = status.HTTP_201_CREATED,
    ) -> Response:
        """The answer to a change: what changed, its evidence envelope (none without a
        `session_id`) and who changed it."""
        metadata = self.written_envelope(kind, session_id) if session_id else None
        return Response({**body, "metadata": metadata, "actor": self.actor()}, status=status_code)


def evidence_for(kind: str, session_id: str) -> dict | None:
    row = models.Evidence.objects.filter(metadata_kind=kind, session_id=session_id).first()
    return evidence_envelope(row) if row else None


def _providers(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def query_bool(request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise ValidationError({name: ["Must be true or false."]})


@extend_schema_view(
    post=extend_schema(
        request=i.DeliveryEventBatchInputSerializer,
        responses={201: api_schema.INGEST_RESPONSE, 200: api_schema.INGEST_RESPONSE},
    )
)
class DeliveryEventIngestView(ActionView):
    permission_classes = [requires("closure.add_deliveryevent")]

    def post(self, request):
        data = self.validated(i.DeliveryEventBatchInputSerializer)
        result = delivery_events_ingest(actor=request.user, events=data["events"])
        code = status.HTTP_201_CREATED if result["created"] else status.HTTP_200_OK
        return Response({**result, "actor": self.actor()}, status=code)


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("preview", OpenApiTypes.BOOL, description="Compute, store nothing")
        ],
        responses={200: api_schema.HEALTH_READ_RESPONSE},
    ),
    post=extend_schema(
        request=i.HealthBuildInputSerializer, responses={201: api_schema.HEALTH_RESPONSE}
    ),
)
class HealthView(ActionView):
    query_parameters = ("preview",)

    def get_permissions(self):
        if self.request.method == "POST":
            return [requires("closure.add_healthreport")()]
        return [requires("closure.view_healthreport")()]

    def get(self, request):
        if query_bool(request, "preview"):
            computed = health_compute(parameters=HealthParameters())
            health = {
                **computed,
                "health_id": None,
                "generated_by": request.user.get_username(),
                "generated_at": computed["generated_at"],
            }
            return Response({"health": health, "preview": True, "stored": False})
        report = (
            models.HealthReport.objects.select_related("generated_by")
            .order_by("-generated_at", "-id")
            .first()
        )
        if report is None:
            raise NotFound("No health report has been built yet.", code="no_health_report")
        return Response(
            {
                "health": health_report_serialize(report),
                "metadata": evidence_for(MetadataKind.HEALTH, report.health_id),
            }
        )

    def post(self, request):
        data = self.validated(i.HealthBuildInputSerializer)
        report = health_report_build(actor=request.user, parameters=HealthParameters(**data))
        return self.changed(
            {"health": health_report_serialize(report)},
            kind=MetadataKind.HEALTH,
            session_id=report.health_id,
        )


@extend_schema_view(
    post=extend_schema(
        request=i.AlertDeliverInputSerializer,
        responses={201: api_schema.ALERT_SEND_RESPONSE, 200: api_schema.ALERT_SEND_RESPONSE},
    )
)
class AlertDeliverView(ActionView):
    permission_classes = [requires("closure.add_healthalert")]

    def post(self, request):
        data = self.validated(i.AlertDeliverInputSerializer)
        result = health_alert_send(
            actor=request.user,
            health_id=data["health_id"] or None,
            provider=data["provider"],
            force=data["force"],
            suppression_window_minutes=data["suppression_window_minutes"],
        )
        if result.alert is None:
            return Response(
                {
                    "alert": None,
                    "deliveries": [],
                    "metadata": None,
                    "success": False,
                    "skipped_reason": result.skipped_reason,
                    "actor": self.actor(),
                },
                status=status.HTTP_200_OK,
            )
        alert = result.alert
        return Response(
            {
                "alert": {
                    "alert_id": alert.alert_id,
                    "health_id": alert.health.health_id,
                    "alert_level": alert.health.alert_level,
                    "created_at": alert.created_at,
                    "forced": alert.forced,
                    "selected_providers": alert.selected_providers,
                    "suppressed_providers": alert.suppressed_providers,
                },
                "deliveries": [
                    {
                        "delivery_id": delivery.delivery_id,
                        "provider": delivery.provider,
                        "status": delivery.status,
                        "execution_record": execution_serialize(record) if record else None,
                    }
                    for delivery, record in result.attempts
                ],
                "metadata": self.written_envelope(MetadataKind.ALERT_PLAN, alert.alert_id),
                "success": result.success,
                "actor": self.actor(),
            },
            status=status.HTTP_201_CREATED,
        )


@extend_schema_view(
    post=extend_schema(
        request=i.AcknowledgementInputSerializer, responses={201: api_schema.ACK_RESPONSE}
    )
)
class AcknowledgementCreateView(ActionView):
    permission_classes = [requires("closure.acknowledge_alert")]

    def post(self, request, health_id: str):
        data = self.validated(i.AcknowledgementInputSerializer)
        ack = acknowledgement_create(
            actor=request.user,
            health_id=health_id,
            provider=data["provider"],
            state=data["acknowledgement_state"],
            external_ref=data["external_ref"],
            notes=data["notes"],
        )
        return self.changed(
            {"acknowledgement": s.AcknowledgementSerializer(ack).data},
            kind=MetadataKind.ALERT_ACK,
            session_id=ack.ack_id,
        )


@extend_schema_view(
    post=extend_schema(request=i.WaiveInputSerializer, responses={200: api_schema.WAIVE_RESPONSE})
)
class DeliveryWaiveView(ActionView):
    permission_classes = [requires("closure.waive_delivery")]

    def post(self, request, delivery_id: str):
        data = self.validated(i.WaiveInputSerializer)
        delivery = delivery_waive(
            actor=request.user, delivery_id=delivery_id, reason=data["reason"]
        )
        return self.changed(
            {"delivery": s.AlertDeliverySerializer(delivery).data},
            kind=MetadataKind.DELIVERY_WAIVER,
            session_id=delivery.delivery_id,
            status_code=status.HTTP_200_OK,
        )


@extend_schema_view(
    post=extend_schema(
        request=i.ManualRetryInputSerializer, responses={201: api_schema.MANUAL_RETRY_RESPONSE}
    )
)
class DeliveryRetryView(ActionView):
    permission_classes = [requires("closure.execute_retry")]

    def post(self, request, delivery_id: str):
        data = self.validated(i.ManualRetryInputSerializer)
        delivery, record = delivery_retry_now(
            actor=request.user, delivery_id=delivery_id, timeout_seconds=data["timeout_seconds"]
        )
        delivery = models.AlertDelivery.objects.select_related("alert__health").get(pk=delivery.pk)
        return self.changed(
            {
                "delivery": s.AlertDeliverySerializer(delivery).data,
                "execution_record": execution_serialize(record) if record else None,
            },
            kind=MetadataKind.EXECUTION_RECORD,
            session_id=record.execution_id if record else None,
        )


@extend_schema_view(get=extend_schema(responses={200: api_schema.ALERT_DASHBOARD_RESPONSE}))
class AlertDashboardView(ActionView):
    query_parameters = ()
    permission_classes = [requires("closure.view_healthalert", "closure.view_alertdelivery")]

    def get(self, request):
        return Response(alert_dashboard())


@extend_schema_view(
    post=extend_schema(
        request=i.RetryPlanInputSerializer, responses={201: api_schema.RETRY_PLAN_RESPONSE}
    )
)
class RetryPlanView(ActionView):
    permission_classes = [requires("closure.plan_retry")]

    def post(self, request):
        data = self.validated(i.RetryPlanInputSerializer)
        policy = RetryPolicy(**data.get("retry_policy", {}))
        plan, public = retry_plan_create(
            actor=request.user,
            policy=policy,
            providers=_providers(data["provider"]),
            health_id=data["health_id"],
        )
        # The reference's plan fields with a true value here; the evidence keeps `public`.
        plan_body = {
            **public,
            "schema_version": RETRY_PLAN_SCHEMA_VERSION,
            "controls": RETRY_PLAN_CONTROLS,
        }
        return self.changed(
            {"plan": plan_body}, kind=MetadataKind.RETRY_PLAN, session_id=plan.retry_plan_id
        )


@extend_schema_view(
    post=extend_schema(
        request=i.WorkerRunInputSerializer, responses={201: api_schema.WORKER_RUN_RESPONSE}
    )
)
class RetryWorkerRunView(ActionView):
    permission_classes = [requires("closure.plan_retry")]

    def post(self, request):
        data = self.validated(i.WorkerRunInputSerializer)
        if data["execute"] and not request.user.has_perm("closure.execute_retry"):
            raise PermissionDenied("A live run needs the execute_retry permission.")
        options = WorkerOptions(
            execute=data["execute"],
            retry_plan_id=data["retry_plan_id"],
            retry_policy=RetryPolicy(**data.get("retry_policy", {})),
            max_retry_deliveries=data["max_retry_deliveries"],
            providers=tuple(_providers(data["provider"])),
            timeout_seconds=data["timeout_seconds"],
            schedule=dict(data.get("schedule", {})),
        )
        outcome = worker_run_execute(actor=request.user, options=options)
        # The execution records' evidence rows this request wrote, by execution_id: each
        # result's `execution_metadata` without a query.
        executions = {
            row.session_id: row
            for row in self.written
            if row.metadata_kind == MetadataKind.EXECUTION_RECORD
        }
        results = [
            {
                "decision": result.decision,
                "execution_record": execution_serialize(result.execution)
                if result.execution
                else None,
                "execution_metadata": evidence_envelope(executions[result.execution.execution_id])
                if result.execution and result.execution.execution_id in executions
                else None,
                "skipped": result.skipped or None,
            }
            for result in outcome.results
        ]
        return Response(
            {
                "run": worker_run_present(
                    outcome.run, follow_up_actions=_follow_up_actions(outcome.run, results)
                ),
                "metadata": evidence_envelope(outcome.run_evidence),
                "retry_metadata": evidence_envelope(outcome.plan_evidence)
                if outcome.plan_evidence
                else None,
                "retry_results": results,
                "actor": self.actor(),
            },
            status=status.HTTP_201_CREATED,
        )


def _follow_up_actions(run, results: list[dict]) -> list[dict]:
    """What became of each decision the run handled: its execution's status, the reason it
    was skipped, or (a dry run) `would_send`."""
    actions = []
    for result in results:
        decision, record = result["decision"], result["execution_record"]
        if record is not None:
            state = record["execution_status"]
        elif result["skipped"]:
            state = f"skipped:{result['skipped']}"
        else:
            state = "would_send" if run.dry_run else "not_sent"
        actions.append(
            {
                "action": decision["action"],
                "provider": decision["provider"],
                "health_id": decision["health_id"],
                "alert_id": decision["alert_id"],
                "delivery_id": decision["delivery_id"],
                "reason": decision["reason"],
                "execution_state": state,
            }
        )
    return actions


@extend_schema_view(get=extend_schema(responses={200: api_schema.CLOSURE_DASHBOARD_RESPONSE}))
class ClosureDashboardView(ActionView):
    query_parameters = ()
    permission_classes = [requires("closure.view_healthreport", "closure.view_alertdelivery")]

    def get(self, request):
        return Response(closure_dashboard())


# -- resource lists ----------------------------------------------------------------------------


class ResourceViewSet(ApiLoginMixin, viewsets.ReadOnlyModelViewSet):
    """Read-only, filterable, paginated, with a stable ordering backed by an index."""


class DeliveryEventViewSet(ResourceViewSet):
    queryset = models.DeliveryEvent.objects.select_related("ingested_by").order_by(
        "-occurred_at", "-id"
    )
    serializer_class = s.DeliveryEventSerializer
    filterset_class = DeliveryEventFilterSet
    lookup_field = "event_id"


class HealthReportViewSet(ResourceViewSet):
    queryset = models.HealthReport.objects.select_related("generated_by").order_by(
        "-generated_at", "-id"
    )
    serializer_class = s.HealthReportSerializer
    filterset_class = HealthReportFilterSet
    lookup_field = "health_id"


class ConnectorViewSet(ResourceViewSet):
    queryset = models.Connector.objects.order_by("name")
    serializer_class = s.ConnectorSerializer
    filterset_class = ConnectorFilterSet
    lookup_field = "name"


class HealthAlertViewSet(ResourceViewSet):
    queryset = (
        models.HealthAlert.objects.select_related("health", "created_by")
        .prefetch_related(
            Prefetch("deliveries", queryset=models.AlertDelivery.objects.order_by("provider", "id"))
        )
        .order_by("-created_at", "-id")
    )
    serializer_class = s.HealthAlertSerializer
    filterset_class = HealthAlertFilterSet
    lookup_field = "alert_id"


class AlertHistoryView(HealthAlertViewSet):
    """GET A: the alert history (the same list as /api/v1/alerts/)."""


class AlertDeliveryViewSet(ResourceViewSet):
    queryset = models.AlertDelivery.objects.select_related("alert__health").order_by(
        "-created_at", "-id"
    )
    serializer_class = s.AlertDeliverySerializer
    filterset_class = AlertDeliveryFilterSet
    lookup_field = "delivery_id"


class AcknowledgementViewSet(ResourceViewSet):
    queryset = models.Acknowledgement.objects.select_related(
        "alert", "health", "acknowledged_by"
    ).order_by("-acknowledged_at", "-id")
    serializer_class = s.AcknowledgementSerializer
    filterset_class = AcknowledgementFilterSet
    lookup_field = "ack_id"


class RetryPlanViewSet(ResourceViewSet):
    queryset = models.RetryPlan.objects.select_related("generated_by").order_by(
        "-generated_at", "-id"
    )
    serializer_class = s.RetryPlanSerializer
    filterset_class = RetryPlanFilterSet
    lookup_field = "retry_plan_id"

    def retrieve(self, request, *args, **kwargs):
        plan = self.get_object()
        decisions = (
            models.RetryDecision.objects.filter(plan=plan)
            .select_related("plan", "delivery__alert__health", "latest_execution")
            .order_by("id")
        )
        return Response(
            {
                **s.RetryPlanSerializer(plan).data,
                "retry_decisions": s.RetryDecisionSerializer(decisions, many=True).data,
            }
        )


class WorkerRunViewSet(ResourceViewSet):
    queryset = models.WorkerRun.objects.select_related("started_by", "retry_plan").order_by(
        "-started_at", "-id"
    )
    serializer_class = s.WorkerRunSerializer
    filterset_class = WorkerRunFilterSet
    lookup_field = "run_id"


class ExecutionRecordViewSet(ResourceViewSet):
    queryset = models.ExecutionRecord.objects.select_related(
        "executed_by", "worker_run", "decision__plan", "delivery__alert__health"
    ).order_by("-executed_at", "-id")
    serializer_class = s.ExecutionRecordSerializer
    filterset_class = ExecutionRecordFilterSet
    lookup_field = "execution_id"


class EvidenceViewSet(ResourceViewSet):
    queryset = models.Evidence.objects.order_by("-sequence")
    serializer_class = s.EvidenceSerializer
    filterset_class = EvidenceFilterSet
    lookup_field = "sequence"

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "records",
                OpenApiTypes.BOOL,
                description="Also check every evidence-bearing record against its latest "
                "evidence row (the answer gains `records`; `ok` then covers both)",
            )
        ],
        responses={200: api_schema.VERIFY_RESPONSE},
    )
    @action(detail=False, methods=["get"], filterset_class=None, pagination_class=None)
    def verify(self, request, format=None):
        """Recompute the chain (streaming) and check the latest signed checkpoint; with
        `?records=true`, also check the records against the ledger."""
        refuse_unknown_query_parameters(request, {"records", api_settings.URL_FORMAT_OVERRIDE})
        records = evidence_records_verify() if query_bool(request, "records") else None
        return Response(verification_body(evidence_verify().as_dict(), records))
