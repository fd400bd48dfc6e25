"""One write budget per user: API POSTs, console forms, admin change forms, admin actions and
recorded admin exports all count against `CAVRA_API_POST_RATE` together, and the write past it
is refused with a 429 before anything is done."""

import csv
import io
from datetime import UTC, datetime

import pytest
import time_machine
from axes.models import AccessAttempt
from django.contrib import admin
from django.core.cache import cache
from django.db import connection
from django.test import Client

from closure.choices import MetadataKind
from closure.models import ApiToken, Connector, Evidence, HealthReport
from closure.roles import PLATFORM_OWNERS
from closure.services.connectors import connector_save
from closure.services.security import address_fingerprint
from tests.conftest import A, assert_problem, client_for, closure_counts
from tests.factories import make_connector, make_user

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HEALTH_FORM = {"expected_interval_minutes": "60", "stale_metadata_minutes": "180"}


@pytest.fixture
def clock(settings):
    """Four writes a minute, on a stopped clock, so that every Retry-After is exact."""
    settings.CAVRA_API_POST_RATE = "4/minute"
    cache.clear()
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture
def disable_action():
    """A site-wide admin action that writes: it disables the chosen connectors through the
    service, one evidence row each."""

    def disable_connectors(modeladmin, request, queryset):
        for connector in queryset:
            connector_save(
                actor=request.user,
                name=connector.name,
                kind=connector.kind,
                enabled=False,
                description=connector.description,
                accepted_counts_as_delivered=connector.accepted_counts_as_delivered,
            )

    admin.site.add_action(disable_connectors)
    yield "disable_connectors"
    admin.site.disable_action("disable_connectors")


def _write(client, kind: str, connector: Connector):
    """One write of the given kind, as the console, the admin or an API client sends it."""
    if kind == "api":
        return client.post(f"{A}/retry-plan", {"retry_policy": {}}, content_type="application/json")
    if kind == "console":
        return client.post("/console/health/", HEALTH_FORM)
    if kind == "admin_export":
        return client.post("/admin/closure/healthreport/export/", {"format": "csv"})
    if kind == "admin_action":
        return client.post(
            "/admin/closure/connector/",
            {"action": "disable_connectors", "index": "0", "_selected_action": [connector.pk]},
        )
    assert kind == "admin_change_form"
    return client.post(
        "/admin/closure/connector/add/",
        {
            "name": "second-webhook",
            "kind": "webhook",
            "enabled": "on",
            "description": "",
            "url": "https://hooks.example.invalid/second",
            "_save": "Save",
        },
    )


def _export_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.parametrize(
    "refused", ["api", "console", "admin_change_form", "admin_action", "admin_export"]
)
def test_api_console_and_admin_writes_share_one_budget_and_the_next_is_refused(
    clock, superuser, disable_action, refused
):
    # given a user who may do everything, allowed four writes a minute
    connector = make_connector("ops-webhook", "https://hooks.example.invalid/hook")
    client = client_for(superuser)

    # when they make four writes of four kinds: an API POST, a console form, an admin export
    # and an admin action
    api = _write(client, "api", connector)
    console = _write(client, "console", connector)
    export = _write(client, "admin_export", connector)
    action = _write(client, "admin_action", connector)

    # then all four were done
    assert (api.status_code, console.status_code) == (201, 302)
    assert export.status_code == 200
    assert [row["health_id"] for row in _export_rows(export)] == [
        HealthReport.objects.get().health_id
    ]
    assert action.status_code == 302
    assert Connector.objects.get(name="ops-webhook").enabled is False
    assert list(Evidence.objects.order_by("sequence").values_list("metadata_kind", flat=True)) == [
        MetadataKind.RETRY_PLAN,
        MetadataKind.HEALTH,
        MetadataKind.ADMIN_EXPORT,
        MetadataKind.CONNECTOR_CHANGE,
    ]
    before = closure_counts()

    # and the fifth write, whatever its kind, is refused until the first leaves the window
    response = _write(client, refused, connector)

    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert closure_counts() == before
    if refused == "api":
        assert_problem(
            response,
            status=429,
            code="throttled",
            title="Too many requests",
            detail="Request was throttled. Expected available in 60 seconds.",
        )
    else:
        assert response["Content-Type"] == "text/html; charset=utf-8"
        page = response.content.decode()
        assert "<h1>Too many changes</h1>" in page
        assert "Your account has made 4 changes in the last minute" in page
        assert "Try again in 60 seconds, after 09:01:00 UTC." in page


def test_console_writes_past_the_default_rate_are_refused_and_build_nothing(operator, settings):
    # given the default budget of 120 writes a minute (the issue's 135 "Build health" in 4.7 s)
    settings.CAVRA_API_POST_RATE = "120/minute"
    cache.clear()
    client = client_for(operator)

    # when the operator builds health 121 times within a minute
    with time_machine.travel(START, tick=False):
        answers = [client.post("/console/health/", HEALTH_FORM).status_code for _ in range(121)]

    # then exactly 120 reports (and evidence rows) were built and the last post was refused
    assert answers == [302] * 120 + [429]
    assert HealthReport.objects.count() == 120
    assert Evidence.objects.filter(metadata_kind=MetadataKind.HEALTH).count() == 120


def test_the_throttle_page_is_console_styled_and_csp_clean(clock, operator):
    client = client_for(operator)
    for _ in range(4):
        client.post("/console/health/", HEALTH_FORM)

    response = client.post("/console/health/", HEALTH_FORM)

    page = response.content.decode()
    assert response.status_code == 429
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert 'class="site-header"' in page
    assert "<script>" not in page
    assert "style=" not in page
    assert "<style" not in page


