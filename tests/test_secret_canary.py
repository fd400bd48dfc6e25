"""The secret canary: connectors of every kind hold unique random secrets; the whole flow runs
with failures, a rate limit, an exception inside a send, retries and a secret rotation in the
admin; then every API response, admin page, console page and export, every log line (DEBUG,
SQL included) and every column of every table is searched for the secrets. None may appear."""

import json
import logging
import secrets
import smtplib

import pytest
from django.apps import apps
from django.contrib import admin
from django.core import mail
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from closure.api.urls import router
from closure.connectors import teams
from closure.models import AlertDelivery, Connector, ExecutionRecord
from tests.conftest import A, B, R, client_for
from tests.receivers import Answer, LocalReceiver

pytestmark = pytest.mark.django_db

CANARY_BACKEND = "tests.test_secret_canary.CanaryMailBackend"


class CanaryMailBackend(SMTPBackend):
    """An SMTP backend that never connects: its first send fails the way a real server does,
    quoting the account it was given; later sends land in the memory outbox."""

    calls: list[tuple[str, str]] = []

    def send_messages(self, email_messages):
        CanaryMailBackend.calls.append((self.username, self.password))
        if len(CanaryMailBackend.calls) == 1:
            raise smtplib.SMTPAuthenticationError(
                535, f"5.7.8 bad credentials {self.username}:{self.password}".encode()
            )
        mail.outbox.extend(email_messages)
        return len(email_messages)


def _canary(label: str) -> str:
    return f"canary{label}{secrets.token_hex(12)}"


class Hub:
    """One local HTTP server standing in for every HTTP connector, scripted per attempt."""

    def __init__(self, canaries: dict[str, str]) -> None:
        self.canaries = canaries
        self.attempts: dict[str, int] = {}

    def answer(self, request) -> Answer:
        route = request.path.split("/")[1]
        attempt = self.attempts[route] = self.attempts.get(route, 0) + 1
        # Receivers that fail quote what they got back: path, query and body (with the
        # routing key), as real error pages do.
        echo = f"no route {request.path} for {request.body[:300].decode()}".encode()
        if route == "workflows":
            return Answer(status=202, body=b"")  # its first attempt raised before sending
        if attempt == 1:
            return Answer(status=500, body=echo)
        if route == "services" and attempt == 2:
            return Answer(status=429, headers=(("Retry-After", "1"),), body=echo)
        if route == "v2":
            return Answer(status=202, body=b'{"status":"success","message":"Event processed"}')
        return Answer(status=200, body=b"ok")


def _console_paths() -> list[str]:
    """Console pages that take no argument (whatever the console module holds today)."""
    paths: list[str] = []

    def walk(patterns, prefix):
        for pattern in patterns:
            route = str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + route)
            elif isinstance(pattern, URLPattern) and "<" not in route and "(" not in route:
                paths.append("/" + prefix + route.lstrip("^").rstrip("$"))

    walk(get_resolver().url_patterns, "")
    return [p for p in paths if p.startswith("/console/") and "logout" not in p]


def _admin_pages(client: Client, user) -> list:
    """Every registered model's changelist and first change form, the connector add form and
    history, and every admin action (exports) run on the whole changelist."""
    responses = []
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        base = f"/admin/{opts.app_label}/{opts.model_name}/"
        responses.append(client.get(base))
        first = model.objects.order_by("pk").first()
        if first is not None:
            responses.append(client.get(f"{base}{first.pk}/change/"))
            responses.append(client.get(f"{base}{first.pk}/history/"))
        request = client.get(base).wsgi_request
        request.user = user
        for name in model_admin.get_actions(request):
            if name == "delete_selected":
                continue
            pks = [str(pk) for pk in model.objects.values_list("pk", flat=True)]
            responses.append(
                client.post(base, {"action": name, "_selected_action": pks, "index": 0})
            )
    responses.append(client.get("/admin/closure/connector/add/"))
    responses.append(client.get("/admin/"))
    return responses


def _body(response) -> str:
    content = (
        b"".join(response.streaming_content) if response.streaming else response.content
    ).decode("utf-8", errors="replace")
    return content + repr(list(response.items()))


