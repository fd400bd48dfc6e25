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
