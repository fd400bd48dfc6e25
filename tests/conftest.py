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