@pytest.fixture
def sql_logged():
    """Log every SQL statement with its parameters (DEBUG): a secret written in clear to any
    table would show up in the log as well."""
    connection.force_debug_cursor = True
    yield
    connection.force_debug_cursor = False


def test_no_connector_secret_appears_anywhere(
    api, operator, platform_owner, superuser, settings, caplog, monkeypatch, sql_logged
):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django")  # Django's own loggers default to INFO
    canaries = {
        "webhook_path": _canary("hookpath"),
        "slack_path": _canary("slackpath"),
        "teams_sig": _canary("teamssig"),
        "pd_path": _canary("pdpath"),
        "routing_key": secrets.token_hex(16),
        "mail_user": _canary("mailbox"),
        "smtp_user": _canary("smtpuser"),
        "smtp_password": _canary("smtppass"),
    }
    signing_old = "whsec_" + __import__("base64").b64encode(secrets.token_bytes(24)).decode()
    signing_new = "whsec_" + __import__("base64").b64encode(secrets.token_bytes(24)).decode()
    for label, value in (("signing_old", signing_old), ("signing_new", signing_new)):
        canaries[label] = value
        canaries[f"{label}_key"] = value.removeprefix("whsec_")
    CanaryMailBackend.calls = []
    settings.MAILERS = {"default": {"BACKEND": CANARY_BACKEND, "OPTIONS": {"host": "smtp.invalid"}}}
    raised = []

    def exploding_render(view):
        # An exception inside a send whose message quotes the configuration.
        if not raised:
            raised.append(True)
            raise ValueError(f"cannot render for {teams_url}")
        return real_render(view)

    real_render = teams.render
    monkeypatch.setattr(teams, "render", exploding_render)
    hub = Hub(canaries)
    responses = []
    owner_admin = Client()
    platform_owner.is_staff = True
    platform_owner.save()
    owner_admin.force_login(platform_owner)

    with LocalReceiver(hub.answer) as receiver:
        teams_url = receiver.url_for(f"/workflows/run?api-version=1&sig={canaries['teams_sig']}")
        # -- the platform owner configures one connector of each kind in the admin
        forms = [
            {
                "name": "exec-webhook",
                "kind": "webhook",
                "url": receiver.url_for(f"/hooks/{canaries['webhook_path']}"),
                "signing_secret": signing_old,
            },
            {
                "name": "exec-slack",
                "kind": "slack",
                "url": receiver.url_for(f"/services/T0/B0/{canaries['slack_path']}"),
            },
            {"name": "exec-teams", "kind": "teams", "url": teams_url},
            {
                "name": "exec-pd",
                "kind": "pagerduty",
                "routing_key": canaries["routing_key"],
                "events_url": receiver.url_for(f"/v2/enqueue/{canaries['pd_path']}"),
            },
            {
                "name": "exec-mail",
                "kind": "email",
                "recipients": f"{canaries['mail_user']}@example.com",
                "smtp_username": canaries["smtp_user"],
                "smtp_password": canaries["smtp_password"],
            },
        ]
        for form in forms:
            response = owner_admin.post(
                "/admin/closure/connector/add/", {**form, "enabled": "on", "_save": "Save"}
            )
            assert response.status_code == 302, _body(response)[:3000]
            responses.append(response)

        # -- the flow: every first attempt fails, retries repair all but a rate limit
        responses.append(api.post(f"{R}/delivery-retry-health", {}, format="json"))
        health_id = responses[-1].json()["health"]["health_id"]
        responses.append(api.post(f"{A}/deliver", {}, format="json"))
        assert [d["status"] for d in responses[-1].json()["deliveries"]] == ["failed"] * 5
        immediate = {"retry_delay_minutes": 0, "allow_immediate_retry": True}
        responses.append(api.post(f"{A}/retry-plan", {"retry_policy": immediate}, format="json"))
        plan_id = responses[-1].json()["plan"]["retry_plan_id"]
        responses.append(
            api.post(
                f"{A}/retry-worker-run",
                {"execute": True, "retry_plan_id": plan_id},
                format="json",
            )
        )
        # -- a rotation in the admin, then a manual retry of the rate-limited Slack delivery
        webhook = Connector.objects.get(name="exec-webhook")
        responses.append(
            owner_admin.post(
                f"/admin/closure/connector/{webhook.pk}/change/",
                {"kind": "webhook", "enabled": "on", "signing_secret": signing_new},
            )
        )
        slack_delivery = AlertDelivery.objects.get(provider="exec-slack")
        responses.append(
            api.post(f"{A}/deliveries/{slack_delivery.delivery_id}/retry", {}, format="json")
        )
        for provider in ("exec-webhook", "exec-slack", "exec-teams", "exec-pd", "exec-mail"):
            responses.append(
                api.post(f"{A}/{health_id}/acknowledgements", {"provider": provider}, format="json")
            )

    # the secrets were really used: every connector was reached with them
    paths = [request.path for request in receiver.requests]
    assert f"/hooks/{canaries['webhook_path']}" in paths
    assert any(canaries["teams_sig"] in path for path in paths)
    pd_bodies = [r.body for r in receiver.requests if r.path.startswith("/v2/")]
    assert all(canaries["routing_key"].encode() in body for body in pd_bodies)
    assert CanaryMailBackend.calls[0] == (canaries["smtp_user"], canaries["smtp_password"])
    assert mail.outbox[0].to == [f"{canaries['mail_user']}@example.com"]
    assert raised == [True]
    # and the flow went as scripted
    assert dict(
        ExecutionRecord.objects.values_list("provider", "error_class").filter(attempt_number=1)
    ) == {
        "exec-webhook": "http_5xx",
        "exec-slack": "http_5xx",
        "exec-teams": "connection_error",
        "exec-pd": "http_5xx",
        "exec-mail": "config_error",
    }
    assert dict(AlertDelivery.objects.values_list("provider", "status")) == {
        "exec-webhook": "delivered",
        "exec-slack": "delivered",
        "exec-teams": "accepted",
        "exec-pd": "delivered",
        "exec-mail": "delivered",
    }
    assert ExecutionRecord.objects.filter(http_status=429, retry_after_seconds=1).count() == 1
    assert [r.status_code for r in responses[5:]] == [201, 201, 201, 201, 302] + [201] * 6

    # -- read everything back: API, dashboards, admin for two roles, console, exports
    for path in [
        f"{B}/final-reporting-closure-dashboard",
        f"{R}/delivery-retry-health-alert-dashboard",
        f"{R}/delivery-retry-health",
        f"{R}/delivery-retry-health?preview=true",
        A,
        "/api/v1/",
        "/api/v1/evidence/verify/",
    ]:
        responses.append(api.get(path))
    reader = client_for(superuser)
    for prefix, viewset, _basename in router.registry:
        listed = reader.get(f"/api/v1/{prefix}/?page_size=500")
        responses.append(listed)
        for row in listed.json()["results"]:
            responses.append(reader.get(f"/api/v1/{prefix}/{row[viewset.lookup_field]}/"))
    superuser_admin = Client()
    superuser_admin.force_login(superuser)
    responses.extend(_admin_pages(superuser_admin, superuser))
    responses.extend(_admin_pages(owner_admin, platform_owner))
    for path in _console_paths():
        responses.append(reader.get(path))
    assert all(r.status_code < 500 for r in responses)
    assert sum(r.status_code == 200 for r in responses) > 60

    # then no secret appears in any response
    texts = {f"{r.request['REQUEST_METHOD']} {r.request['PATH_INFO']}": _body(r) for r in responses}
    for where, text in texts.items():
        for label, value in canaries.items():
            assert value not in text, f"{label} leaked in {where}"
    # nor in any log line, SQL included (the receivers' own logs are silent)
    log_text = "\n".join(
        record.getMessage() + str(record.exc_info or "") for record in caplog.records
    )
    for label, value in canaries.items():
        assert value not in log_text, f"{label} leaked in the logs"
    assert "connector exec-teams raised ValueError" in log_text
    assert "INSERT INTO" in log_text
    # nor in any column of any table, the evidence ledger first
    for model in apps.get_models():
        fields = [f.attname for f in model._meta.concrete_fields]
        dump = json.dumps(list(model.objects.values_list(*fields)), default=str)
        for label, value in canaries.items():
            assert value not in dump, f"{label} stored in {model._meta.db_table}"
