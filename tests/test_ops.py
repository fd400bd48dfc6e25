"""Operations: health and readiness probes, Prometheus metrics, request ids and JSON logs,
problem+json outside DRF."""

import json
import logging

import pytest
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client

from closure.ops.logs import JsonFormatter, redact
from tests.conftest import PROBLEM_CONTENT_TYPE, A, B, assert_problem, client_for
from tests.factories import (
    make_alert,
    make_decision,
    make_delivery,
    make_execution,
    make_health_report,
    make_retry_plan,
    make_user,
    make_worker_run,
)

METRICS_TOKEN = "scrape-token-for-tests-0123456789"


# -- probes ------------------------------------------------------------------------------------


def test_healthz_answers_anonymous_without_touching_the_database(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "Set-Cookie" not in response.headers


def test_readyz_is_ready_when_database_answers_and_migrations_are_applied(db):
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "migrations": "applied"}


def test_readyz_is_503_while_a_migration_is_not_applied(db):
    # Forget (inside the test's transaction) that the newest closure migration was applied.
    latest = MigrationRecorder.Migration.objects.filter(app="closure").order_by("-name").first()
    MigrationRecorder.Migration.objects.filter(pk=latest.pk).delete()
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert body["code"] == "migrations_pending"
    assert body["detail"] == f"1 migration(s) not applied: closure.{latest.name}"


def test_probes_refuse_other_methods(db):
    assert Client().post("/healthz").status_code == 405
    assert Client().post("/readyz").status_code == 405


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_refuse_anonymous_and_wrong_token(db, settings):
    settings.CAVRA_METRICS_TOKEN = METRICS_TOKEN
    anonymous = Client().get("/metrics")
    assert_problem(
        anonymous,
        status=401,
        code="not_authenticated",
        title="Authentication required",
        detail="Send the metrics bearer token, or sign in as staff.",
    )
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code == 401


def test_metrics_refuse_a_non_staff_session_and_any_token_when_none_is_configured(
    operator, settings
):
    settings.CAVRA_METRICS_TOKEN = ""
    assert client_for(operator).get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_metrics_report_the_reporting_loop_from_the_database(operator, offline_webhook, settings):
    settings.CAVRA_METRICS_TOKEN = METRICS_TOKEN
    report = make_health_report(actor=operator)
    alert = make_alert(report=report, actor=operator, providers=["exec-webhook"])
    delivery = make_delivery(alert=alert, connector=offline_webhook)
    make_execution(delivery=delivery, actor=operator)
    make_execution(
        delivery=delivery, actor=operator, execution_status="delivered", attempt_number=2
    )
    plan = make_retry_plan(actor=operator, alert_level="critical")
    make_decision(plan=plan, delivery=delivery)
    make_worker_run(actor=operator, dry_run=False, status="failed")
    make_worker_run(actor=operator)

    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    lines = set(response.content.decode().splitlines())
    expected = {
        'cavra_connector_attempts_total{outcome="failed",provider="exec-webhook"} 1.0',
        'cavra_connector_attempts_total{outcome="delivered",provider="exec-webhook"} 1.0',
        'cavra_alert_deliveries{status="failed"} 1.0',
        'cavra_retry_decisions_total{action="retry",status="pending"} 1.0',
        'cavra_worker_runs_total{mode="live",status="failed"} 1.0',
        'cavra_worker_runs_total{mode="dry_run",status="no_work"} 1.0',
        "cavra_closure_closed 0.0",
        'cavra_closure_open_risks{code="executive_retry_health_alert_delivery_failed",'
        'severity="critical"} 1.0',
    }
    assert expected <= lines, sorted(expected - lines)


def test_metrics_measure_request_latency_by_route(operator, settings):
    settings.CAVRA_METRICS_TOKEN = METRICS_TOKEN
    staff = make_user("stella", is_staff=True)
    client = client_for(staff)
    client.get("/healthz")
    body = client.get("/metrics").content.decode()
    count_line = next(
        line
        for line in body.splitlines()
        if line.startswith("cavra_http_request_duration_seconds_count")
        and 'route="healthz"' in line
        and 'status="2xx"' in line
    )
    assert float(count_line.rsplit(" ", 1)[1]) >= 1.0


# -- request ids and logs ----------------------------------------------------------------------


def test_every_response_carries_a_request_id_and_a_valid_incoming_one_is_kept(db):
    made = Client().get("/healthz")
    assert len(made["X-Request-ID"]) == 32
    kept = Client().get("/healthz", HTTP_X_REQUEST_ID="proxy-req-12345678")
    assert kept["X-Request-ID"] == "proxy-req-12345678"
    refused = Client().get("/healthz", HTTP_X_REQUEST_ID="bad id with spaces\nand a newline")
    assert refused["X-Request-ID"] != "bad id with spaces\nand a newline"
    assert len(refused["X-Request-ID"]) == 32


