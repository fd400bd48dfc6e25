"""System checks that refuse unsafe production settings."""

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def connector_safety(app_configs, **kwargs):
    problems = []
    if settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS and not settings.DEBUG:
        problems.append(
            Error(
                "CAVRA_ALLOW_LOOPBACK_CONNECTORS is on while DEBUG is off.",
                hint="Loopback destinations are for tests and the demo only.",
                id="closure.E001",
            )
        )
    if not settings.CAVRA_CONNECTOR_KEYS and not settings.DEBUG:
        problems.append(
            Warning(
                "CAVRA_CONNECTOR_KEYS is not set; connector secrets are encrypted with a key "
                "derived from SECRET_KEY.",
                hint="Set CAVRA_CONNECTOR_KEYS to one or more Fernet keys, newest first.",
                id="closure.W001",
            )
        )
    if settings.CAVRA_RETRY_AFTER_MAX_SECONDS < 0:
        problems.append(
            Error(
                "CAVRA_RETRY_AFTER_MAX_SECONDS is negative.",
                hint="Set the longest Retry-After to honour, in seconds (0 ignores it).",
                id="closure.E002",
            )
        )
    options = getattr(settings, "MAILERS", {}).get("default", {}).get("OPTIONS", {})
    if options.get("use_tls") and options.get("use_ssl"):
        problems.append(
            Error(
                "DJANGO_EMAIL_USE_TLS and DJANGO_EMAIL_USE_SSL are both on.",
                hint="STARTTLS (port 587) or implicit TLS (port 465): choose one.",
                id="closure.E003",
            )
        )
    return problems


@register()
def evidence_signing_key(app_configs, **kwargs):
    from closure.evidence.chain import SigningKeyError, private_key_from_b64, public_key_from_b64

    problems = []
    if settings.CAVRA_EVIDENCE_SIGNING_KEY:
        try:
            private_key_from_b64(settings.CAVRA_EVIDENCE_SIGNING_KEY)
        except SigningKeyError as exc:
            problems.append(
                Error(
                    f"CAVRA_EVIDENCE_SIGNING_KEY is not usable: {exc}.",
                    hint="Generate one with `manage.py evidence_keygen` (docs/evidence.md).",
                    id="closure.E010",
                )
            )
    elif not settings.DEBUG:
        problems.append(
            Warning(
                "CAVRA_EVIDENCE_SIGNING_KEY is not set; checkpoints and exports are signed with "
                "a key derived from SECRET_KEY.",
                hint="Generate a key with `manage.py evidence_keygen` (docs/evidence.md).",
                id="closure.W010",
            )
        )
    for text in settings.CAVRA_EVIDENCE_TRUSTED_PUBLIC_KEYS:
        try:
            public_key_from_b64(text)
        except SigningKeyError as exc:
            problems.append(
                Error(
                    f"CAVRA_EVIDENCE_TRUSTED_PUBLIC_KEYS holds an unusable key: {exc}.",
                    id="closure.E011",
                )
            )
    return problems
