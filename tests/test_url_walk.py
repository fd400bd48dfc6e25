"""Every URL of the site, as every role: the exact status each one gets, and no GET writes.

The URL patterns are enumerated from the root resolver (console, admin, API and the rest), so a
URL added later without an expectation here fails `test_every_url_pattern_has_an_expectation`.
Each role is a user of the demo's kind: in its group and a staff member (so the admin's own
login gate is passed and only permissions decide). Statuses are for GET: 200 shown, 302 sent
to a sign-in page or on, 401 (the API) and 403 refused, 404 no such page for that object,
405 the URL answers only POST.
"""

import hashlib
import re

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from closure.choices import MetadataKind
from closure.evidence.canonical import canonical_json
from closure.roles import AUDITORS, OPERATORS, PLATFORM_OWNERS
from closure.selectors import closure_dashboard
from closure.services.evidence import evidence_checkpoint_create
from closure.services.readiness import runbook_export
from closure.services.tokens import api_token_create
from tests.conftest import client_for
from tests.factories import (
    make_acknowledgement,
    make_closure_review,
    make_decision,
    make_event,
    make_evidence,
    make_retry_plan,
    make_user,
    make_worker_run,
)

pytestmark = pytest.mark.django_db

B = "runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
R = f"{B}/recovery-executive-report"
A = f"{R}/delivery-retry-health-alerts"
ROLES = ("anonymous", "auditor", "operator", "platform owner")


