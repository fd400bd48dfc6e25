"""Default deny: who may call which API URL, and who the actor is.

The URLs are enumerated from the URL resolver, so an endpoint added later is checked too.
"""

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
import time_machine
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from closure.api import urls as api_urls
from closure.choices import MetadataKind
from closure.models import AlertDelivery, ApiToken, Evidence, HealthReport
from closure.selectors import closure_dashboard
from closure.services.readiness import runbook_export
from tests.conftest import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_TYPE_BASE,
    A,
    R,
    assert_invalid,
    assert_problem,
    client_for,
    closure_counts,
)
from tests.factories import (
    make_acknowledgement,
    make_alert,
    make_closure_review,
    make_decision,
    make_delivery,
    make_event,
    make_evidence,
    make_execution,
    make_retry_plan,
    make_user,
    make_worker_run,
)

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Route:
    name: str
    params: tuple[str, ...]
    methods: tuple[str, ...]


def _view_methods(callback) -> tuple[str, ...]:
    """The methods a view answers; OPTIONS too, since every DRF view answers it."""
    actions = getattr(callback, "actions", None)
    if actions is not None:  # a viewset bound to {method: action}
        methods = [method.upper() for method in actions]
    else:
        view_class = callback.view_class
        methods = [
            m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view_class, m)
        ]
    return (*sorted(methods), "OPTIONS")


def _walk(patterns):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            yield pattern


def api_routes() -> list[Route]:
    """Every URL pattern of the API (with its format-suffix twins) and the methods it answers."""
    return [
        Route(
            name=pattern.name,
            params=tuple(pattern.pattern.regex.groupindex),
            methods=_view_methods(pattern.callback),
        )
        for pattern in _walk(api_urls.urlpatterns)
    ]


ROUTES = api_routes()
# The API's own router index lists links and no data: any authenticated user may read it.
INDEX = {"api-root"}
# POSTs an auditor may make: exporting evidence and the operator runbook.
AUDITOR_EXPORTS = {"evidence-export", "runbook-export"}
# Names every enumeration must contain; more may appear as the API grows.
KNOWN_ROUTES = {
    "delivery-events",
    "delivery-retry-health",
    "alert-dashboard",
    "alert-history",
    "alert-deliver",
    "retry-plan",
    "retry-worker-run",
    "delivery-waive",
    "delivery-retry",
    "acknowledgements",
    "closure-dashboard",
    "api-root",
    "evidence-verify",
    "closure-reviews",
    "closure-review-detail",
    "release-readiness",
    "runbook-export",
    "runbook-detail",
    "runbook-markdown",
    "runbook-printable",
    "evidence-export",
    "evidence-public-key",
    "evidence-checkpoints",
    *(
        f"{model}-{kind}"
        for model in (
            "deliveryevent",
            "healthreport",
            "connector",
            "healthalert",
            "alertdelivery",
            "acknowledgement",
            "retryplan",
            "workerrun",
            "executionrecord",
            "evidence",
        )
        for kind in ("list", "detail")
    ),
}


@pytest.fixture
def records(operator, report, failed_delivery, offline_webhook):
    """One record of every kind, so that every detail URL names a row that exists."""
    event = make_event(actor=operator, kind="retry_plan", status="succeeded", event_id="evt-1")
    ack = make_acknowledgement(
        alert=failed_delivery.alert, connector=offline_webhook, actor=operator, state="escalated"
    )
    plan = make_retry_plan(actor=operator)
    decision = make_decision(plan=plan, delivery=failed_delivery, action="wait")
    run = make_worker_run(actor=operator, retry_plan=plan)
    execution = failed_delivery.executions.get()
    evidence = make_evidence(kind=MetadataKind.HEALTH, session_id=report.health_id, signer="olivia")
    review = make_closure_review(
        actor=operator,
        decision="accept_open_risks",
        **dict.fromkeys(closure_dashboard()["open_items"], "accepted for the test"),
    )
    assert decision.status == "pending"
    return {
        "event_id": event.event_id,
        "health_id": report.health_id,
        "name": offline_webhook.name,
        "alert_id": failed_delivery.alert.alert_id,
        "delivery_id": failed_delivery.delivery_id,
        "ack_id": ack.ack_id,
        "retry_plan_id": plan.retry_plan_id,
        "run_id": run.run_id,
        "execution_id": execution.execution_id,
        "sequence": str(evidence.sequence),
        "review_id": review.review_id,
        "runbook_id": runbook_export(actor=operator).runbook["runbook_id"],
        "format": "json",
    }


