"""Input serializers of the actions: strict about JSON types, unknown fields and sizes.

Bodies written for the reference implementation are understood where the meaning is the same
(other spellings are aliases) and refused with `reference_field_unsupported` where this product
gives the field no meaning on purpose; docs/migrating-from-reference.md lists every field.
"""

import math

from rest_framework import serializers

from closure.choices import (
    EVENT_STATUSES_BY_KIND,
    AcknowledgementState,
    EventKind,
    EventStatus,
    MetadataKind,
    ReviewDecision,
)
from closure.evidence.canonical import canonical_json
from closure.inputs.fields import (
    AwareDateTimeField,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
)
from closure.services.errors import InvalidInput
from closure.services.events import MAX_BATCH
from closure.services.health import HealthParameters
from closure.services.retries import RetryPolicy

MAX_DETAILS_BYTES = 4096

_ACTOR_IS_AUTHENTICATED = (
    "The actor is the authenticated user: send no {field}; authenticate with your own token "
    "(Authorization: Bearer …) instead."
)
# Reference request fields this product refuses on purpose, with what to send instead.
REFUSED_REFERENCE_FIELDS = {
    "generated_by": _ACTOR_IS_AUTHENTICATED.format(field="generated_by"),
    "actor_claims": _ACTOR_IS_AUTHENTICATED.format(field="actor_claims"),
    "actor_token": _ACTOR_IS_AUTHENTICATED.format(field="actor_token"),
}
REFUSED_WORKER_RUN_FIELDS = {
    **REFUSED_REFERENCE_FIELDS,
    "retries": (
        "Connector calls are not retried inside a run: send no retries; a failed attempt is "
        "planned again by the next retry plan (retry_policy.max_retry_attempts)."
    ),
    "max_alerts": (
        "A retry re-sends the stored alert of its delivery: send no max_alerts; choose the "
        "number of deliveries with max_retry_deliveries."
    ),
}
LIVE_RUN_NEEDS_EXECUTE = (
    'A live run needs "execute": true: send {"execute": true} (dry_run false or absent); '
    '{"dry_run": false} alone is not a live run here.'
)


class ReferenceFieldUnsupported(InvalidInput):
    """A field of the reference implementation whose meaning this product refuses."""

    code = "reference_field_unsupported"
    title = "Reference field not supported"


def refuse_reference_fields(data, refused: dict[str, str]) -> None:
    """Raise `ReferenceFieldUnsupported` naming every refused field present in `data`."""
    if not isinstance(data, dict):
        return
    errors = {name: [refused[name]] for name in sorted(refused) if name in data}
    if errors:
        detail = "; ".join(f"{name}: {messages[0]}" for name, messages in errors.items())
        raise ReferenceFieldUnsupported(detail, errors=errors)


def resolve_aliases(data, aliases: dict[str, str]):
    """`data` with each alias (the reference's spelling) renamed to this product's field.

    Both spellings with the same value are one field; with different values, a 400 naming
    both.
    """
    if not isinstance(data, dict) or not any(alias in data for alias in aliases):
        return data
    resolved = dict(data)
    for alias, name in aliases.items():
        if alias not in resolved:
            continue
        value = resolved.pop(alias)
        if name in resolved and resolved[name] != value:
            message = f"{alias} and {name} are the same field with different values: send {name}."
            raise serializers.ValidationError({alias: [message], name: [message]})
        resolved[name] = value
    return resolved