def _walk(patterns, prefix: str = "", namespace: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = namespace
            if pattern.namespace:
                inner = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            name = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name
            yield prefix + str(pattern.pattern), name, tuple(pattern.pattern.regex.groupindex)


def url_patterns() -> list[tuple[str, str | None, tuple[str, ...]]]:
    """(route, URL name, parameters) of every pattern the site answers, the API's long base
    path written as {A}, {R} or {B}."""
    found = []
    for route, name, params in _walk(get_resolver().url_patterns):
        for short, long in (("{A}", A), ("{R}", R), ("{B}", B)):
            route = route.replace(long, short)
        found.append((route, name, params))
    return found


# GET status per role: (anonymous, auditor, operator, platform owner).
SIGN_IN = 302  # anonymous: to the sign-in page
READ_ALL = (SIGN_IN, 200, 200, 200)  # a console page every role may read
OPERATORS_ONLY = (SIGN_IN, 403, 200, 403)
ADMIN_READ = (SIGN_IN, 200, 200, 200)  # a read-only record's admin page (view_* for all)
ADMIN_REFUSED = (SIGN_IN, 403, 403, 403)  # add, delete: nobody, superusers included
ADMIN_POST_ONLY = (SIGN_IN, 405, 405, 405)  # the export: POST only
ADMIN_REDIRECT = (SIGN_IN, 302, 302, 302)  # admin/<model>/<pk>/ → …/<pk>/change/
AUTH_ADMIN = (SIGN_IN, 403, 403, 403)  # users and groups: superusers only
PLATFORM_OWNERS_ONLY = (SIGN_IN, 403, 403, 200)
API_READ = (401, 200, 200, 200)
API_AUDITOR_POST_ONLY = (401, 405, 403, 403)  # the auditors' exports: refused to others first
API_OPERATOR_POST_ONLY = (401, 403, 405, 403)  # GET of an operators' action: refused first


def _admin_model(model: str, *, export: bool = True, history=ADMIN_READ) -> dict:
    base = f"admin/closure/{model}/"
    expected = {
        base: ADMIN_READ,
        f"{base}add/": ADMIN_REFUSED,
        f"{base}<path:object_id>/history/": history,
        f"{base}<path:object_id>/delete/": ADMIN_REFUSED,
        f"{base}<path:object_id>/change/": ADMIN_READ,
        f"{base}<path:object_id>/": ADMIN_REDIRECT,
    }
    if export:
        expected[f"{base}export/"] = ADMIN_POST_ONLY
    return expected


def _api_resource(path: str, detail: str) -> dict:
    base = f"api/v1/^{path}"
    return {
        f"{base}/$": API_READ,
        f"{base}\\.(?P<format>[a-z0-9]+)/?$": API_READ,
        f"{base}/(?P<{detail}>[^/.]+)/$": API_READ,
        f"{base}/(?P<{detail}>[^/.]+)\\.(?P<format>[a-z0-9]+)/?$": API_READ,
    }


EXPECTED: dict[str, tuple[int, int, int, int]] = {
    # -- the site's root and the browser's icon
    "": (302, 302, 302, 302),
    "favicon.ico": (302, 302, 302, 302),
    # -- operations: probes and metrics for the platform, the API's schema and its docs
    "healthz": (200, 200, 200, 200),  # liveness: open to the platform's probes
    "readyz": (200, 200, 200, 200),
    "metrics": (401, 200, 200, 200),  # staff (all three roles here) or a scrape token
    "api/schema/": (401, 200, 200, 200),
    "api/docs/": (SIGN_IN, 200, 200, 200),
    "api/redoc/": (SIGN_IN, 200, 200, 200),
    # -- the console
    "console/login/": (200, 302, 302, 302),  # a signed-in user is sent on to the flow
    "console/logout/": (SIGN_IN, 405, 405, 405),  # sign-out is a POST
    "console/": READ_ALL,
    "console/health/": READ_ALL,
    "console/health/<str:health_id>/": READ_ALL,
    "console/alerts/": READ_ALL,
    "console/alerts/<str:alert_id>/": READ_ALL,
    "console/deliveries/": READ_ALL,
    "console/deliveries/<str:delivery_id>/": READ_ALL,
    # the POST-only actions send a GET back to the delivery's page
    "console/deliveries/<str:delivery_id>/waive/": (SIGN_IN, 302, 302, 302),
    "console/deliveries/<str:delivery_id>/retry/": (SIGN_IN, 302, 302, 302),
    "console/acknowledgements/": READ_ALL,
    "console/retry-plans/": READ_ALL,
    "console/retry-plans/<str:retry_plan_id>/": READ_ALL,
    "console/worker-runs/": READ_ALL,
    "console/worker-runs/<str:run_id>/": READ_ALL,
    # the live run's confirmation: only for those who may execute live
    "console/worker-runs/<str:run_id>/execute/": OPERATORS_ONLY,
    "console/executions/": READ_ALL,
    "console/executions/<str:execution_id>/": READ_ALL,
    "console/closure/": READ_ALL,
    "console/readiness/": READ_ALL,
    "console/readiness/runbook/": (SIGN_IN, 405, 405, 405),  # the runbook export is a POST
    "console/reviews/": READ_ALL,
    "console/reviews/<str:review_id>/": READ_ALL,
    "console/evidence/": READ_ALL,
    "console/evidence/verify/": READ_ALL,
    "console/evidence/<int:sequence>/": READ_ALL,
    # a signed-in user's own API tokens; revoking one is a POST
    "console/api-tokens/": READ_ALL,
    "console/api-tokens/<int:token_pk>/revoke/": (SIGN_IN, 405, 405, 405),
    # -- the admin
    "admin/": (SIGN_IN, 200, 200, 200),
    "admin/login/": (200, 302, 302, 302),
    "admin/logout/": (SIGN_IN, 405, 405, 405),
    "admin/password_change/": (SIGN_IN, 200, 200, 200),
    "admin/password_change/done/": (SIGN_IN, 200, 200, 200),
    "admin/autocomplete/": (SIGN_IN, 403, 403, 403),  # no autocomplete field is configured
    "admin/jsi18n/": (SIGN_IN, 200, 200, 200),
    "admin/r/<path:content_type_id>/<path:object_id>/": (SIGN_IN, 404, 404, 404),
    "admin/^(?P<app_label>auth|axes|closure)/$": (SIGN_IN, 200, 200, 200),
    "admin/(?P<url>.*)$": (SIGN_IN, 404, 404, 404),
    "admin/auth/group/": AUTH_ADMIN,
    "admin/auth/group/add/": AUTH_ADMIN,
    "admin/auth/group/<path:object_id>/history/": AUTH_ADMIN,
    "admin/auth/group/<path:object_id>/delete/": AUTH_ADMIN,
    "admin/auth/group/<path:object_id>/change/": AUTH_ADMIN,
    "admin/auth/group/<path:object_id>/": ADMIN_REDIRECT,
    "admin/auth/user/<id>/password/": AUTH_ADMIN,
    "admin/auth/user/": AUTH_ADMIN,
    "admin/auth/user/add/": AUTH_ADMIN,
    "admin/auth/user/<path:object_id>/history/": AUTH_ADMIN,
    "admin/auth/user/<path:object_id>/delete/": AUTH_ADMIN,
    "admin/auth/user/<path:object_id>/change/": AUTH_ADMIN,
    "admin/auth/user/<path:object_id>/": ADMIN_REDIRECT,
    # the sign-in lock-out's records (django-axes): superusers only
    **{
        f"admin/axes/{model}/{suffix}": ADMIN_REDIRECT
        if suffix == "<path:object_id>/"
        else AUTH_ADMIN
        for model in ("accessattempt", "accesslog", "accessfailurelog")
        for suffix in (
            "",
            "add/",
            "<path:object_id>/history/",
            "<path:object_id>/delete/",
            "<path:object_id>/change/",
            "<path:object_id>/",
        )
    },
    **_admin_model("deliveryevent"),
    **_admin_model("healthreport"),
    **_admin_model("healthalert"),
    **_admin_model("alertdelivery"),
    **_admin_model("acknowledgement"),
    **_admin_model("retryplan"),
    **_admin_model("retrydecision"),
    **_admin_model("workerrun"),
    **_admin_model("executionrecord"),
    **_admin_model("evidence"),
    **_admin_model("evidencecheckpoint"),
    **_admin_model("closurereview"),
    # connectors: everyone views; only platform owners may add (and change, see test_admin)
    **_admin_model("connector", export=False),
    "admin/closure/connector/add/": (SIGN_IN, 403, 403, 200),
    # every user's API tokens: platform owners only (manage_api_tokens); never edited or deleted
    "admin/closure/apitoken/": PLATFORM_OWNERS_ONLY,
    "admin/closure/apitoken/add/": PLATFORM_OWNERS_ONLY,
    "admin/closure/apitoken/<path:object_id>/history/": PLATFORM_OWNERS_ONLY,
    "admin/closure/apitoken/<path:object_id>/delete/": ADMIN_REFUSED,
    "admin/closure/apitoken/<path:object_id>/change/": PLATFORM_OWNERS_ONLY,
    "admin/closure/apitoken/<path:object_id>/": ADMIN_REDIRECT,
    # -- DRF's browsable-API sign-in
    "api-auth/login/": (200, 200, 200, 200),
    "api-auth/logout/": (SIGN_IN, 405, 405, 405),
    # -- the API: the flow's endpoints
    "{R}/delivery-events": API_OPERATOR_POST_ONLY,
    "{R}/delivery-retry-health": API_READ,
    "{R}/delivery-retry-health-alert-dashboard": API_READ,
    "{A}": API_READ,
    "{A}/deliver": API_OPERATOR_POST_ONLY,
    "{A}/retry-plan": API_OPERATOR_POST_ONLY,
    "{A}/retry-worker-run": API_OPERATOR_POST_ONLY,
    "{A}/deliveries/<str:delivery_id>/waive": API_OPERATOR_POST_ONLY,
    "{A}/deliveries/<str:delivery_id>/retry": API_OPERATOR_POST_ONLY,
    "{A}/<str:health_id>/acknowledgements": API_OPERATOR_POST_ONLY,
    "{B}/final-reporting-closure-dashboard": API_READ,
    "{B}/final-reporting-closure-reviews": API_READ,
    "{B}/final-reporting-closure-reviews/<str:review_id>": API_READ,
    "{B}/final-reporting-release-readiness": API_READ,
    # the runbook export: auditors and operators may POST it
    "{B}/final-reporting-operator-runbook-export": (401, 405, 405, 403),
    # a recorded export again by its id (JSON, Markdown, printable): whoever may export it
    "{B}/final-reporting-operator-runbook-export/<str:runbook_id>": (401, 200, 200, 403),
    "{B}/final-reporting-operator-runbook-export/<str:runbook_id>.md": (401, 200, 200, 403),
    "{B}/final-reporting-operator-runbook-export/<str:runbook_id>.html": (401, 200, 200, 403),
    # -- the API: the ledger and the resource lists
    "api/v1/evidence/export/": API_AUDITOR_POST_ONLY,
    "api/v1/evidence/public-key/": API_READ,
    "api/v1/evidence/checkpoints/": API_READ,
    **_api_resource("delivery-events", "event_id"),
    **_api_resource("health-reports", "health_id"),
    **_api_resource("connectors", "name"),
    **_api_resource("alerts", "alert_id"),
    **_api_resource("deliveries", "delivery_id"),
    **_api_resource("acknowledgements", "ack_id"),
    **_api_resource("retry-plans", "retry_plan_id"),
    **_api_resource("worker-runs", "run_id"),
    **_api_resource("execution-records", "execution_id"),
    "api/v1/^evidence/$": API_READ,
    "api/v1/^evidence\\.(?P<format>[a-z0-9]+)/?$": API_READ,
    "api/v1/^evidence/verify/$": API_READ,
    "api/v1/^evidence/verify\\.(?P<format>[a-z0-9]+)/?$": API_READ,
    "api/v1/^evidence/(?P<sequence>[^/.]+)/$": API_READ,
    "api/v1/^evidence/(?P<sequence>[^/.]+)\\.(?P<format>[a-z0-9]+)/?$": API_READ,
    "api/v1/": API_READ,
    "api/v1/<drf_format_suffix:format>": API_READ,
}


@pytest.fixture
def walk_records(operator, report, failed_delivery, offline_webhook, evidence_key):
    """One row of every record, so that every detail URL names one that exists."""
    event = make_event(actor=operator, kind="retry_plan", status="succeeded", event_id="evt-1")
    ack = make_acknowledgement(
        alert=failed_delivery.alert, connector=offline_webhook, actor=operator, state="escalated"
    )
    plan = make_retry_plan(actor=operator)
    make_decision(plan=plan, delivery=failed_delivery, action="wait")
    run = make_worker_run(actor=operator, retry_plan=plan)
    evidence = make_evidence(kind=MetadataKind.HEALTH, session_id=report.health_id, signer="olivia")
    review = make_closure_review(
        actor=operator,
        decision="accept_open_risks",
        **dict.fromkeys(closure_dashboard()["open_items"], "accepted for the walk"),
    )
    runbook = runbook_export(actor=operator).runbook
    token = api_token_create(actor=operator, user=operator, name="walk").token
    evidence_checkpoint_create()
    _sign_in_records()
    return {
        "event_id": event.event_id,
        "health_id": report.health_id,
        "name": offline_webhook.name,
        "alert_id": failed_delivery.alert.alert_id,
        "delivery_id": failed_delivery.delivery_id,
        "ack_id": ack.ack_id,
        "retry_plan_id": plan.retry_plan_id,
        "run_id": run.run_id,
        "execution_id": failed_delivery.executions.get().execution_id,
        "sequence": evidence.sequence,
        "review_id": review.review_id,
        "runbook_id": runbook["runbook_id"],
        "token_pk": token.pk,
        "format": "json",
        "app_label": "closure",
        "url": "no-such-page/",
        "id": operator.pk,
    }


def _sign_in_records() -> None:
    """One row of each of django-axes' sign-in records, so their admin pages name a row."""
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    request = {"user_agent": "walk", "http_accept": "*/*", "path_info": "/console/login/"}
    AccessAttempt.objects.create(**request, get_data="", post_data="", failures_since_start=1)
    AccessLog.objects.create(**request)
    AccessFailureLog.objects.create(**request)


def _object_id(route: str) -> str:
    """The primary key of the first row of the admin model a route names."""
    app_label, model_name = re.match(r"admin/(\w+)/(\w+)/", route).groups()
    model = apps.get_model(app_label, model_name)
    return str(model._default_manager.order_by("pk").values_list("pk", flat=True).first())


def concrete_url(route: str, name: str | None, params: tuple[str, ...], records: dict) -> str:
    if route in ("", "favicon.ico"):
        return "/" + route
    if route.startswith("admin/r/"):
        review = apps.get_model("closure", "closurereview").objects.get()
        content_type = ContentType.objects.get_for_model(review)
        return f"/admin/r/{content_type.pk}/{review.pk}/"
    if name is None and route.startswith("admin/") and "object_id" in params:
        return "/" + route.replace("<path:object_id>", _object_id(route))
    if name is None:
        return "/admin/" + records["url"]
    kwargs = {param: records[param] for param in params if param != "object_id"}
    if "object_id" in params:
        kwargs["object_id"] = _object_id(route)
    return reverse(name, kwargs=kwargs)


def database_digest() -> str:
    """A hash of every row of every closure model and of the users, groups and permissions."""
    digest = hashlib.sha256()
    models = [*apps.get_app_config("closure").get_models(), Group, Permission]
    models.append(apps.get_model("auth", "user"))
    for model in models:
        rows = list(model._default_manager.order_by("pk").values())
        digest.update(model._meta.label.encode())
        digest.update(canonical_json(rows))
    return digest.hexdigest()


def _role_user(role: str):
    group = {"auditor": AUDITORS, "operator": OPERATORS, "platform owner": PLATFORM_OWNERS}
    if role == "anonymous":
        return None
    return make_user(f"walk-{role.replace(' ', '-')}", group[role], is_staff=True)


def test_every_url_pattern_has_an_expectation(db):
    # given every pattern the resolver knows
    routes = [route for route, _, _ in url_patterns()]

    # then each one has exactly one expectation, and no expectation names a pattern that is gone
    assert len(routes) == len(set(routes))
    assert sorted(set(routes) - set(EXPECTED)) == []
    assert sorted(set(EXPECTED) - set(routes)) == []
    # and the walk covers the console, the admin of every registered model, and the API
    assert sum(route.startswith("console/") for route in routes) >= 25
    assert {model._meta.model_name for model in admin.site._registry} >= {
        "evidence",
        "executionrecord",
        "connector",
    }
    assert sum(route.startswith(("api/v1/", "{")) for route in routes) >= 60


@pytest.mark.parametrize("role", ROLES)
def test_every_url_answers_each_role_its_expected_status_and_no_get_writes(
    roles, walk_records, role
):
    # given a user of this role (or none) and one record of every kind
    client = client_for(_role_user(role))
    column = ROLES.index(role)
    before = database_digest()

    # when they GET every URL of the site
    seen = {}
    for route, name, params in url_patterns():
        url = concrete_url(route, name, params, walk_records)
        seen[route] = (url, client.get(url).status_code)

    # then each answers exactly the expected status
    wrong = {
        route: (url, status, EXPECTED.get(route, (None,) * 4)[column])
        for route, (url, status) in seen.items()
        if status != EXPECTED.get(route, (None,) * 4)[column]
    }
    assert wrong == {}
    # and no GET changed a single row
    assert database_digest() == before


def test_anonymous_requests_are_sent_to_the_one_sign_in_page(walk_records):
    # given no session
    client = client_for(None)

    # when an anonymous client opens a console page and an admin page
    console = client.get("/console/closure/")
    admin_page = client.get("/admin/closure/evidence/")

    # then both are sent to the console's sign-in page (the login-required middleware answers
    # before the admin's own gate), with the way back to the page they asked for
    assert console["Location"] == "/console/login/?next=/console/closure/"
    assert admin_page["Location"] == "/console/login/?next=/admin/closure/evidence/"