def test_reads_and_failed_validation_are_counted_as_they_are(clock, operator):
    # given an operator who reads ten pages and posts a form that fails validation
    client = client_for(operator)
    for _ in range(10):
        assert client.get("/console/health/").status_code == 200
    invalid = client.post("/console/health/", {"expected_interval_minutes": "0"})

    # when they then build health until refused
    answers = [client.post("/console/health/", HEALTH_FORM).status_code for _ in range(4)]

    # then the reads cost nothing, the refused form one write (it was a POST), and three more
    # writes fit
    assert invalid.status_code == 400
    assert answers == [302, 302, 302, 429]
    assert HealthReport.objects.count() == 3


def test_the_budget_is_per_user(clock, operator, superuser):
    spender = client_for(operator)
    for _ in range(4):
        spender.post("/console/health/", HEALTH_FORM)
    assert spender.post("/console/health/", HEALTH_FORM).status_code == 429

    other = client_for(superuser).post("/console/health/", HEALTH_FORM)

    assert other.status_code == 302
    assert HealthReport.objects.count() == 5


def test_refused_writes_cost_nothing_and_the_budget_returns_with_the_window(clock, operator):
    # given an operator whose four writes were all made at 09:00:00
    client = client_for(operator)
    for _ in range(4):
        client.post("/console/health/", HEALTH_FORM)

    # when they try again at 09:00:59, then at 09:01:00
    clock.shift(59)
    early = client.post("/console/health/", HEALTH_FORM)
    clock.shift(1)
    answers = [client.post("/console/health/", HEALTH_FORM).status_code for _ in range(5)]

    # then the early one is told to wait one second, and is not counted: at 09:01:00 the
    # full budget of four is back
    assert (early.status_code, early["Retry-After"]) == (429, "1")
    assert answers == [302, 302, 302, 302, 429]
    assert HealthReport.objects.count() == 8


def test_a_bearer_token_draws_on_its_users_console_budget(clock, operator):
    # given three console writes
    client = client_for(operator)
    for _ in range(3):
        client.post("/console/health/", HEALTH_FORM)

    # when the API is used with a bearer token of the same user
    _, raw = ApiToken.issue(user=operator, name="throttle")
    bearer = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = {"retry_policy": {}}
    first = bearer.post(f"{A}/retry-plan", body, content_type="application/json")
    second = bearer.post(f"{A}/retry-plan", body, content_type="application/json")

    # then the token's first POST is the user's fourth write and its second the refused fifth
    assert (first.status_code, second.status_code) == (201, 429)
    assert second["Retry-After"] == "60"
    assert Evidence.objects.filter(metadata_kind=MetadataKind.RETRY_PLAN).count() == 1


def test_anonymous_writes_count_per_address_fingerprint_and_spare_the_lockout(clock, operator):
    # given an address that mistypes the password four times (the lockout needs five)
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    wrong = {"username": "olivia", "password": "wrong"}
    answers = [attacker.post("/console/login/", wrong).status_code for _ in range(4)]

    # when it signs in, with the right password this time
    refused = attacker.post(
        "/console/login/", {"username": "olivia", "password": "pw-for-tests-only"}
    )

    # then the four sign-in attempts were answered, the fifth POST is refused by the write
    # budget before it reaches the login (so the lockout counted exactly the four failures)
    assert answers == [200, 200, 200, 200]
    assert refused.status_code == 429
    assert "This address has made 4 changes in the last minute" in refused.content.decode()
    assert "_auth_user_id" not in attacker.session
    assert AccessAttempt.objects.get().failures_since_start == 4
    # and the budget is kept under the address's keyed fingerprint, never the address
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key FROM cavra_cache")
        keys = [row[0] for row in cursor.fetchall()]
    assert [key.split(":")[-1] for key in keys] == [
        f"throttle_post_addr-{address_fingerprint('203.0.113.7')}"
    ]
    # and another address signs in, and its user then writes on their own budget
    owner = Client(REMOTE_ADDR="198.51.100.20")
    signed_in = owner.post(
        "/console/login/", {"username": "olivia", "password": "pw-for-tests-only"}
    )
    assert signed_in.status_code == 302
    writes = [owner.post("/console/health/", HEALTH_FORM).status_code for _ in range(5)]
    assert writes == [302, 302, 302, 302, 429]


def test_a_user_refused_by_the_budget_writes_nothing_through_the_admin_either(clock, roles):
    # given a platform owner who spent the budget on connector changes in the admin
    owner = make_user("petra-staff", PLATFORM_OWNERS, is_staff=True)
    client = client_for(owner)
    for index in range(4):
        response = client.post(
            "/admin/closure/connector/add/",
            {
                "name": f"hook-{index}",
                "kind": "webhook",
                "enabled": "on",
                "description": "",
                "url": f"https://hooks.example.invalid/{index}",
                "_save": "Save",
            },
        )
        assert response.status_code == 302
    before = closure_counts()

    # when they add a fifth
    refused = client.post(
        "/admin/closure/connector/add/",
        {"name": "hook-4", "kind": "webhook", "enabled": "on", "url": "https://h.invalid/4"},
    )

    # then it is refused and nothing is stored
    assert (refused.status_code, refused["Retry-After"]) == (429, "60")
    assert closure_counts() == before
    assert not Connector.objects.filter(name="hook-4").exists()
