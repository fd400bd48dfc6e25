"""Shared fixtures: users in each role, API clients, a real local HTTP receiver."""

import os

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from closure.roles import AUDITORS, OPERATORS, PLATFORM_OWNERS, sync_roles
from tests.factories import make_connector, make_user

B = "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
R = f"{B}/recovery-executive-report"
A = f"{R}/delivery-retry-health-alerts"


def using_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def pytest_collection_modifyitems(config, items):
    """PostgreSQL-only tests skip on SQLite, unless the run must be on PostgreSQL."""
    if os.environ.get("CAVRA_REQUIRE_POSTGRES") == "1" and not using_postgres():
        raise pytest.UsageError("CAVRA_REQUIRE_POSTGRES=1 but DATABASE_URL is not PostgreSQL")
    if using_postgres():
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL=postgres://…)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def roles(db):
    # Transactional tests flush the groups the migration created; put them back.
    sync_roles(Group, Permission)


@pytest.fixture
def operator(roles):
    return make_user("olivia", OPERATORS)


@pytest.fixture
def auditor(roles):
    return make_user("arthur", AUDITORS)


@pytest.fixture
def platform_owner(roles):
    return make_user("petra", PLATFORM_OWNERS)


@pytest.fixture
def outsider(roles):
    return make_user("nobody")


@pytest.fixture
def planner_only(roles):
    """An operator-like user who may plan and dry-run but not execute live."""
    user = make_user("paula")
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="closure",
            codename__in=["plan_retry", "view_retryplan", "view_workerrun"],
        )
    )
    return user


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def api(operator) -> APIClient:
    return client_for(operator)


@pytest.fixture
def receiver(httpserver):
    """A real HTTP server on loopback standing in for the webhook receiver."""
    return httpserver


@pytest.fixture
def webhook(receiver):
    return make_connector("ops-webhook", receiver.url_for("/hook"))


# -- helpers and fixtures for the API tests of bad input, lists and permissions ----------------
# (added with tests/test_bad_input.py, tests/test_api_lists.py and tests/test_permissions.py)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://cavra.invalid/problems/"


def closure_counts() -> dict[str, int]:
    """Rows of every closure model, Evidence included: compared before and after a request
    to show that a refused request wrote nothing."""
    from django.apps import apps

    return {
        model.__name__: model.objects.count()
        for model in apps.get_app_config("closure").get_models()
    }


def assert_problem(response, *, status, code, title, detail, errors=None) -> None:
    """The response is exactly this RFC 9457 problem (with `errors` for validation errors)."""
    expected = {
        "type": PROBLEM_TYPE_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        expected["errors"] = errors
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert response.json() == expected


def assert_invalid(response, errors: dict[str, list[str]]) -> None:
    """A 400 validation problem naming exactly these dotted field paths and messages."""
    assert_problem(
        response,
        status=400,
        code="validation_error",
        title="Invalid input",
        detail="; ".join(f"{path}: {messages[0]}" for path, messages in errors.items()),
        errors=errors,
    )


@pytest.fixture
def report(operator):
    """A stored critical health report, built directly (no upstream events needed)."""
    from tests.factories import make_health_report

    return make_health_report(actor=operator)


@pytest.fixture
def offline_webhook(db):
    """A webhook connector whose receiver is never called by the tests that use it."""
    return make_connector("exec-webhook", "https://hooks.example.invalid/exec/secret-path")


@pytest.fixture
def failed_delivery(operator, report, offline_webhook):
    """A delivery whose first attempt failed an hour ago (so a retry is due)."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import make_alert, make_delivery, make_execution

    an_hour_ago = timezone.now() - timedelta(hours=1)
    alert = make_alert(
        report=report, actor=operator, created_at=an_hour_ago, providers=["exec-webhook"]
    )
    delivery = make_delivery(alert=alert, connector=offline_webhook, created_at=an_hour_ago)
    make_execution(delivery=delivery, actor=operator, executed_at=an_hour_ago)
    return delivery


@pytest.fixture
def due_retry(operator, report, webhook):
    """A failed delivery to the live local receiver, with a pending `retry` decision that is due.

    Returns the plan; a live run of it would call the receiver.
    """
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import (
        make_alert,
        make_decision,
        make_delivery,
        make_execution,
        make_retry_plan,
    )

    an_hour_ago = timezone.now() - timedelta(hours=1)
    alert = make_alert(report=report, actor=operator, created_at=an_hour_ago)
    delivery = make_delivery(alert=alert, connector=webhook, created_at=an_hour_ago)
    make_execution(delivery=delivery, actor=operator, executed_at=an_hour_ago)
    plan = make_retry_plan(actor=operator, alert_level="critical")
    make_decision(plan=plan, delivery=delivery, next_retry_at=an_hour_ago + timedelta(minutes=15))
    return plan


# -- connectors: a network spy with a fake resolver, mail servers, a superuser ---------------
# (added with tests/test_connector_kinds.py, tests/test_destination_policy.py,
# tests/test_connector_config.py and tests/test_secret_canary.py)


class NetworkSpy:
    """Every name resolution and socket connect made during a test (both still happen for
    real), plus `fake_dns`: names answered with chosen addresses, as a hostile resolver would."""

    def __init__(self) -> None:
        self.resolved: list[str] = []
        self.connects: list = []
        self.fake_dns: dict[str, list[str]] = {}


@pytest.fixture
def network_spy(monkeypatch):
    import socket

    spy = NetworkSpy()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host, port, *args, **kwargs):
        spy.resolved.append(host)
        if host in spy.fake_dns:
            return [
                (
                    socket.AF_INET6 if ":" in address else socket.AF_INET,
                    socket.SOCK_STREAM,
                    socket.IPPROTO_TCP,
                    "",
                    (address, port, 0, 0) if ":" in address else (address, port),
                )
                for address in spy.fake_dns[host]
            ]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def connect(sock, address):
        spy.connects.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return spy


def use_smtp_server(settings, host: str, port: int, *, timeout: int = 5) -> None:
    """Point the default mailer at a real SMTP server (the suite otherwise uses locmem)."""
    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": host, "port": port, "timeout": timeout},
        }
    }


@pytest.fixture
def superuser(roles):
    return make_user("sam", is_superuser=True, is_staff=True)


# -- evidence ledger, exports, closure reviews and readiness -------------------------------------
# (added with tests/test_evidence_ledger.py, tests/test_evidence_export.py,
# tests/test_closure_reviews.py and tests/test_release_readiness.py)


@pytest.fixture
def evidence_key(settings) -> str:
    """A fresh Ed25519 evidence signing key in the settings; returns its public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from closure.evidence import chain

    key = Ed25519PrivateKey.generate()
    settings.CAVRA_EVIDENCE_SIGNING_KEY = chain.private_key_to_b64(key)
    settings.CAVRA_EVIDENCE_TRUSTED_PUBLIC_KEYS = []
    return chain.public_key_b64(key)


@pytest.fixture
def closed_loop(operator):
    """A fresh healthy health report and nothing else: the closure dashboard is closed."""
    from tests.factories import make_health_report

    return make_health_report(actor=operator, alert_level="healthy")
