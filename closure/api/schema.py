"""OpenAPI schema hints (drf-spectacular): the bearer token scheme, and the problem+json
errors every operation can answer with."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

PROBLEM = inline_serializer(
    name="Problem",
    fields={
        "type": serializers.URLField(),
        "title": serializers.CharField(),
        "status": serializers.IntegerField(),
        "detail": serializers.CharField(),
        "code": serializers.CharField(),
        "errors": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()), required=False
        ),
    },
)

_COMMON_ERRORS = {
    401: "Authentication required or failed",
    403: "Permission denied",
    429: "Too many requests (see Retry-After)",
    500: "Server error",
    503: "Database unavailable (see Retry-After)",
}
_WRITE_ERRORS = {
    400: "Invalid input",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Body larger than the server reads (the limit is in the detail)",
    415: "Body is not JSON",
    422: "Idempotency-Key reused with another body",
}
_READ_ERRORS = {400: "Invalid query parameter", 404: "Not found", 406: "Not acceptable"}


class ProblemAutoSchema(AutoSchema):
    """Adds the problem+json error responses to every operation."""

    def _map_serializer(self, serializer, direction, bypass_extensions=False):
        # A BaseSerializer that renders a computed dict (the evidence checkpoint) lists no
        # fields: describe it as an open object.
        if not hasattr(serializer, "fields"):
            return {"type": "object", "additionalProperties": {}}
        return super()._map_serializer(serializer, direction, bypass_extensions)

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction != "request" or schema is None:
            return schema
        # What DRF refuses but drf-spectacular leaves out: a blank string where blank is not
        # allowed, an empty list where the list may not be empty.
        if (
            isinstance(field, serializers.CharField)
            and not field.allow_blank
            and schema.get("type") == "string"
            and not {"enum", "format"} & schema.keys()
        ):
            schema.setdefault("minLength", 1)
        if isinstance(field, serializers.ListSerializer | serializers.ListField):
            if field.min_length is not None:
                schema["minItems"] = field.min_length
            elif not field.allow_empty:
                schema["minItems"] = 1
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        return schema

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        errors = dict(_COMMON_ERRORS)
        errors.update(_WRITE_ERRORS if self.method == "POST" else _READ_ERRORS)
        errors[405] = "Method not allowed"
        for status, description in errors.items():
            if str(status) in responses:
                continue
            responses[str(status)] = self._get_response_for_code(
                OpenApiResponse(response=PROBLEM, description=description),
                str(status),
                direction=direction,
            )
            responses[str(status)]["content"] = {
                "application/problem+json": responses[str(status)]["content"][
                    next(iter(responses[str(status)]["content"]))
                ]
            }
        return responses


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "closure.api.authentication.ApiTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (`manage.py create_api_token`), stored only as a hash.",
        }


# Input strings never carry NUL (DRF and Django forms refuse it), and a required string is
# refused when it is blank after trimming: say both, so clients and generated tests know.
# "Blank" is Python's str.strip(), whose whitespace is wider than a JSON Schema (ECMA) `\s`:
# the information separators U+001C-U+001F and U+0085 are listed explicitly.
ANY_TEXT = "^[^\\u0000]*$"
_SOLID = "[^\\s\\u0000\\u001c-\\u001f\\u0085]"
NON_BLANK_TEXT = f"^[^\\u0000]*{_SOLID}[^\\u0000]*$"


def _constrain_strings(node) -> None:
    if isinstance(node, list):
        for item in node:
            _constrain_strings(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not {"enum", "format", "pattern"} & node.keys():
        node["pattern"] = NON_BLANK_TEXT if node.get("minLength", 0) >= 1 else ANY_TEXT
    for value in node.values():
        _constrain_strings(value)


def strict_request_bodies(result, generator, request, public):
    """What the input serializers enforce beyond field types: no unknown fields
    (StrictSerializer), no NUL characters, no blank required strings."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
            _constrain_strings(component)
    for item in result.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                _constrain_strings(parameter["schema"])
    return result


def _object(**kwargs):
    return serializers.DictField(**kwargs)


def envelope(name: str, **fields) -> serializers.Serializer:
    """A named response component: the listed top-level keys, nested objects left open."""
    return inline_serializer(name=name, fields=fields)


ACTOR = inline_serializer(
    name="Actor",
    fields={
        "username": serializers.CharField(),
        "user_id": serializers.IntegerField(),
        "authentication": serializers.ChoiceField(choices=["token", "session"]),
    },
)
EVIDENCE = _object(allow_null=True, help_text="The evidence envelope of the change.")

