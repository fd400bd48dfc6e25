"""The console's action forms.

Each form renders its inputs (with the same bounds and defaults as the API) and, once the
inputs parse, validates them with the input serializer the API uses too (`closure.inputs`), so
the console and the API accept exactly the same requests. Errors land next to the field they
concern. Forms never write: views pass the validated values to the service.
"""

from django import forms
from rest_framework import serializers

from closure.choices import AcknowledgementState, ReviewDecision
from closure.console import selectors
from closure.inputs import serializers as inputs
from closure.services.errors import ServiceError
from closure.services.health import HealthParameters
from closure.services.retries import RetryPolicy

ALL = "all"


def _flatten(errors, prefix: str = ""):
    """(dotted path, message) pairs of a DRF error structure."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(errors, list) and errors and not isinstance(errors[0], str | dict | list):
        for message in errors:
            yield prefix, str(message)
    elif isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict | list):
                yield from _flatten(item, prefix)
            else:
                yield prefix, str(item)
    else:
        yield prefix, str(errors)


class ConsoleForm(forms.Form):
    """A form checked by an API input serializer after its own field validation."""

    input_serializer: type[serializers.Serializer] | None = None
    # API field path → form field, where the names differ.
    field_of_path: dict[str, str] = {}
    validated: dict

    def api_data(self) -> dict:
        return dict(self.cleaned_data)

    def clean(self):
        cleaned = super().clean()
        if self.errors or self.input_serializer is None:
            self.validated = dict(cleaned)
            return cleaned
        serializer = self.input_serializer(data=self.api_data())
        if serializer.is_valid():
            self.validated = dict(serializer.validated_data)
        else:
            for path, message in _flatten(serializer.errors):
                self.add_error(self.field_for(path), message)
        return cleaned

    def field_for(self, path: str) -> str | None:
        if path in self.field_of_path:
            return self.field_of_path[path]
        name = path.split(".")[-1]
        return name if name in self.fields else None

    def add_service_error(self, exc: ServiceError) -> None:
        """A service's refusal, next to the field it names (else above the form)."""
        if not exc.errors:
            self.add_error(None, exc.detail)
            return
        for path, messages in exc.errors.items():
            for message in messages if isinstance(messages, list) else [messages]:
                self.add_error(self.field_for(path), message)


def _report_choices():
    return [(r.health_id, f"{r.health_id} · {r.alert_level}") for r in selectors.recent_reports()]


def _connector_choices():
    return [
        (c.name, f"{c.name} ({c.get_kind_display()}{'' if c.enabled else ', disabled'})")
        for c in selectors.connectors()
    ]


class HealthBuildForm(ConsoleForm):
    input_serializer = inputs.HealthBuildInputSerializer

    expected_interval_minutes = forms.IntegerField(
        min_value=1,
        max_value=10080,
        initial=HealthParameters.expected_interval_minutes,
        help_text="A worker run older than twice this is missed.",
    )
    stale_metadata_minutes = forms.IntegerField(
        min_value=1,
        max_value=43200,
        initial=HealthParameters.stale_metadata_minutes,
        help_text="No upstream retry plan within this window is stale.",
    )


