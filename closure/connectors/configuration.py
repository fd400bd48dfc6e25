"""Write-only editing of a connector's private configuration (the admin form's rules).

A form never shows a stored value. Each input is blank unless the platform owner types a new
value; a blank input keeps what is stored. What a form may show is the status of each key:
"set, changed at …" and a short keyed fingerprint.
"""

from closure.connectors import HANDLERS

# Form inputs per kind. `signing_secret` is a *new* secret: it rotates (the current one stays
# valid as the previous one until it is retired).
FORM_INPUTS: dict[str, tuple[str, ...]] = {
    "webhook": ("url", "signing_secret", "retire_previous_signing_secret"),
    "slack": ("url",),
    "teams": ("url",),
    "pagerduty": ("routing_key", "events_url"),
    "email": ("recipients", "from_email", "smtp_username", "smtp_password"),
}
# Inputs that replace the stored value of the same key when typed.
PLAIN_INPUTS = (
    "url",
    "routing_key",
    "events_url",
    "recipients",
    "from_email",
    "smtp_username",
    "smtp_password",
)
# Keys that are optional for their kind, so a platform owner may clear them.
CLEARABLE_KEYS = (
    ("signing_secrets", "Webhook signing secrets (send unsigned)"),
    ("events_url", "PagerDuty events URL (use CAVRA_PAGERDUTY_EVENTS_URL)"),
    ("from_email", "E-mail sender (use DJANGO_DEFAULT_FROM_EMAIL)"),
    ("smtp_username", "SMTP username and password (use the environment's)"),
)
# Which configuration key a form input writes: errors on a key are shown on its input.
INPUT_OF_KEY = {
    "url": "url",
    "signing_secrets": "signing_secret",
    "signing_secret": "signing_secret",
    "routing_key": "routing_key",
    "events_url": "events_url",
    "recipients": "recipients",
    "from_email": "from_email",
    "smtp_username": "smtp_username",
    "smtp_password": "smtp_password",
}


def inputs_not_for_kind(kind: str, values: dict) -> list[str]:
    """Inputs filled in that the kind does not read (refused rather than silently dropped)."""
    allowed = set(FORM_INPUTS.get(kind, ()))
    return [name for name, value in values.items() if value and name not in allowed]


def config_from_inputs(
    *, kind: str, stored_kind: str | None, stored: dict | None, values: dict, clear: list[str]
) -> dict | None:
    """The configuration to save, or None when the form changes nothing about it.

    Starts from the stored configuration (only when the kind is unchanged and it decrypts),
    clears the keys asked for, then applies every typed input.
    """
    keys = HANDLERS[kind].config_keys
    same_kind = stored_kind == kind and stored is not None
    config = {k: v for k, v in (stored or {}).items() if k in keys} if same_kind else {}
    if "signing_secret" in config:
        single = config.pop("signing_secret")
        config.setdefault("signing_secrets", [single])
    changed = not same_kind
    for key in clear:
        removed = config.pop(key, None)
        if key == "smtp_username":
            removed = config.pop("smtp_password", None) or removed
        changed = changed or removed is not None
    for name in PLAIN_INPUTS:
        if values.get(name):
            config[name] = values[name]
            changed = True
    new_secret = values.get("signing_secret")
    if new_secret:
        previous = [s for s in config.get("signing_secrets", [])[:1] if s != new_secret]
        config["signing_secrets"] = [new_secret, *previous]
        changed = True
    if values.get("retire_previous_signing_secret") and len(config.get("signing_secrets", [])) > 1:
        config["signing_secrets"] = config["signing_secrets"][:1]
        changed = True
    return config if changed else None


def key_status(config_fields: dict, key: str) -> str:
    """ "Set, changed at …, fingerprint …" or "Not set": never the value."""
    status = config_fields.get(key)
    if not status:
        return "Not set."
    changed_at = status.get("changed_at") or "an unknown time"
    return f"Set, changed at {changed_at}, fingerprint {status['fingerprint']}."