INGEST_RESPONSE = envelope(
    "DeliveryEventIngestResponse",
    created=serializers.IntegerField(),
    duplicates=serializers.IntegerField(),
    actor=ACTOR,
)
HEALTH_RESPONSE = envelope(
    "HealthReportResponse",
    health=_object(),
    metadata=EVIDENCE,
    actor=ACTOR,
)
HEALTH_READ_RESPONSE = envelope(
    "HealthReportReadResponse",
    health=_object(),
    metadata=_object(required=False, allow_null=True),
    preview=serializers.BooleanField(required=False),
    stored=serializers.BooleanField(required=False),
)
ALERT_SEND_RESPONSE = envelope(
    "AlertSendResponse",
    alert=_object(allow_null=True),
    deliveries=serializers.ListField(child=_object()),
    metadata=EVIDENCE,
    success=serializers.BooleanField(),
    skipped_reason=serializers.CharField(required=False),
    actor=ACTOR,
)
ACK_RESPONSE = envelope(
    "AcknowledgementResponse", acknowledgement=_object(), metadata=EVIDENCE, actor=ACTOR
)
WAIVE_RESPONSE = envelope(
    "DeliveryWaiveResponse", delivery=_object(), metadata=EVIDENCE, actor=ACTOR
)
MANUAL_RETRY_RESPONSE = envelope(
    "DeliveryRetryResponse",
    delivery=_object(),
    execution_record=_object(allow_null=True),
    metadata=EVIDENCE,
    actor=ACTOR,
)
RETRY_PLAN_RESPONSE = envelope("RetryPlanResponse", plan=_object(), metadata=EVIDENCE, actor=ACTOR)
WORKER_RUN_RESPONSE = envelope(
    "RetryWorkerRunResponse",
    run=_object(),
    metadata=EVIDENCE,
    retry_metadata=_object(allow_null=True),
    retry_results=serializers.ListField(child=_object()),
    actor=ACTOR,
)
ALERT_DASHBOARD_RESPONSE = envelope(
    "AlertDashboard",
    alerts=serializers.IntegerField(),
    deliveries=serializers.DictField(child=serializers.IntegerField()),
    acknowledgements=serializers.IntegerField(),
    outstanding_acknowledgements=serializers.IntegerField(),
)
CLOSURE_DASHBOARD_RESPONSE = envelope(
    "ClosureDashboard",
    schema_version=serializers.CharField(),
    generated_at=serializers.DateTimeField(),
    closure_state=serializers.ChoiceField(choices=["closed", "open"]),
    alert_level=serializers.ChoiceField(choices=["healthy", "warning", "critical"]),
    open_item_count=serializers.IntegerField(),
    open_items=serializers.ListField(child=serializers.CharField()),
    risks=serializers.ListField(child=_object()),
    summary=_object(),
    recommended_actions=serializers.ListField(child=serializers.CharField()),
    controls=serializers.ListField(child=serializers.CharField()),
)
VERIFY_RESPONSE = envelope(
    "EvidenceVerification",
    ok=serializers.BooleanField(),
    count=serializers.IntegerField(),
    head=serializers.CharField(allow_null=True),
    first_broken_sequence=serializers.IntegerField(allow_null=True),
    problem=serializers.CharField(allow_null=True),
    checkpoint=_object(allow_null=True),
    external_checkpoints=serializers.ListField(child=_object(), required=False),
    records=inline_serializer(
        name="RecordsVerification",
        required=False,
        fields={
            "ok": serializers.BooleanField(),
            "checked": serializers.DictField(child=serializers.IntegerField()),
            "mismatch_count": serializers.IntegerField(),
            "mismatches": serializers.ListField(
                child=inline_serializer(
                    name="RecordMismatch",
                    fields={
                        "model": serializers.CharField(),
                        "public_id": serializers.CharField(),
                        "fields": serializers.ListField(child=serializers.CharField()),
                        "sequence": serializers.IntegerField(allow_null=True),
                    },
                )
            ),
        },
    ),
)

REVIEW_RESPONSE = envelope(
    "ClosureReviewResponse", review=_object(), metadata=EVIDENCE, actor=ACTOR
)
REVIEW_READ_RESPONSE = envelope("ClosureReviewReadResponse", review=_object(), metadata=EVIDENCE)
READINESS_RESPONSE = envelope(
    "ReleaseReadiness",
    schema_version=serializers.CharField(),
    generated_at=serializers.DateTimeField(),
    readiness_state=serializers.ChoiceField(choices=["ready", "blocked"]),
    release_decision=serializers.CharField(),
    release_decision_reason=serializers.CharField(),
    passed_count=serializers.IntegerField(),
    failed_count=serializers.IntegerField(),
    checks=serializers.ListField(child=_object()),
    closure=_object(),
)
RUNBOOK_RESPONSE = envelope(
    "RunbookExportResponse",
    runbook=_object(),
    readiness=_object(),
    markdown_sha256=serializers.CharField(),
    metadata=EVIDENCE,
    readiness_metadata=EVIDENCE,
    downloads=_object(),
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
