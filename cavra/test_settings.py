"""Settings for the test suite: the production settings with test-only switches."""

import os

os.environ.setdefault("CAVRA_ALLOW_INSECURE_DEV_KEY", "1")
os.environ.setdefault("CAVRA_ALLOW_LOOPBACK_CONNECTORS", "1")
# The test client and the browser tests speak plain HTTP to the test server.
os.environ.setdefault("CAVRA_HTTPS", "0")
# Tests make many POSTs as one user; tests/test_security.py sets a low rate for its own checks.
os.environ.setdefault("CAVRA_API_POST_RATE", "100000/minute")
os.environ.setdefault("CAVRA_LOG_FORMAT", "plain")

from cavra.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The source files as they are: the suite runs without `collectstatic`.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405

# Loopback connectors and the derived connector key are test-only choices here, so their
# production checks would only repeat what these settings deliberately do.
SILENCED_SYSTEM_CHECKS = ["closure.E001", "closure.W001"]
