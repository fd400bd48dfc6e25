"""Schema hints for the ledger's and the final reporting's views, kept apart from those views:
drf-spectacular applies them to the classes named in `target_class`."""

from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers

from closure.api.schema import ACTOR, EVIDENCE, envelope

_open = serializers.DictField

REVIEW_RESPONSE = envelope("ClosureReviewResponse", review=_open(), metadata=EVIDENCE, actor=ACTOR)
REVIEW_READ_RESPONSE = envelope("ClosureReviewReadResponse", review=_open(), metadata=EVIDENCE)
READINESS_RESPONSE = envelope(
    "ReleaseReadiness",
    schema_version=serializers.CharField(),
    generated_at=serializers.DateTimeField(),
    readiness_state=serializers.ChoiceField(choices=["ready", "blocked"]),
    release_decision=serializers.CharField(),
    release_decision_reason=serializers.CharField(),
    passed_count=serializers.IntegerField(),
    failed_count=serializers.IntegerField(),
    checks=serializers.ListField(child=_open()),
    closure=_open(),
)
RUNBOOK_RESPONSE = envelope(
    "RunbookExportResponse",
    runbook=_open(),
    readiness=_open(),
    markdown_sha256=serializers.CharField(),
    metadata=EVIDENCE,
    readiness_metadata=EVIDENCE,
    downloads=_open(),
    actor=ACTOR,
)
PUBLIC_KEY_RESPONSE = envelope(
    "EvidencePublicKey",
    algorithm=serializers.CharField(),
    key_id=serializers.CharField(),
    public_key=serializers.CharField(),
    derived_development_key=serializers.BooleanField(),
    trusted_key_ids=serializers.ListField(child=serializers.CharField()),
)


class ClosureReviewViewSchema(OpenApiViewExtension):
    target_class = "closure.api.final_reporting.ClosureReviewView"

    def view_replacement(self):
        from closure.api.final_reporting import ClosureReviewInputSerializer

        @extend_schema_view(
            post=extend_schema(
                request=ClosureReviewInputSerializer, responses={201: REVIEW_RESPONSE}
            )
        )
        class Fixed(self.target_class):
            pass

        return Fixed


class ClosureReviewDetailViewSchema(OpenApiViewExtension):
    target_class = "closure.api.final_reporting.ClosureReviewDetailView"

    def view_replacement(self):
        @extend_schema_view(get=extend_schema(responses={200: REVIEW_READ_RESPONSE}))
        class Fixed(self.target_class):
            pass

        return Fixed


class ReleaseReadinessViewSchema(OpenApiViewExtension):
    target_class = "closure.api.final_reporting.ReleaseReadinessView"

    def view_replacement(self):
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
                responses={200: READINESS_RESPONSE},
            )
        )
        class Fixed(self.target_class):
            pass

        return Fixed


class RunbookExportViewSchema(OpenApiViewExtension):
    target_class = "closure.api.final_reporting.RunbookExportView"

    def view_replacement(self):
        from closure.api.final_reporting import RunbookExportInputSerializer

        @extend_schema_view(
            post=extend_schema(
                request=RunbookExportInputSerializer,
                responses={
                    (201, "application/json"): RUNBOOK_RESPONSE,
                    (201, "text/markdown"): OpenApiResponse(OpenApiTypes.STR),
                },
            )
        )
        class Fixed(self.target_class):
            pass

        return Fixed


class EvidenceExportViewSchema(OpenApiViewExtension):
    target_class = "closure.api.evidence_views.EvidenceExportView"

    def view_replacement(self):
        from closure.api.evidence_views import EvidenceExportInputSerializer

        @extend_schema_view(
            post=extend_schema(
                request=EvidenceExportInputSerializer,
                responses={
                    (200, "application/zip"): OpenApiResponse(
                        OpenApiTypes.BINARY,
                        description="The bundle: data file and signed manifest.",
                    )
                },
            )
        )
        class Fixed(self.target_class):
            pass

        return Fixed


class EvidencePublicKeyViewSchema(OpenApiViewExtension):
    target_class = "closure.api.evidence_views.EvidencePublicKeyView"

    def view_replacement(self):
        @extend_schema_view(get=extend_schema(responses={200: PUBLIC_KEY_RESPONSE}))
        class Fixed(self.target_class):
            pass

        return Fixed
