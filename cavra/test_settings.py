"""Settings for the test suite: the production settings with test-only switches."""

import os

os.environ.setdefault("CAVRA_ALLOW_INSECURE_DEV_KEY", "1")
os.environ.setdefault("CAVRA_ALLOW_LOOPBACK_CONNECTORS", "1")

from cavra.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Loopback connectors and the derived connector key are test-only choices here, so their
# production checks would only repeat what these settings deliberately do.
SILENCED_SYSTEM_CHECKS = ["closure.E001", "closure.W001"]
