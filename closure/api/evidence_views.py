"""API for the ledger itself: the export bundle, the public key, the signed checkpoints.

`POST /api/v1/evidence/export/` streams a ZIP bundle (data file + signed manifest);
`GET /api/v1/evidence/public-key/` and `GET /api/v1/evidence/checkpoints/` publish what an
auditor needs to verify offline. `GET /api/v1/evidence/verify/` lives with the evidence list.
"""

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from closure.api import schema as api_schema
from closure.api.idempotency import REPLAYED_HEADER, IdempotencyKeyMixin
from closure.api.permissions import requires
from closure.api.renderers import ZipRenderer
from closure.api.views import ApiLoginMixin
from closure.evidence.export import ExportFilter, ExportPlan, export_zip_chunks
from closure.evidence.signing import public_key_info
from closure.inputs.filtersets import EvidenceCheckpointFilterSet
from closure.inputs.serializers import EvidenceExportInputSerializer
from closure.models import EvidenceCheckpoint
from closure.services.evidence import checkpoint_serialize, evidence_export_start


def zip_response(plan: ExportPlan) -> StreamingHttpResponse:
    response = StreamingHttpResponse(export_zip_chunks(plan), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{plan.bundle_name}.zip"'
    response["X-Evidence-Export-Id"] = plan.export_id
    response["X-Evidence-Through-Sequence"] = str(plan.through_sequence)
    return response


@extend_schema_view(
    post=extend_schema(
        request=EvidenceExportInputSerializer,
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The bundle: data file and signed manifest."
            )
        },
    )
)
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


@extend_schema_view(get=extend_schema(responses={200: api_schema.PUBLIC_KEY_RESPONSE}))
class EvidencePublicKeyView(ApiLoginMixin, APIView):
    """The public half of the signing key, and the key IDs whose checkpoints verify."""

    permission_classes = [requires("closure.view_evidence")]

    def get(self, request):
        return Response(public_key_info())


class EvidenceCheckpointSerializer(serializers.BaseSerializer):
    def to_representation(self, instance: EvidenceCheckpoint) -> dict:
        return checkpoint_serialize(instance)


class EvidenceCheckpointListView(ApiLoginMixin, generics.ListAPIView):
    """Signed checkpoints, newest head first."""

    permission_classes = [requires("closure.view_evidence")]
    queryset = EvidenceCheckpoint.objects.order_by("-head_sequence", "-id")
    serializer_class = EvidenceCheckpointSerializer
    filterset_class = EvidenceCheckpointFilterSet
