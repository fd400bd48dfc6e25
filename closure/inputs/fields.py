"""Strict input fields: JSON types are checked, never coerced ("3" is not an integer)."""

from datetime import UTC, datetime, timedelta

from django.utils import timezone
from rest_framework import serializers

# Every time a client sends lies in this window: older or later times are typing errors or
# probes, and at the edges of Python's range (years 1 and 9999) date arithmetic overflows.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictCharField(serializers.CharField):
    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 timestamp that must carry its zone; stored in UTC.

    It lies from `EARLIEST_TIME` up to, not including, `LATEST_TIME`; with `max_days_ahead`,
    also no later than that many days after the server's clock (a fact cannot come from the
    future, beyond clock skew).
    """

    default_error_messages = {
        "naive": "Give a time zone (Z or +hh:mm).",
        "out_of_range": (
            f"Must be from {EARLIEST_TIME:%Y-%m-%dT%H:%M:%SZ} up to, not including, "
            f"{LATEST_TIME:%Y-%m-%dT%H:%M:%SZ}."
        ),
        "future": "Must not be more than {ahead} after the current time.",
    }

    def __init__(self, *, max_days_ahead: int | None = None, **kwargs):
        self.max_days_ahead = max_days_ahead
        super().__init__(**kwargs)

    def to_internal_value(self, value):
        if not isinstance(value, str):
            self.fail("invalid", format="ISO 8601")
        parsed = super().to_internal_value(value)
        if not _has_zone(value):
            self.fail("naive")
        moment = parsed.astimezone(UTC)
        if not EARLIEST_TIME <= moment < LATEST_TIME:
            self.fail("out_of_range")
        if self.max_days_ahead is not None and moment > timezone.now() + timedelta(
            days=self.max_days_ahead
        ):
            days = self.max_days_ahead
            self.fail("future", ahead=f"{days} day" if days == 1 else f"{days} days")
        return moment


def _has_zone(raw: str) -> bool:
    time_part = raw.strip().partition("T")[2] or raw.strip()[10:]
    return time_part.endswith(("Z", "z")) or "+" in time_part or "-" in time_part


class StrictSerializer(serializers.Serializer):
    """Rejects unknown fields and a body that is not a JSON object."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)
