"""Query filters that refuse malformed values and unknown parameters instead of ignoring them.

django-filter skips a filter whose value is empty or that its form field cannot read in some
lenient way ("yes" for a boolean, a date without a time). For an auditor, a typo that silently
widens the result is worse than an error: booleans must be `true`/`false`, times RFC 3339 with
a zone (RFC 3339), numbers integers, choices one of the listed values; anything else is a 400,
with the message Django's form field gives for a value it cannot read.
"""

import re
from datetime import UTC, datetime

import django_filters as filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")
_INTEGER = re.compile(r"^-?\d{1,18}$")
_BOOLEANS = {"true", "false"}


def malformed(filter_, raw: str) -> str | None:
    """Why `raw` is not a value of `filter_`, or None when it is well formed."""
    if isinstance(filter_, filters.BooleanFilter):
        return None if raw in _BOOLEANS else "Must be true or false."
    if isinstance(filter_, filters.IsoDateTimeFilter):
        try:
            in_utc(raw)
        except ValueError:
            return "Enter a valid date/time."
        return None if _RFC3339.match(raw) else "Enter a valid date/time."
    if isinstance(filter_, filters.NumberFilter):
        return None if _INTEGER.match(raw) else "Enter a number."
    if isinstance(filter_, filters.ChoiceFilter) and raw == "":
        return "Must be one of the listed values."
    return None


def in_utc(raw: str) -> str:
    """An RFC 3339 time as UTC. RFC 3339 allows offsets up to ±23:59, PostgreSQL only to
    ±15:59, and a time at the edge of year 1 or 9999 leaves Python's range once in UTC: such a
    time is clamped to that edge, which for a range filter means the same thing."""
    moment = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    try:
        return moment.astimezone(UTC).isoformat()
    except OverflowError:
        if moment.year == 1:
            return datetime.min.replace(tzinfo=UTC).isoformat()
        return datetime.max.replace(tzinfo=UTC).isoformat()


class UnknownQueryParameter(ValidationError):
    """A query parameter the endpoint does not read: a misspelt filter (`?stauts=failed`) would
    otherwise be ignored and answer every row."""


def refuse_unknown_query_parameters(request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        message = f"Unknown query parameter. Allowed: {', '.join(sorted(allowed))}."
        raise UnknownQueryParameter({name: [message] for name in unknown})


def allowed_query_parameters(view, filterset_class) -> set[str]:
    """The filters, the paginator's parameters and `format`."""
    allowed = {*filterset_class.base_filters, api_settings.URL_FORMAT_OVERRIDE}
    paginator = getattr(view, "paginator", None)
    for attribute in ("page_query_param", "page_size_query_param"):
        if getattr(paginator, attribute, None):
            allowed.add(getattr(paginator, attribute))
    return allowed


class StrictFilterBackend(DjangoFilterBackend):
    def get_filterset_kwargs(self, request, queryset, view):
        kwargs = super().get_filterset_kwargs(request, queryset, view)
        filterset_class = self.get_filterset_class(view, queryset)
        refuse_unknown_query_parameters(request, allowed_query_parameters(view, filterset_class))
        errors = {}
        data = kwargs["data"].copy()
        for name, filter_ in filterset_class.base_filters.items():
            values = data.getlist(name)
            for raw in values:
                reason = malformed(filter_, raw)
                if reason:
                    errors[name] = [reason]
            if not errors and isinstance(filter_, filters.IsoDateTimeFilter) and values:
                data.setlist(name, [in_utc(raw) for raw in values])
        if errors:
            raise ValidationError(errors)
        kwargs["data"] = data
        return kwargs