class WholeSecondsField(StrictFloatField):
    """Seconds as an integer or a float, rounded up to whole seconds (0.1 → 1, 10.0 → 10);
    the range (`min_value`, `max_value`, which the schema shows) applies to the rounded value.
    The messages are an integer field's: the value kept is a whole number of seconds."""

    default_error_messages = {
        "invalid": "A valid integer is required.",
        "not_finite": "Must be a finite number.",
    }

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if not math.isfinite(data):
            self.fail("not_finite")
        return math.ceil(data)


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class DeliveryEventInputSerializer(StrictSerializer):
    # At most 80: the ingest's evidence row is named by its batch's first event_id, and an
    # evidence session_id holds 80 characters (a longer id was a database error on PostgreSQL).
    event_id = StrictCharField(max_length=80)
    kind = serializers.ChoiceField(choices=EventKind.choices)
    status = serializers.ChoiceField(choices=EventStatus.choices)
    occurred_at = AwareDateTimeField(max_days_ahead=1)
    provider = StrictCharField(max_length=64, required=False, allow_blank=True, default="")
    run_id = StrictCharField(max_length=128, required=False, allow_blank=True, default="")
    executive_report_id = StrictCharField(
        max_length=128, required=False, allow_blank=True, default=""
    )
    schedule_enabled = StrictBooleanField(required=False, allow_null=True, default=None)
    details = serializers.DictField(required=False, default=dict)

    def validate_details(self, value):
        encoded = canonical_json(value)
        if len(encoded) > MAX_DETAILS_BYTES:
            raise serializers.ValidationError(f"At most {MAX_DETAILS_BYTES} bytes of JSON.")
        # PostgreSQL's jsonb cannot hold a NUL character (it was a database error there).
        if _has_nul(value):
            raise serializers.ValidationError("Must not contain NUL characters.")
        return value

    def validate(self, attrs):
        allowed = EVENT_STATUSES_BY_KIND[attrs["kind"]]
        if attrs["status"] not in allowed:
            raise serializers.ValidationError(
                {"status": [f"A {attrs['kind']} event is one of: {', '.join(sorted(allowed))}."]}
            )
        return attrs


class DeliveryEventBatchInputSerializer(StrictSerializer):
    events = DeliveryEventInputSerializer(
        many=True, allow_empty=False, min_length=1, max_length=MAX_BATCH
    )


class HealthBuildInputSerializer(StrictSerializer):
    expected_interval_minutes = StrictIntegerField(
        min_value=1, max_value=10080, default=HealthParameters.expected_interval_minutes
    )
    stale_metadata_minutes = StrictIntegerField(
        min_value=1, max_value=43200, default=HealthParameters.stale_metadata_minutes
    )


class AlertDeliverInputSerializer(StrictSerializer):
    health_id = StrictCharField(max_length=64, required=False, allow_blank=True, default="")
    provider = StrictCharField(max_length=1000, required=False, default="all")
    force = StrictBooleanField(required=False, default=False)
    suppression_window_minutes = StrictIntegerField(
        min_value=0, max_value=10080, required=False, default=60
    )


class AcknowledgementInputSerializer(StrictSerializer):
    provider = StrictCharField(max_length=64)
    acknowledgement_state = serializers.ChoiceField(
        choices=AcknowledgementState.choices, default=AcknowledgementState.ACKNOWLEDGED
    )
    external_ref = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    notes = StrictCharField(max_length=4000, required=False, allow_blank=True, default="")


class WaiveInputSerializer(StrictSerializer):
    reason = StrictCharField(max_length=2000)


class ManualRetryInputSerializer(StrictSerializer):
    timeout_seconds = StrictIntegerField(min_value=1, max_value=30, required=False, default=10)


