"""The auditors' tool: every evidence-bearing record read-only, connectors for platform owners.

The read-only record admins (filters, links, bounded counts, CSV/JSON Lines export) live in
`closure.admin_records`, the API tokens (platform owners) in `closure.admin_tokens`;
connectors, edited by platform owners only, are below.
"""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from closure import (
    admin_records,  # noqa: F401 (registers the read-only record admins)
    admin_tokens,  # noqa: F401 (registers the API token admin)
)
from closure.models import Connector
from closure.services.connectors import connector_save
from closure.services.errors import ServiceError


def _secret_input(label: str, help_text: str) -> forms.CharField:
    """Blank on every page: a stored value is never sent back to the browser."""
    return forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label=label,
        help_text=help_text,
    )


class ConnectorForm(forms.ModelForm):
    """Private configuration is write-only: typed in, never shown back.

    Every input is blank; a blank input keeps what is stored. Its help text says whether a
    value is stored, when it changed, and its short keyed fingerprint. Inputs the chosen kind
    does not read are refused.
    """

    url = _secret_input("URL", "Webhook, Slack and Teams: the destination URL.")
    signing_secret = _secret_input(
        "New signing secret",
        "Webhook: a Standard Webhooks secret (whsec_…). Rotates: the current secret stays valid "
        "beside it until the previous one is retired.",
    )
    retire_previous_signing_secret = forms.BooleanField(
        required=False,
        help_text="Webhook: stop signing with the previous secret (end of a rotation).",
    )
    routing_key = _secret_input(
        "Routing key", "PagerDuty: the 32-character Events API v2 integration key."
    )
    events_url = _secret_input(
        "Events API URL", "PagerDuty: only to override CAVRA_PAGERDUTY_EVENTS_URL."
    )
    recipients = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="E-mail: recipient addresses, comma or line separated (replaces the list).",
    )
    from_email = forms.CharField(
        required=False, label="Sender", help_text="E-mail: optional sender address."
    )
    smtp_username = _secret_input(
        "SMTP username",
        "E-mail: optional; replaces the environment's SMTP account for this connector.",
    )
    smtp_password = _secret_input("SMTP password", "E-mail: the password of that SMTP account.")
    clear_config_keys = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Clear stored values",
    )

    class Meta:
        model = Connector
        fields = ["name", "kind", "enabled", "description", "accepted_counts_as_delivered"]

    def __init__(self, *args, **kwargs):
        from closure.connectors.configuration import CLEARABLE_KEYS, INPUT_OF_KEY, key_status

        super().__init__(*args, **kwargs)
        self.fields["clear_config_keys"].choices = CLEARABLE_KEYS
        self.private_config_value: dict | None = None
        status = self.instance.config_fields if self.instance.pk else {}
        for key, input_name in INPUT_OF_KEY.items():
            if key == "signing_secret":
                continue
            field = self.fields[input_name]
            field.help_text = f"{field.help_text} {key_status(status, key)}"
        if "signing_secrets" in status:
            self.fields["signing_secret"].help_text += " Blank keeps the stored secrets."

    def clean(self):
        from closure.connectors.configuration import (
            FORM_INPUTS,
            INPUT_OF_KEY,
            config_from_inputs,
            inputs_not_for_kind,
        )
        from closure.keyring import ConnectorConfigError
        from closure.services.connectors import connector_validate

        cleaned = super().clean()
        kind = cleaned.get("kind")
        if not kind:
            return cleaned
        inputs = {name: cleaned.get(name) for names in FORM_INPUTS.values() for name in names}
        for name in inputs_not_for_kind(kind, inputs):
            self.add_error(name, f"Not used by a {kind} connector.")
            inputs[name] = None
        stored = None
        if self.instance.pk and self.instance.config_ciphertext:
            try:
                stored = self.instance.private_config
            except ConnectorConfigError:
                stored = None  # unreadable: the whole configuration must be typed anew
        config = config_from_inputs(
            kind=kind,
            stored_kind=self.initial.get("kind") if self.instance.pk else None,
            stored=stored if self.instance.pk else None,
            values=inputs,
            clear=cleaned.get("clear_config_keys") or [],
        )
        try:
            self.private_config_value = connector_validate(
                kind=kind,
                accepted_counts_as_delivered=bool(cleaned.get("accepted_counts_as_delivered")),
                private_config=config,
            )
        except ServiceError as exc:
            for path, messages in exc.errors.items():
                key = path.removeprefix("config.")
                target = INPUT_OF_KEY.get(key, key)
                self.add_error(target if target in self.fields else None, messages)
        return cleaned


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    """Platform owners (add/change_connector) edit connectors; everyone else may only view.

    Saves go through `connector_save`, which writes the evidence row in the same transaction.
    """

    form = ConnectorForm
    show_full_result_count = False
    list_display = [
        "name",
        "kind",
        "enabled",
        "accepted_counts_as_delivered",
        "config_fingerprint",
        "config_changed_at",
    ]
    list_filter = ["kind", "enabled"]
    search_fields = ["=name"]
    readonly_fields = ["stored_configuration", "config_fingerprint", "config_changed_at"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "enabled", "description"]}),
        ("Teams", {"fields": ["accepted_counts_as_delivered"]}),
        (
            "Stored configuration (values are never shown)",
            {"fields": ["stored_configuration", "config_fingerprint", "config_changed_at"]},
        ),
        ("Destination", {"fields": ["url"]}),
        ("Webhook signing", {"fields": ["signing_secret", "retire_previous_signing_secret"]}),
        ("PagerDuty", {"fields": ["routing_key", "events_url"]}),
        ("E-mail", {"fields": ["recipients", "from_email", "smtp_username", "smtp_password"]}),
        ("Clear", {"fields": ["clear_config_keys"]}),
    ]

    @admin.display(description="Stored values")
    def stored_configuration(self, obj):
        from django.utils.html import format_html_join

        from closure.connectors.configuration import key_status

        if not obj or not obj.config_fields:
            return "Nothing stored."
        return format_html_join(
            "",
            "<div><strong>{}</strong>: {}</div>",
            ((key, key_status(obj.config_fields, key)) for key in sorted(obj.config_fields)),
        )

    def get_fieldsets(self, request, obj=None):
        if obj is not None and not self.has_change_permission(request, obj):
            return self.fieldsets[:3]  # viewers see the public fields and the status only
        return self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        # The name is the API's `provider` and is recorded in deliveries and evidence.
        return [*self.readonly_fields, "name"] if obj is not None else self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False  # deliveries reference connectors; disable one instead

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # connector_save commits the change and its evidence in its own durable transaction;
        # the admin's usual outer transaction would nest it.
        return self._changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        try:
            saved = connector_save(
                actor=request.user,
                name=obj.name,
                kind=form.cleaned_data["kind"],
                enabled=form.cleaned_data["enabled"],
                description=form.cleaned_data["description"],
                accepted_counts_as_delivered=form.cleaned_data["accepted_counts_as_delivered"],
                private_config=form.private_config_value,
            )
        except ServiceError as exc:
            raise ValidationError(exc.detail) from exc
        obj.pk = saved.pk
        obj.refresh_from_db()


# Last, when every app's admin is registered (closure is the last installed app).
admin_records.bound_date_hierarchies(admin.site)