def route_urls(records) -> list[tuple[str, str, str]]:
    """(route name, method, concrete URL) for every API route and method."""
    return [
        (route.name, method, reverse(route.name, kwargs={p: records[p] for p in route.params}))
        for route in ROUTES
        for method in route.methods
    ]


def call(client, method: str, url: str):
    if method == "GET":
        return client.get(url)
    return client.generic(method, url, data="{}", content_type="application/json")


def test_route_enumeration_covers_the_whole_api(records):
    # given the resolver's API patterns
    names = {route.name for route in ROUTES}

    # then every known endpoint is among them, each with the methods it answers
    assert names >= KNOWN_ROUTES
    methods = {route.name: route.methods for route in ROUTES}
    assert methods["delivery-retry-health"] == ("GET", "POST", "OPTIONS")
    assert methods["retry-worker-run"] == ("POST", "OPTIONS")
    assert methods["deliveryevent-list"] == ("GET", "OPTIONS")
    # and both the plain and the format-suffixed twin of each list are checked
    urls = {url for _, _, url in route_urls(records)}
    assert {"/api/v1/deliveries/", "/api/v1/deliveries.json"} <= urls
    assert len(route_urls(records)) >= 100


def test_every_api_url_answers_401_to_anonymous_clients(records):
    # given an anonymous client
    client = APIClient()
    before = closure_counts()

    # when it calls every API URL with every method the URL answers
    refused = []
    for name, method, url in route_urls(records):
        response = call(client, method, url)
        refused.append(
            (
                name,
                method,
                response.status_code,
                response["Content-Type"],
                response.get("WWW-Authenticate"),
                response.json(),
            )
        )

    # then every one is a 401 problem asking for a bearer token, and nothing was written
    expected_body = {
        "type": PROBLEM_TYPE_BASE + "not-authenticated",
        "title": "Authentication required",
        "status": 401,
        "detail": "Authentication credentials were not provided.",
        "code": "not_authenticated",
    }
    assert refused == [
        (name, method, 401, PROBLEM_CONTENT_TYPE, "Bearer", expected_body)
        for name, method, _ in route_urls(records)
    ]
    assert closure_counts() == before


def test_every_api_url_answers_403_to_a_user_without_permissions(outsider, records):
    # given a signed-in user who holds no permission
    client = client_for(outsider)
    before = closure_counts()

    # when it calls every API URL with every method
    answers = []
    for name, method, url in route_urls(records):
        if name in INDEX:
            continue
        response = call(client, method, url)
        body = response.json()
        answers.append(
            (name, method, response.status_code, response["Content-Type"], body.pop("detail"), body)
        )

    # then every one is a 403 problem, and nothing was written
    expected_body = {
        "type": PROBLEM_TYPE_BASE + "permission-denied",
        "title": "Permission denied",
        "status": 403,
        "code": "permission_denied",
    }
    assert [(n, m, s, c, b) for n, m, s, c, _, b in answers] == [
        (name, method, 403, PROBLEM_CONTENT_TYPE, expected_body)
        for name, method, _ in route_urls(records)
        if name not in INDEX
    ]
    generic = "You do not have permission to perform this action."
    named = re.compile(r"You need the permission closure\.\w+(, closure\.\w+)*\.")
    for name, method, _, _, detail, _ in answers:
        assert detail == generic or named.fullmatch(detail), (name, method, detail)
    assert closure_counts() == before


def test_router_index_shows_a_signed_in_user_links_only(outsider):
    # given a signed-in user without permissions
    client = client_for(outsider)

    # when it reads the router's index
    response = client.get("/api/v1/")

    # then it sees where the lists are, and nothing of their content
    assert response.status_code == 200
    assert response.json() == {
        name: f"http://testserver/api/v1/{name}/"
        for name in (
            "delivery-events",
            "health-reports",
            "connectors",
            "alerts",
            "deliveries",
            "acknowledgements",
            "retry-plans",
            "worker-runs",
            "execution-records",
            "evidence",
        )
    }


def test_auditor_reads_every_list_detail_and_dashboard(auditor, records):
    # given an auditor and one record of every kind
    client = client_for(auditor)
    before = closure_counts()

    # when the auditor reads every GET URL
    statuses = [
        (name, call(client, "GET", url).status_code)
        for name, method, url in route_urls(records)
        if method == "GET"
    ]

    # then each one answers, and reading wrote nothing
    assert statuses == [(name, 200) for name, _ in statuses]
    assert len(statuses) >= 40
    assert closure_counts() == before


