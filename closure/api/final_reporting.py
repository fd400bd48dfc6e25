"""API for the end of the loop: closure reviews, release readiness and the runbook export.

Paths under B = /runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery:
`POST|GET B/final-reporting-closure-reviews`, `GET B/final-reporting-closure-reviews/{id}`,
`GET B/final-reporting-release-readiness`, `POST B/final-reporting-operator-runbook-export`,
and a recorded export again by its id: `GET B/final-reporting-operator-runbook-export/{id}`
(JSON, or Markdown with `?format=markdown`), `…/{id}.md` (Markdown), `…/{id}.html` (printable).
"""

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from closure.api import schema as api_schema
from closure.api.permissions import requires, requires_any
from closure.api.renderers import MarkdownRenderer
from closure.api.serializers import UsernameField
from closure.api.views import ActionView, evidence_for, query_bool
from closure.choices import MetadataKind
from closure.evidence.ledger import evidence_envelope
from closure.inputs.filtersets import ClosureReviewFilterSet
from closure.inputs.serializers import ClosureReviewInputSerializer, RunbookExportInputSerializer
from closure.models import ClosureReview
from closure.models.reviews import REVIEW_OUTCOME_FIELDS
from closure.selectors.readiness import RecordedRunbook, release_readiness, runbook_recorded
from closure.services.errors import NotFound
from closure.services.readiness import runbook_export
from closure.services.reviews import closure_review_create, closure_review_serialize

# -- serializers ------------------------------------------------------------------------------


class ClosureReviewSerializer(serializers.ModelSerializer):
    """A review in a list: everything but the (large) snapshot, which the detail route has."""

    reviewer = UsernameField(read_only=True)

    class Meta:
        model = ClosureReview
        fields = [
            "review_id",
            "reviewed_at",
            "reviewer",
            *REVIEW_OUTCOME_FIELDS,
            "snapshot_sha256",
        ]


# -- views --------------------------------------------------------------------------------------


@extend_schema_view(
    post=extend_schema(
        request=ClosureReviewInputSerializer, responses={201: api_schema.REVIEW_RESPONSE}
    )
)
class ClosureReviewView(ActionView, generics.ListAPIView):
    """`POST` records a review (needs `review_closure`); `GET` lists them, newest first."""

    queryset = ClosureReview.objects.select_related("reviewer").order_by("-reviewed_at", "-id")
    serializer_class = ClosureReviewSerializer
    filterset_class = ClosureReviewFilterSet

    def get_permissions(self):
        if self.request.method == "POST":
            return [requires("closure.review_closure")()]
        return [requires("closure.view_closurereview")()]

    def post(self, request):
        data = self.validated(ClosureReviewInputSerializer)
        review = closure_review_create(
            actor=request.user,
            decision=data["decision"],
            risk_notes=dict(data["risk_notes"]),
            note=data["note"],
        )
        return self.changed(
            {"review": closure_review_serialize(review)},
            kind=MetadataKind.CLOSURE_REVIEW,
            session_id=review.review_id,
        )


@extend_schema_view(get=extend_schema(responses={200: api_schema.REVIEW_READ_RESPONSE}))
class ClosureReviewDetailView(ActionView):
    query_parameters = ()
    permission_classes = [requires("closure.view_closurereview")]

    def get(self, request, review_id: str):
        review = (
            ClosureReview.objects.select_related("reviewer").filter(review_id=review_id).first()
        )
        if review is None:
            raise NotFound(f"closure review {review_id!r} does not exist")
        return Response(
            {
                "review": closure_review_serialize(review),
                "metadata": evidence_for(MetadataKind.CLOSURE_REVIEW, review.review_id),
            }
        )


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter(
                "full",
                OpenApiTypes.BOOL,
                description="Verify the whole evidence chain, not only the rows after "
                "the latest signed checkpoint",
            )
        ],
        responses={200: api_schema.READINESS_RESPONSE},
    )
)
class ReleaseReadinessView(ActionView):
    """No side effects: reads the dashboard, the latest review and the evidence chain (from the
    latest signed checkpoint on; `?full=true` verifies the whole chain)."""

    query_parameters = ("full",)

    permission_classes = [
        requires("closure.view_healthreport", "closure.view_alertdelivery", "closure.view_evidence")
    ]

    def get(self, request):
        return Response(release_readiness(full=query_bool(request, "full")))


