"""API for the ledger itself: the export bundle, the public key, the signed checkpoints.

`POST /api/v1/evidence/export/` streams a ZIP bundle (data file + signed manifest);
`GET /api/v1/evidence/public-key/` and `GET /api/v1/evidence/checkpoints/` publish what an
auditor needs to verify offline. `GET /api/v1/evidence/verify/` lives with the evidence list.
"""

import django_filters as filters
from django.http import StreamingHttpResponse
from rest_framework import generics, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from closure.api.fields import (
    AwareDateTimeField,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
)
from closure.api.idempotency import REPLAYED_HEADER, IdempotencyKeyMixin
from closure.api.permissions import requires
from closure.api.renderers import ZipRenderer
from closure.api.views import ApiLoginMixin
from closure.choices import MetadataKind
from closure.evidence.export import ExportFilter, ExportPlan, export_zip_chunks
from closure.evidence.signing import public_key_info
from closure.models import EvidenceCheckpoint
from closure.services.evidence import checkpoint_serialize, evidence_export_start


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


def zip_response(plan: ExportPlan) -> StreamingHttpResponse:
    response = StreamingHttpResponse(export_zip_chunks(plan), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{plan.bundle_name}.zip"'
    response["X-Evidence-Export-Id"] = plan.export_id
    response["X-Evidence-Through-Sequence"] = str(plan.through_sequence)
    return response


class EvidenceExportView(IdempotencyKeyMixin, ApiLoginMixin, APIView):
    """Records the export as evidence, then streams the bundle as a ZIP.

    An `Idempotency-Key` replay streams the same bundle again (the export is deterministic) and
    records nothing.
    """

    permission_classes = [requires("closure.export_evidence", "closure.view_evidence")]
    renderer_classes = [JSONRenderer, ZipRenderer]

    def post(self, request):
        stored = self.idempotency_reserve(request)
        if stored is not None:
            response = zip_response(ExportPlan.from_dict(stored.body["plan"]))
            response[REPLAYED_HEADER] = "true"
            return response
        serializer = EvidenceExportInputSerializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
            data = dict(serializer.validated_data)
            export_format = data.pop("format")
            through = data.pop("through_sequence")
            plan = evidence_export_start(
                actor=request.user,
                export_format=export_format,
                export_filter=ExportFilter(**data),
                through_sequence=through,
            )
        except Exception:
            self.idempotency_release()  # a refused export leaves the key free for a corrected one
            raise
        self.idempotency_store(
            status=200, body={"plan": plan.as_dict()}, content_type="application/zip"
        )
        return zip_response(plan)


class EvidencePublicKeyView(ApiLoginMixin, APIView):
    """The public half of the signing key, and the key IDs whose checkpoints verify."""

    permission_classes = [requires("closure.view_evidence")]

    def get(self, request):
        return Response(public_key_info())


class EvidenceCheckpointSerializer(serializers.BaseSerializer):
    def to_representation(self, instance: EvidenceCheckpoint) -> dict:
        return checkpoint_serialize(instance)


class EvidenceCheckpointFilterSet(filters.FilterSet):
    key_id = filters.CharFilter()
    checkpointed_after = filters.IsoDateTimeFilter(field_name="checkpointed_at", lookup_expr="gte")
    checkpointed_before = filters.IsoDateTimeFilter(field_name="checkpointed_at", lookup_expr="lt")

    class Meta:
        model = EvidenceCheckpoint
        fields = ["key_id"]


class EvidenceCheckpointListView(ApiLoginMixin, generics.ListAPIView):
    """Signed checkpoints, newest head first."""

    permission_classes = [requires("closure.view_evidence")]
    queryset = EvidenceCheckpoint.objects.order_by("-head_sequence", "-id")
    serializer_class = EvidenceCheckpointSerializer
    filterset_class = EvidenceCheckpointFilterSet
