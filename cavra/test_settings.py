"""Settings for the test suite: the production settings with test-only switches."""

import os

os.environ.setdefault("CAVRA_ALLOW_INSECURE_DEV_KEY", "1")
os.environ.setdefault("CAVRA_ALLOW_LOOPBACK_CONNECTORS", "1")

from cavra.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