def test_auditor_cannot_post_any_action(auditor, records):
    # given an auditor
    client = client_for(auditor)
    before = closure_counts()

    # when the auditor posts to every action (but the exports, which are an auditor's job:
    # tests/test_evidence_export.py and tests/test_release_readiness.py)
    posts = [
        (name, url)
        for name, method, url in route_urls(records)
        if method == "POST" and name not in AUDITOR_EXPORTS
    ]
    answers = {name: call(client, "POST", url) for name, url in posts}

    # then every one is refused, and nothing was written
    assert set(answers) >= {
        "delivery-events",
        "delivery-retry-health",
        "alert-deliver",
        "retry-plan",
        "retry-worker-run",
        "delivery-waive",
        "delivery-retry",
        "acknowledgements",
    }
    for response in answers.values():
        assert response.status_code == 403
        assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
        assert response.json()["code"] == "permission_denied"
    assert answers["retry-plan"].json()["detail"] == ("You need the permission closure.plan_retry.")
    assert closure_counts() == before


# -- dry run versus live run ------------------------------------------------------------------


def test_planner_without_execute_retry_gets_403_for_a_manual_retry(
    planner_only, due_retry, receiver
):
    # given a user who may plan but not execute
    client = client_for(planner_only)
    delivery = AlertDelivery.objects.get()
    before = closure_counts()

    # when they retry a delivery by hand
    response = client.post(f"{A}/deliveries/{delivery.delivery_id}/retry", {}, format="json")

    # then it is refused, and nothing was sent or written
    assert_problem(
        response,
        status=403,
        code="permission_denied",
        title="Permission denied",
        detail="You need the permission closure.execute_retry.",
    )
    assert closure_counts() == before
    assert receiver.log == []


# -- bearer tokens ----------------------------------------------------------------------------


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_token_reads_lists_and_acts_as_its_user(operator):
    # given an operator's token
    token, raw = ApiToken.issue(user=operator, name="ci")
    client = bearer(raw)

    # when it reads a list and builds a health report
    listed = client.get("/api/v1/health-reports/")
    built = client.post(f"{R}/delivery-retry-health", {}, format="json")

    # then both are done as the operator, authenticated by the token
    assert listed.status_code == 200
    assert built.status_code == 201, built.json()
    body = built.json()
    assert body["actor"] == {
        "username": "olivia",
        "user_id": operator.pk,
        "authentication": "token",
    }
    assert body["health"]["generated_by"] == "olivia"
    assert body["metadata"]["signer"] == "olivia"
    assert Evidence.objects.get().signer == "olivia"
    assert HealthReport.objects.get().generated_by == operator
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_token_is_checked_against_its_users_permissions(auditor):
    # given an auditor's token
    _, raw = ApiToken.issue(user=auditor, name="audit-export")
    before = closure_counts()

    # then it reads, but cannot act
    assert bearer(raw).get("/api/v1/evidence/").status_code == 200
    response = bearer(raw).post(f"{R}/delivery-retry-health", {}, format="json")
    assert_problem(
        response,
        status=403,
        code="permission_denied",
        title="Permission denied",
        detail="You need the permission closure.add_healthreport.",
    )
    assert closure_counts() == before


def _refused_token(response) -> None:
    assert_problem(
        response,
        status=401,
        code="authentication_failed",
        title="Authentication failed",
        detail="Invalid, expired or revoked token.",
    )
    assert response["WWW-Authenticate"] == "Bearer"


def test_expired_token_is_401(operator):
    # given a token issued for one day
    _, raw = ApiToken.issue(user=operator, name="short", days=1)
    assert bearer(raw).get("/api/v1/alerts/").status_code == 200
    before = closure_counts()

    # when it is used a day and a second later
    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=1)):
        listed = bearer(raw).get("/api/v1/alerts/")
        posted = bearer(raw).post(f"{R}/delivery-retry-health", {}, format="json")

    # then it is refused, and nothing was written
    _refused_token(listed)
    _refused_token(posted)
    assert closure_counts() == before


def test_revoked_token_is_401(operator):
    # given a token that was revoked
    token, raw = ApiToken.issue(user=operator, name="leaked")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    before = closure_counts()

    # when it is used
    listed = bearer(raw).get("/api/v1/alerts/")
    posted = bearer(raw).post(f"{R}/delivery-retry-health", {}, format="json")

    # then it is refused, and nothing was written
    _refused_token(listed)
    _refused_token(posted)
    assert closure_counts() == before


def test_token_of_deactivated_user_is_401(operator):
    _, raw = ApiToken.issue(user=operator, name="ci")
    operator.is_active = False
    operator.save(update_fields=["is_active"])

    _refused_token(bearer(raw).get("/api/v1/alerts/"))