class AlertSendForm(ConsoleForm):
    input_serializer = inputs.AlertDeliverInputSerializer

    health_id = forms.ChoiceField(label="Health report", required=False)
    providers = forms.MultipleChoiceField(
        label="Connectors",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every connector.",
    )
    force = forms.BooleanField(
        required=False,
        help_text="Send even when the report is healthy or the connector was alerted within "
        "the suppression window.",
    )
    suppression_window_minutes = forms.IntegerField(min_value=0, max_value=10080, initial=60)
    field_of_path = {"provider": "providers"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["health_id"].choices = [("", "The latest report"), *_report_choices()]
        self.fields["providers"].choices = _connector_choices()

    def api_data(self) -> dict:
        data = self.cleaned_data
        return {
            "health_id": data["health_id"],
            "provider": ",".join(data["providers"]) or ALL,
            "force": data["force"],
            "suppression_window_minutes": data["suppression_window_minutes"],
        }


class AcknowledgementForm(ConsoleForm):
    input_serializer = inputs.AcknowledgementInputSerializer

    health_id = forms.ChoiceField(label="Health report")
    provider = forms.ChoiceField(label="Connector")
    acknowledgement_state = forms.ChoiceField(
        label="State",
        choices=AcknowledgementState.choices,
        initial=AcknowledgementState.ACKNOWLEDGED,
        help_text="Acknowledged or resolved closes the alert on this connector.",
    )
    external_ref = forms.CharField(
        label="Reference", required=False, max_length=200, help_text="A ticket or incident ID."
    )
    notes = forms.CharField(required=False, max_length=4000, widget=forms.Textarea({"rows": 3}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["health_id"].choices = _report_choices()
        self.fields["provider"].choices = _connector_choices()

    def api_data(self) -> dict:
        return {k: v for k, v in self.cleaned_data.items() if k != "health_id"}

    def clean(self):
        cleaned = super().clean()
        if hasattr(self, "validated") and "health_id" in cleaned:
            self.validated["health_id"] = cleaned["health_id"]
        return cleaned


class WaiveForm(ConsoleForm):
    input_serializer = inputs.WaiveInputSerializer

    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea({"rows": 2}),
        help_text="Recorded as evidence: why this delivery no longer needs to arrive.",
    )


class ManualRetryForm(ConsoleForm):
    input_serializer = inputs.ManualRetryInputSerializer

    timeout_seconds = forms.IntegerField(min_value=1, max_value=30, initial=10)


def _policy_fields():
    policy = RetryPolicy()
    return {
        "max_retry_attempts": forms.IntegerField(
            min_value=1,
            max_value=50,
            initial=policy.max_retry_attempts,
            help_text="Attempts in all, the original send included.",
        ),
        "retry_delay_minutes": forms.FloatField(
            min_value=0, max_value=10080, initial=policy.retry_delay_minutes
        ),
        "backoff_multiplier": forms.FloatField(
            min_value=1.0, max_value=10.0, initial=policy.backoff_multiplier
        ),
        "allow_immediate_retry": forms.BooleanField(
            required=False, help_text="Allow a delay under one minute."
        ),
        "max_delay_minutes": forms.FloatField(
            min_value=0, max_value=43200, initial=policy.max_delay_minutes
        ),
    }


POLICY_FIELDS = tuple(_policy_fields())


class RetryPlanForm(ConsoleForm):
    input_serializer = inputs.RetryPlanInputSerializer

    providers = forms.MultipleChoiceField(
        label="Connectors",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every connector.",
    )
    health_id = forms.ChoiceField(label="Health report", required=False)
    field_of_path = {"provider": "providers"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields.update(_policy_fields())
        self.fields["providers"].choices = _connector_choices()
        self.fields["health_id"].choices = [("", "Every report"), *_report_choices()]
        self.order_fields([*POLICY_FIELDS, "providers", "health_id"])

    def api_data(self) -> dict:
        data = self.cleaned_data
        return {
            "retry_policy": {name: data[name] for name in POLICY_FIELDS},
            "provider": ",".join(data["providers"]),
            "health_id": data["health_id"],
        }


class DryRunForm(ConsoleForm):
    input_serializer = inputs.WorkerRunInputSerializer

    retry_plan_id = forms.ChoiceField(
        label="Retry plan",
        help_text="The dry run shows what a live run of this plan would send now.",
    )
    max_retry_deliveries = forms.IntegerField(min_value=1, max_value=500, initial=25)
    providers = forms.MultipleChoiceField(
        label="Connectors",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every connector.",
    )
    timeout_seconds = forms.IntegerField(min_value=1, max_value=30, initial=10)
    field_of_path = {"provider": "providers"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["retry_plan_id"].choices = [
            (p.retry_plan_id, f"{p.retry_plan_id} · {p.retryable_count} to retry")
            for p in selectors.recent_plans()
        ]
        self.fields["providers"].choices = _connector_choices()

    def api_data(self) -> dict:
        data = self.cleaned_data
        return {
            "execute": False,
            "retry_plan_id": data["retry_plan_id"],
            "max_retry_deliveries": data["max_retry_deliveries"],
            "provider": ",".join(data["providers"]),
            "timeout_seconds": data["timeout_seconds"],
        }


class ExecuteLiveForm(ConsoleForm):
    """The explicit confirmation of a live run: the operator ticks the box after reading the
    list, and the list must still be the one they read (its digest)."""

    confirm = forms.BooleanField(
        label="I have read the list above: send these alerts to their connectors now."
    )
    selection_sha256 = forms.CharField(widget=forms.HiddenInput, max_length=64)


RISK_NOTE_PREFIX = "risk_note__"


class ClosureReviewForm(ConsoleForm):
    input_serializer = inputs.ClosureReviewInputSerializer

    decision = forms.ChoiceField(choices=ReviewDecision.choices, widget=forms.RadioSelect)
    note = forms.CharField(required=False, max_length=4000, widget=forms.Textarea({"rows": 2}))

    def __init__(self, *args, open_items: list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.open_items = list(open_items)
        for code in self.open_items:
            self.fields[RISK_NOTE_PREFIX + code] = forms.CharField(
                label=f"Why accept the open risk {code}",
                required=False,
                max_length=4000,
                widget=forms.Textarea({"rows": 2}),
            )
        self.fields["decision"].initial = (
            ReviewDecision.ACCEPT_OPEN_RISKS if self.open_items else ReviewDecision.CONFIRM_CLOSED
        )

    def risk_note_fields(self):
        return [self[RISK_NOTE_PREFIX + code] for code in self.open_items]

    def api_data(self) -> dict:
        data = self.cleaned_data
        notes = {
            code: data.get(RISK_NOTE_PREFIX + code, "")
            for code in self.open_items
            if data.get(RISK_NOTE_PREFIX + code, "")
        }
        body = {"decision": data["decision"], "note": data["note"]}
        if data["decision"] == ReviewDecision.ACCEPT_OPEN_RISKS:
            body["risk_notes"] = notes
        return body

    def field_for(self, path: str) -> str | None:
        if path.startswith("risk_notes."):
            name = RISK_NOTE_PREFIX + path.removeprefix("risk_notes.")
            return name if name in self.fields else None
        return super().field_for(path)