class RetryPolicyInputSerializer(StrictSerializer):
    # The reference implementation's spellings of the same fields.
    aliases = {
        "max_retries": "max_retry_attempts",
        "delay_minutes": "retry_delay_minutes",
        "multiplier": "backoff_multiplier",
    }

    max_retry_attempts = StrictIntegerField(min_value=1, max_value=50, default=3)
    retry_delay_minutes = StrictFloatField(min_value=0, max_value=10080, default=15)
    backoff_multiplier = StrictFloatField(min_value=1.0, max_value=10.0, default=2.0)
    allow_immediate_retry = StrictBooleanField(default=False)
    max_delay_minutes = StrictFloatField(min_value=0, max_value=43200, default=1440)

    def validate(self, attrs):
        if attrs["retry_delay_minutes"] < 1 and not attrs["allow_immediate_retry"]:
            raise serializers.ValidationError(
                {
                    "retry_delay_minutes": [
                        "Must be at least 1 unless allow_immediate_retry is true."
                    ]
                }
            )
        if attrs["max_delay_minutes"] < attrs["retry_delay_minutes"]:
            raise serializers.ValidationError(
                {"max_delay_minutes": ["Must not be less than retry_delay_minutes."]}
            )
        return attrs

    def to_internal_value(self, data):
        return super().to_internal_value(resolve_aliases(data, self.aliases))

    def to_policy(self) -> RetryPolicy:
        return RetryPolicy(**self.validated_data)


class RetryPlanInputSerializer(StrictSerializer):
    retry_policy = RetryPolicyInputSerializer(required=False)
    provider = StrictCharField(max_length=1000, required=False, allow_blank=True, default="")
    health_id = StrictCharField(max_length=64, required=False, allow_blank=True, default="")

    def to_internal_value(self, data):
        refuse_reference_fields(data, REFUSED_REFERENCE_FIELDS)
        return super().to_internal_value(data)


class ScheduleInputSerializer(StrictSerializer):
    aliases = {"schedule_interval_minutes": "interval_minutes"}

    interval_minutes = StrictIntegerField(min_value=1, max_value=10080, required=False)
    cadence = StrictCharField(max_length=64, required=False)
    enabled = StrictBooleanField(required=False)

    def to_internal_value(self, data):
        return super().to_internal_value(resolve_aliases(data, self.aliases))


class WorkerRunInputSerializer(StrictSerializer):
    execute = StrictBooleanField(required=False, default=False)
    dry_run = StrictBooleanField(required=False)
    retry_plan_id = StrictCharField(max_length=64, required=False, allow_blank=True, default="")
    retry_policy = RetryPolicyInputSerializer(required=False)
    max_retry_deliveries = StrictIntegerField(min_value=1, max_value=500, default=25)
    provider = StrictCharField(max_length=1000, required=False, allow_blank=True, default="")
    timeout_seconds = WholeSecondsField(min_value=1, max_value=30, default=10)
    schedule = ScheduleInputSerializer(required=False)

    def to_internal_value(self, data):
        refuse_reference_fields(data, REFUSED_WORKER_RUN_FIELDS)
        return super().to_internal_value(data)

    def validate(self, attrs):
        dry_run = attrs.get("dry_run")
        if dry_run is not None and dry_run == attrs["execute"]:
            contradiction = {
                "dry_run": [
                    "Contradicts execute: a live run needs execute=true (and dry_run false "
                    "or absent); a dry run needs execute false or absent."
                ]
            }
            if dry_run is False:
                # The reference's live switch: refused, so a copied body never runs live.
                raise ReferenceFieldUnsupported(LIVE_RUN_NEEDS_EXECUTE, errors=contradiction)
            raise serializers.ValidationError(contradiction)
        if attrs.get("retry_plan_id") and "retry_policy" in attrs:
            raise serializers.ValidationError(
                {"retry_policy": ["Give either retry_plan_id or retry_policy, not both."]}
            )
        return attrs


class ClosureReviewInputSerializer(StrictSerializer):
    decision = serializers.ChoiceField(choices=ReviewDecision.choices)
    # risk code → why the risk is accepted; required for every open risk of accept_open_risks.
    risk_notes = serializers.DictField(
        child=StrictCharField(max_length=4000, allow_blank=True), required=False, default=dict
    )
    note = StrictCharField(max_length=4000, required=False, allow_blank=True, default="")


class RunbookExportInputSerializer(StrictSerializer):
    """No options: the runbook is built from the current state."""

    def to_internal_value(self, data):
        refuse_reference_fields(data, REFUSED_REFERENCE_FIELDS)
        return super().to_internal_value(data)


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