def test_access_log_line_is_json_with_the_request_id_and_no_credentials(operator, caplog):
    from closure.models import ApiToken

    _, raw = ApiToken.issue(user=operator, name="logs")
    with caplog.at_level(logging.INFO, logger="cavra.request"):
        response = Client().get(
            f"{B}/final-reporting-closure-dashboard", HTTP_AUTHORIZATION=f"Bearer {raw}"
        )
    assert response.status_code == 200
    record = next(r for r in caplog.records if r.name == "cavra.request")
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == response["X-Request-ID"]
    assert line["message"] == "request"
    assert line["method"] == "GET"
    assert line["path"] == f"{B}/final-reporting-closure-dashboard"
    assert line["status"] == 200
    assert line["user_id"] == operator.pk
    assert raw not in json.dumps(line)


def test_json_formatter_redacts_credentials_in_messages_and_exceptions():
    formatter = JsonFormatter()
    try:
        raise ValueError("POST https://user:hunter2@hooks.example/x?token=abc123 failed")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "cavra.test",
            logging.ERROR,
            __file__,
            1,
            "auth %s",
            ("Bearer cavra_abcdefghijkl",),
            sys.exc_info(),
        )
    line = json.loads(formatter.format(record))
    assert line["message"] == "auth [redacted]"
    assert "hunter2" not in line["exception"]
    assert "abc123" not in line["exception"]
    assert redact("whsec_c2VjcmV0 and password=pa55") == "[redacted] and [redacted]"


# -- problem+json outside DRF --------------------------------------------------------------------


def test_unknown_api_path_is_a_problem_not_an_html_page(operator):
    response = client_for(operator).get(f"{A}/no-such/thing/here")
    assert_problem(
        response, status=404, code="not_found", title="Not found", detail="No such resource."
    )
    response = Client().get("/api/v1/no-such-resource/")
    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE


def test_unknown_console_path_stays_an_html_page_for_browsers(operator):
    response = client_for(operator).get("/console/no-such-page/", HTTP_ACCEPT="text/html")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_server_error_in_an_api_view_is_a_500_problem_without_traceback(operator, monkeypatch):
    import closure.api.views as views

    def crash():
        raise RuntimeError("secret internals /srv/app/closure/selectors.py line 42")

    monkeypatch.setattr(views, "closure_dashboard", crash)
    client = client_for(operator)
    client.raise_request_exception = False
    response = client.get(f"{B}/final-reporting-closure-dashboard")
    assert_problem(
        response,
        status=500,
        code="server_error",
        title="Internal server error",
        detail="The server failed to answer; the error was logged with the request id.",
    )
    assert b"Traceback" not in response.content
    assert b"secret internals" not in response.content


def test_database_error_in_an_api_view_is_a_503_problem_with_retry_after(operator, monkeypatch):
    from django.db import OperationalError

    import closure.api.views as views

    def lost():
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(views, "closure_dashboard", lost)
    response = client_for(operator).get(f"{B}/final-reporting-closure-dashboard")
    assert_problem(
        response,
        status=503,
        code="database_unavailable",
        title="Service unavailable",
        detail="The database is unavailable. Nothing was changed; retry later.",
    )
    assert response["Retry-After"] == "5"


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_wrong_method_on_an_action_is_a_405_problem_with_allow(operator, method):
    response = getattr(client_for(operator), method)(f"{A}/retry-plan")
    assert response.status_code == 405
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["code"] == "method_not_allowed"
    assert "POST" in response["Allow"]


def test_database_cache_table_exists_for_the_shared_throttle_state(db):
    assert "cavra_cache" in connection.introspection.table_names()


def test_evidence_rows_are_logged_with_the_request_id_that_wrote_them(operator, caplog):
    with caplog.at_level(logging.INFO, logger="cavra.evidence"):
        response = client_for(operator).post(
            f"{A}/retry-plan",
            {"retry_policy": {}},
            format="json",
            HTTP_X_REQUEST_ID="req-plan-0001",
        )
    assert response.status_code == 201
    plan_evidence = response.json()["metadata"]
    records = [r for r in caplog.records if r.name == "cavra.evidence"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["message"] == "evidence appended"
    assert line["request_id"] == "req-plan-0001"
    assert line["sequence"] == plan_evidence["sequence"]
    assert line["session_id"] == plan_evidence["session_id"]
    assert line["metadata_kind"] == plan_evidence["metadata_kind"]
