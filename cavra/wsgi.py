"""WSGI entry point (gunicorn cavra.wsgi)."""

import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cavra.settings")

application = get_wsgi_application()

# Refuse to serve at start-up rather than fail on the first request that signs something.
from django.conf import settings  # noqa: E402 (settings are configured by now)

try:
    settings.SECRET_KEY  # noqa: B018 (Django validates the key on access)
except ImproperlyConfigured as exc:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off "
        "(CAVRA_ALLOW_INSECURE_DEV_KEY=1 is for local tests only)."
    ) from exc
