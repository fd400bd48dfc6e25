"""Without DJANGO_SECRET_KEY (DEBUG off) nothing is served or signed, but tooling still runs."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    # A clean environment: none of the variables the test settings set for this process.
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "cavra.settings",
        "DATABASE_URL": "sqlite://:memory:",
    }
    return subprocess.run(  # noqa: S603 (fixed arguments)
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def test_makemigrations_check_runs_without_a_secret_key():
    result = _run("manage.py", "makemigrations", "--check", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "No changes detected"


def test_the_wsgi_application_refuses_to_start_without_a_secret_key():
    result = _run("-c", "import cavra.wsgi")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: DJANGO_SECRET_KEY is required when "
        "DJANGO_DEBUG is off (CAVRA_ALLOW_INSECURE_DEV_KEY=1 is for local tests only)."
    )


def test_a_command_that_signs_refuses_an_empty_secret_key():
    result = _run("manage.py", "evidence_public_key")

    assert result.returncode == 1
    assert "ImproperlyConfigured: The SECRET_KEY setting must not be empty." in result.stderr
    assert result.stdout == ""
