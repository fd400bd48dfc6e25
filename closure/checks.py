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
    return problems