RUNBOOK_PERMISSIONS = [
    requires("closure.view_evidence"),
    requires_any("closure.review_closure", "closure.export_evidence"),
]


def runbook_downloads(runbook_id: str) -> dict:
    """Where a recorded runbook downloads again, byte for byte, by its id."""
    return {
        "json": reverse("runbook-detail", kwargs={"runbook_id": runbook_id}),
        "markdown": reverse("runbook-markdown", kwargs={"runbook_id": runbook_id}),
        "printable": reverse("runbook-printable", kwargs={"runbook_id": runbook_id}),
    }


@extend_schema_view(
    post=extend_schema(
        request=RunbookExportInputSerializer,
        responses={
            (201, "application/json"): api_schema.RUNBOOK_RESPONSE,
            (201, "text/markdown"): OpenApiResponse(OpenApiTypes.STR),
        },
    )
)
class RunbookExportView(ActionView):
    """Records the readiness summary and the runbook export as evidence; answers JSON, or the
    runbook as a Markdown attachment with `?format=markdown` or `Accept: text/markdown`.
    `downloads` name the by-id routes that serve this very document again."""

    permission_classes = RUNBOOK_PERMISSIONS
    renderer_classes = [JSONRenderer, MarkdownRenderer]

    def post(self, request):
        self.validated(RunbookExportInputSerializer)
        export = runbook_export(actor=request.user)
        return Response(
            {
                "runbook": export.runbook,
                "readiness": export.readiness,
                "markdown_sha256": export.runbook_evidence.payload["subject"]["markdown_sha256"],
                "metadata": evidence_envelope(export.runbook_evidence),
                "readiness_metadata": evidence_envelope(export.readiness_evidence),
                "downloads": runbook_downloads(export.runbook["runbook_id"]),
                "actor": self.actor(),
            },
            status=status.HTTP_201_CREATED,
        )


# The by-id read's answer (defined here, beside its only view, as closure/api/schema.py does
# for the others): the export's answer without the live readiness and the actor.
RUNBOOK_READ_RESPONSE = api_schema.envelope(
    "RunbookRecordedResponse",
    runbook=serializers.DictField(),
    markdown_sha256=serializers.CharField(),
    metadata=api_schema.EVIDENCE,
    readiness_metadata=api_schema.EVIDENCE,
    downloads=serializers.DictField(),
)


def _markdown_attachment(recorded: RecordedRunbook) -> HttpResponse:
    response = HttpResponse(recorded.markdown.encode(), content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{recorded.runbook["runbook_id"]}.md"'
    return response


@extend_schema_view(
    get=extend_schema(
        responses={
            (200, "application/json"): RUNBOOK_READ_RESPONSE,
            (200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR),
        },
    )
)
class RunbookDocumentView(ActionView):
    """A recorded runbook export again, by its id, as it was recorded: no side effects, and the
    Markdown is the stored document, whose SHA-256 is the export's `markdown_sha256`.

    `document` is set per route: "json" (JSON, or Markdown with `?format=markdown` or
    `Accept: text/markdown`), "markdown" (`….md`) or "printable" (`….html`, the console's
    printable page)."""

    query_parameters = ()
    permission_classes = RUNBOOK_PERMISSIONS
    renderer_classes = [JSONRenderer, MarkdownRenderer]
    document = "json"

    def get(self, request, runbook_id: str):
        recorded = runbook_recorded(runbook_id)
        if recorded is None:
            raise NotFound(f"runbook export {runbook_id!r} does not exist")
        if self.document == "markdown" or request.accepted_renderer.format == "markdown":
            return _markdown_attachment(recorded)
        if self.document == "printable":
            return render(
                request,
                "closure/console/runbook.html",
                {
                    "runbook": recorded.runbook,
                    "runbook_evidence": recorded.runbook_evidence,
                    "readiness_evidence": recorded.readiness_evidence,
                    "nav": "closure",
                },
            )
        return Response(
            {
                "runbook": recorded.runbook,
                "markdown_sha256": recorded.markdown_sha256,
                "metadata": evidence_envelope(recorded.runbook_evidence),
                "readiness_metadata": evidence_envelope(recorded.readiness_evidence),
                "downloads": runbook_downloads(runbook_id),
            }
        )