def test_unknown_token_is_401(operator):
    ApiToken.issue(user=operator, name="ci")

    _refused_token(bearer("cavra_not-a-token-we-issued").get("/api/v1/alerts/"))


def test_empty_bearer_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer ")

    response = client.get("/api/v1/alerts/")

    assert_problem(
        response,
        status=401,
        code="authentication_failed",
        title="Authentication failed",
        detail="Bearer token missing.",
    )


def test_token_is_stored_only_as_a_hash(operator):
    token, raw = ApiToken.issue(user=operator, name="ci")

    assert raw.startswith("cavra_")
    assert token.token_sha256 != raw
    assert raw not in {token.token_sha256, token.name}
    assert token.token_prefix == raw[:12]
    assert ApiToken.objects.filter(token_sha256=raw).count() == 0


# -- the actor is the authenticated user ------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "delivery-events",
        "delivery-retry-health",
        "deliver",
        "acknowledgements",
        "waive",
        "retry",
        "retry-plan",
        "retry-worker-run",
    ],
)
@pytest.mark.parametrize("field", ["actor", "generated_by", "signer", "executed_by"])
def test_identity_fields_in_the_body_are_rejected(api, report, failed_delivery, endpoint, field):
    # given an operator signed in as olivia
    url = {
        "delivery-events": f"{R}/delivery-events",
        "delivery-retry-health": f"{R}/delivery-retry-health",
        "deliver": f"{A}/deliver",
        "acknowledgements": f"{A}/{report.health_id}/acknowledgements",
        "waive": f"{A}/deliveries/{failed_delivery.delivery_id}/waive",
        "retry": f"{A}/deliveries/{failed_delivery.delivery_id}/retry",
        "retry-plan": f"{A}/retry-plan",
        "retry-worker-run": f"{A}/retry-worker-run",
    }[endpoint]
    before = closure_counts()

    # when the body claims to act as someone else
    response = api.post(url, {field: "mallory"}, format="json")

    # then the field is refused, and nothing was written: unknown, or on the two endpoints whose
    # reference clients send generated_by, refused with a pointer to authentication
    if field == "generated_by" and endpoint in ("retry-plan", "retry-worker-run"):
        assert response.status_code == 400
        assert response.json()["code"] == "reference_field_unsupported"
        assert list(response.json()["errors"]) == ["generated_by"]
    else:
        assert_invalid(response, {field: ["Unknown field."]})
    assert closure_counts() == before


def test_actor_and_signer_are_the_session_user(api, operator, failed_delivery):
    # given an operator signed in as olivia and a failed delivery
    # when she plans retries and dry-runs the worker
    planned = api.post(f"{A}/retry-plan", {}, format="json")
    ran = api.post(f"{A}/retry-worker-run", {}, format="json")

    # then every actor, author and evidence signer is olivia
    assert planned.status_code == 201, planned.json()
    assert ran.status_code == 201, ran.json()
    actor = {"username": "olivia", "user_id": operator.pk, "authentication": "session"}
    assert planned.json()["actor"] == actor
    assert ran.json()["actor"] == actor
    assert planned.json()["plan"]["generated_by"] == "olivia"
    assert planned.json()["metadata"]["signer"] == "olivia"
    assert ran.json()["run"]["started_by"] == "olivia"
    assert ran.json()["metadata"]["signer"] == "olivia"
    assert set(Evidence.objects.values_list("signer", flat=True)) == {"olivia"}


def test_manual_retry_is_recorded_as_the_token_user(roles, report, receiver, webhook):
    # given an operator "otto" with a token, and a delivery that failed
    otto = make_user("otto", "operators")
    _, raw = ApiToken.issue(user=otto, name="bot")
    alert = make_alert(report=report, actor=otto)
    delivery = make_delivery(alert=alert, connector=webhook)
    make_execution(delivery=delivery, actor=otto)
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data("ok")

    # when the token retries it by hand
    response = bearer(raw).post(f"{A}/deliveries/{delivery.delivery_id}/retry", {}, format="json")

    # then the attempt, its evidence and the response all name otto
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["execution_record"]["executed_by"] == "otto"
    assert body["execution_record"]["trigger"] == "manual"
    assert body["execution_record"]["execution_status"] == "delivered"
    assert body["metadata"]["signer"] == "otto"
    assert body["actor"]["username"] == "otto"
    assert body["actor"]["authentication"] == "token"
    assert len(receiver.log) == 1
