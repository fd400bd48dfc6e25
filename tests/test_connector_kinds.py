"""Every connector kind against a real local server (HTTP or SMTP) or the memory mail backend:
what each one sends, and how each outcome is classified and recorded."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.utils import format_datetime

import pytest
import time_machine
from django.core import mail
from werkzeug import Response

from closure.models import AlertDelivery, ExecutionRecord, RetryDecision
from closure.selectors import closure_dashboard
from closure.services.alerts import (
    acknowledgement_create,
    delivery_retry_now,
    delivery_waive,
    health_alert_send,
)
from closure.services.connectors import connector_save
from closure.services.health import HealthParameters, health_report_build
from closure.services.retries import RetryPolicy, retry_plan_create
from closure.worker import WorkerOptions, worker_run_execute
from tests.conftest import use_smtp_server
from tests.factories import make_event, make_kind_connector, routing_key, whsec
from tests.receivers import LocalReceiver
from tests.smtp_receiver import SmtpReceiver

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
HTTP_KINDS = ["webhook", "slack", "teams", "pagerduty"]
# What each kind's receiver answers when it takes the alert.
SUCCESS = {
    "webhook": (200, "ok"),
    "slack": (200, "ok"),
    "teams": (200, ""),
    "pagerduty": (202, '{"status":"success","message":"Event processed"}'),
}
CONSOLE = "http://127.0.0.1:8000/console/"


@pytest.fixture
def critical_report(operator):
    """Critical with three findings: a failed report delivery, no worker run, no plan."""
    with time_machine.travel(T0, tick=False):
        make_event(
            actor=operator,
            kind="report_delivery",
            status="failed",
            provider="teams",
            run_id="drill-7",
            event_id="evt-failed-7",
        )
        report = health_report_build(actor=operator, parameters=HealthParameters())
    assert [f["category"] for f in report.findings] == [
        "missed_executive_delivery_retry_worker",
        "stale_executive_delivery_retry_plan",
        "failed_executive_report_delivery",
    ]
    return report


def _send(actor, report, **options) -> tuple[AlertDelivery, ExecutionRecord]:
    result = health_alert_send(actor=actor, health_id=report.health_id, **options)
    [(delivery, record)] = result.attempts
    delivery.refresh_from_db()
    return delivery, record


def _no_empty_text(value, path="$") -> list[str]:
    """Paths of empty strings anywhere in a rendered message (a card with blank fields)."""
    if isinstance(value, str):
        return [path] if not value.strip() else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _no_empty_text(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _no_empty_text(v, f"{path}[{i}]")]
    return []


# -- what each kind sends -----------------------------------------------------------------------


def test_slack_renders_level_findings_counts_and_console_link(operator, critical_report, receiver):
    # given a Slack incoming webhook that answers ok
    make_kind_connector("slack", "exec-slack", receiver.url_for("/services/T1/B2/abc"))
    receiver.expect_oneshot_request("/services/T1/B2/abc", method="POST").respond_with_data("ok")

    # when the alert is sent
    delivery, record = _send(operator, critical_report)

    # then it is delivered, and the message carries the level, every finding, the counts and
    # a button back to the console
    assert (record.execution_status, record.http_status, record.error_class) == (
        "delivered",
        200,
        "",
    )
    assert delivery.status == "delivered"
    [(request, _)] = receiver.log
    sent = json.loads(request.get_data())
    assert sent["text"] == (
        "CAVRA CRITICAL: executive delivery retry health: Executive report delivery and its "
        "retries are critical: 3 findings, led by missed executive delivery retry worker."
    )
    header, summary, facts, findings, actions, context = sent["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "CAVRA CRITICAL: executive delivery retry health"},
    }
    assert summary["text"]["text"].startswith(":red_circle: Executive report delivery")
    assert [f["text"] for f in facts["fields"]] == [
        "*Health level*\nCRITICAL",
        "*Findings*\n3 (2 critical, 1 warning)",
        "*Upstream events*\n1",
        "*Report deliveries*\n1 failed",
    ]
    assert findings["text"]["text"] == "\n".join(
        [
            "• *CRITICAL* Missed executive delivery retry worker (1): "
            "No upstream retry worker run has been reported.",
            "• *WARNING* Stale executive delivery retry plan (1): "
            "No upstream retry plan in the last 180 minutes.",
            "• *CRITICAL* Failed executive report delivery (1): "
            "1 failed executive report deliveries have no later delivered event for the same "
            "run and provider.",
        ]
    )
    assert actions["elements"][0]["url"] == CONSOLE
    assert context["elements"][0]["text"] == (
        f"Health report {critical_report.health_id} · alert {delivery.alert.alert_id} · "
        f"delivery {delivery.delivery_id} · attempt 1"
    )
    assert _no_empty_text(sent) == []


def test_teams_renders_an_adaptive_card_with_facts_findings_and_link(
    operator, critical_report, receiver
):
    # given a Teams workflow webhook that posts the card at once (200)
    make_kind_connector("teams", "exec-teams", receiver.url_for("/workflows/run"))
    receiver.expect_oneshot_request("/workflows/run", method="POST").respond_with_data("")

    # when the alert is sent
    delivery, record = _send(operator, critical_report)

    # then it is delivered, and the card says what the alert is about
    assert (record.execution_status, delivery.status) == ("delivered", "delivered")
    [(request, _)] = receiver.log
    sent = json.loads(request.get_data())
    assert sent["type"] == "message"
    [attachment] = sent["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    title, summary, facts, findings_title, *finding_blocks, reference = card["body"]
    assert (title["text"], title["color"]) == (
        "CAVRA CRITICAL: executive delivery retry health",
        "Attention",
    )
    assert facts["facts"] == [
        {"title": "Health level", "value": "CRITICAL"},
        {"title": "Findings", "value": "3 (2 critical, 1 warning)"},
        {"title": "Upstream events", "value": "1"},
        {"title": "Report deliveries", "value": "1 failed"},
    ]
    assert findings_title["text"] == "Findings"
    assert [b["text"].split(":")[0] for b in finding_blocks] == [
        "CRITICAL · Missed executive delivery retry worker (1)",
        "WARNING · Stale executive delivery retry plan (1)",
        "CRITICAL · Failed executive report delivery (1)",
    ]
    assert delivery.delivery_id in reference["text"]
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open the CAVRA console", "url": CONSOLE}
    ]
    assert _no_empty_text(card) == []


def test_pagerduty_triggers_with_dedup_key_severity_details_and_link(
    operator, critical_report, receiver
):
    # given a PagerDuty connector whose Events API URL is a local server
    key = routing_key()
    make_kind_connector("pagerduty", "exec-pd", receiver.url_for("/v2/enqueue"), routing_key=key)
    receiver.expect_oneshot_request("/v2/enqueue", method="POST").respond_with_data(
        '{"status":"success","message":"Event processed","dedup_key":"x"}', status=202
    )

    # when the alert is sent
    delivery, record = _send(operator, critical_report)

    # then PagerDuty's 202 success is delivered, and the event is a trigger keyed by the
    # delivery's public ID
    assert (record.execution_status, record.http_status, delivery.status) == (
        "delivered",
        202,
        "delivered",
    )
    [(request, _)] = receiver.log
    event = json.loads(request.get_data())
    assert event["routing_key"] == key
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == delivery.delivery_id
    payload = event["payload"]
    assert payload["summary"] == (
        "[CRITICAL] CAVRA executive delivery retry health: 3 finding(s), led by missed "
        "executive delivery retry worker"
    )
    assert (payload["severity"], payload["source"], payload["class"]) == (
        "critical",
        "cavra-closure",
        "Missed executive delivery retry worker",
    )
    assert payload["custom_details"]["health_id"] == critical_report.health_id
    assert payload["custom_details"]["delivery_id"] == delivery.delivery_id
    assert len(payload["custom_details"]["findings"]) == 3
    assert payload["custom_details"]["counts"]["Findings"] == "3 (2 critical, 1 warning)"
    assert event["links"] == [{"href": CONSOLE, "text": "Open the CAVRA console"}]


def test_pagerduty_retry_reuses_the_dedup_key_so_it_never_pages_twice(
    operator, critical_report, receiver
):
    # given PagerDuty fails the first event and accepts the second
    make_kind_connector("pagerduty", "exec-pd", receiver.url_for("/v2/enqueue"))
    receiver.expect_ordered_request("/v2/enqueue").respond_with_data("busy", status=500)
    receiver.expect_ordered_request("/v2/enqueue").respond_with_data(
        '{"status":"success"}', status=202
    )

    # when the alert is sent and then retried by hand
    delivery, first = _send(operator, critical_report)
    retried, second = delivery_retry_now(actor=operator, delivery_id=delivery.delivery_id)

    # then both events carry the same dedup_key: PagerDuty folds them into one incident
    assert (first.execution_status, second.execution_status) == ("failed", "delivered")
    assert retried.status == "delivered"
    keys = [json.loads(request.get_data())["dedup_key"] for request, _ in receiver.log]
    assert keys == [delivery.delivery_id, delivery.delivery_id]


def test_pagerduty_2xx_without_success_status_is_failed(operator, critical_report, receiver):
    # given an endpoint that answers 202 but not PagerDuty's success body
    make_kind_connector("pagerduty", "exec-pd", receiver.url_for("/v2/enqueue"))
    receiver.expect_oneshot_request("/v2/enqueue").respond_with_data(
        '{"status":"invalid event"}', status=202
    )

    # when the alert is sent
    delivery, record = _send(operator, critical_report)

    # then it is not taken as delivered
    assert (record.execution_status, record.http_status, record.error_class) == (
        "failed",
        202,
        "http_4xx",
    )
    assert delivery.status == "failed"


def test_email_sends_plain_text_and_html_through_the_memory_backend(operator, critical_report):
    # given an e-mail connector with two recipients and its own sender
    make_kind_connector(
        "email",
        "exec-mail",
        recipients=["cfo@example.com", "release@example.com"],
        from_email="cavra@example.com",
    )

    # when the alert is sent
    delivery, record = _send(operator, critical_report)

    # then one message went out with a subject that says the level and the finding count
    assert (record.execution_status, record.error_class, record.http_status) == (
        "delivered",
        "",
        None,
    )
    assert delivery.status == "delivered"
    [message] = mail.outbox
    assert message.subject == "[CAVRA] CRITICAL: executive delivery retry health (3 findings)"
    assert message.to == ["cfo@example.com", "release@example.com"]
    assert message.from_email == "cavra@example.com"
    assert message.extra_headers["X-CAVRA-Delivery-Id"] == delivery.delivery_id
    # and a plain-text body with every finding, the counts and the console link
    assert message.body.splitlines()[:4] == [
        "CAVRA CRITICAL: executive delivery retry health",
        "",
        "Executive report delivery and its retries are critical: 3 findings, led by missed "
        "executive delivery retry worker.",
        "",
    ]
    assert (
        "- CRITICAL · Failed executive report delivery (1): 1 failed executive report "
        "deliveries have no later delivered event for the same run and provider." in message.body
    )
    assert "- Report deliveries: 1 failed" in message.body
    assert f"Open the CAVRA console: {CONSOLE}" in message.body
    # and an HTML alternative with the same facts and the link
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    assert f'<a href="{CONSOLE}">Open the CAVRA console</a>' in html
    assert '<th style="text-align: left; padding: 2px 12px 2px 0;">Findings</th>' in html
    assert "<strong>WARNING</strong> Stale executive delivery retry plan (1)" in html


@pytest.mark.parametrize("kind", ["slack", "teams", "pagerduty", "email"])
def test_a_forced_healthy_alert_still_says_something_useful(operator, receiver, kind):
    # given a healthy report (no findings) sent anyway
    with time_machine.travel(T0, tick=False):
        make_event(actor=operator, kind="retry_worker_run", status="succeeded")
        make_event(actor=operator, kind="retry_plan", status="succeeded")
        report = health_report_build(actor=operator, parameters=HealthParameters())
    assert report.alert_level == "healthy"
    make_kind_connector(kind, f"healthy-{kind}", receiver.url_for("/hook"))
    status, body = SUCCESS.get(kind, (200, "ok"))
    receiver.expect_oneshot_request("/hook").respond_with_data(body, status=status)

    # when it is forced out
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        delivery, record = _send(operator, report, force=True)

    # then it says the report is healthy, with no blank field anywhere
    assert record.execution_status == "delivered"
    if kind == "email":
        [message] = mail.outbox
        assert "No findings: the report is healthy" in message.body
        assert message.subject == "[CAVRA] HEALTHY: executive delivery retry health (0 findings)"
        return
    [(request, _)] = receiver.log
    sent = json.loads(request.get_data())
    assert _no_empty_text(sent) == []
    text = json.dumps(sent)
    assert "healthy" in text
    if kind != "pagerduty":
        assert "No findings: the report is healthy" in text
    else:
        assert sent["payload"]["severity"] == "info"


# -- outcomes shared by every HTTP kind -------------------------------------------------------


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_kind_500_is_failed_http_5xx(operator, critical_report, receiver, kind):
    # given a receiver that fails
    make_kind_connector(kind, f"{kind}-500", receiver.url_for("/hook"))
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data("boom", status=500)

    # when the alert is sent
    delivery, record = _send(operator, critical_report)

    # then the attempt is failed, classified, hashed, and the delivery waits for a retry
    assert (record.execution_status, record.http_status, record.error_class) == (
        "failed",
        500,
        "http_5xx",
    )
    assert record.response_sha256 == hashlib.sha256(b"boom").hexdigest()
    assert record.response_excerpt == "boom"
    assert (delivery.status, delivery.attempt_count, delivery.retry_not_before) == (
        "failed",
        1,
        None,
    )


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize("header", ["seconds", "http-date"])
def test_kind_429_with_retry_after_is_rate_limited_and_the_planner_waits(
    operator, critical_report, receiver, kind, header
):
    # given a receiver that rate-limits for two minutes
    value = "120" if header == "seconds" else format_datetime(T0 + timedelta(minutes=2), True)
    make_kind_connector(kind, f"{kind}-429", receiver.url_for("/hook"))
    receiver.expect_oneshot_request("/hook").respond_with_data(
        "slow down", status=429, headers={"Retry-After": value}
    )

    # when the alert is sent at a frozen instant, and a plan allowing immediate retries is made
    with time_machine.travel(T0, tick=False):
        delivery, record = _send(operator, critical_report)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        plan, _ = retry_plan_create(
            actor=operator, policy=RetryPolicy(retry_delay_minutes=0, allow_immediate_retry=True)
        )

    # then the attempt is rate limited, its wait stored, and the plan waits for it
    assert (record.http_status, record.error_class, record.retry_after_seconds) == (
        429,
        "rate_limited",
        120,
    )
    assert delivery.retry_not_before == T0 + timedelta(seconds=120)
    decision = RetryDecision.objects.get(plan=plan)
    assert (decision.action, decision.reason, decision.next_retry_at) == (
        "wait",
        "retry_after_pending",
        T0 + timedelta(seconds=120),
    )


def test_retry_after_beyond_the_maximum_is_clamped(operator, critical_report, receiver, settings):
    # given a maximum of ten minutes and a receiver asking for a year (and more than fits)
    settings.CAVRA_RETRY_AFTER_MAX_SECONDS = 600
    make_kind_connector("slack", "clamped", receiver.url_for("/hook"))
    receiver.expect_oneshot_request("/hook").respond_with_data(
        "later", status=503, headers={"Retry-After": "99999999999999"}
    )

    # when the alert is sent
    with time_machine.travel(T0, tick=False):
        delivery, record = _send(operator, critical_report)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        plan, _ = retry_plan_create(
            actor=operator, policy=RetryPolicy(retry_delay_minutes=0, allow_immediate_retry=True)
        )

    # then only the maximum is stored and honoured
    assert (record.error_class, record.retry_after_seconds) == ("http_5xx", 600)
    assert delivery.retry_not_before == T0 + timedelta(seconds=600)
    assert RetryDecision.objects.get(plan=plan).next_retry_at == T0 + timedelta(seconds=600)


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_kind_server_that_hangs_times_out(operator, critical_report, kind):
    # given a receiver that never answers
    with LocalReceiver() as hanging:
        hanging.answer = hanging.hang
        make_kind_connector(kind, f"{kind}-hang", hanging.url_for("/hook"))

        # when the alert is sent with a one-second timeout
        delivery, record = _send(operator, critical_report, timeout_seconds=1)

        # then the attempt times out after about a second
        assert [r.path for r in hanging.requests] == ["/hook"]
    assert (record.execution_status, record.error_class, record.http_status) == (
        "failed",
        "timeout",
        None,
    )
    assert 900 <= record.latency_ms < 5000
    assert delivery.status == "failed"


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_kind_response_dripping_past_the_deadline_times_out(operator, critical_report, kind):
    # given a receiver that answers 200 but drips its body one byte every 200 ms
    with LocalReceiver() as dripping:
        dripping.answer = dripping.trickle(interval_seconds=0.2)
        make_kind_connector(kind, f"{kind}-drip", dripping.url_for("/hook"))

        # when the alert is sent with a one-second total deadline
        delivery, record = _send(operator, critical_report, timeout_seconds=1)

    # then the total deadline ends it even though every read made progress
    assert (record.execution_status, record.error_class, record.http_status) == (
        "failed",
        "timeout",
        None,
    )
    assert 900 <= record.latency_ms < 5000
    assert delivery.status == "failed"


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_kind_redirect_is_rejected_and_never_followed(operator, critical_report, receiver, kind):
    # given a receiver that redirects to a path it would accept
    make_kind_connector(kind, f"{kind}-redirect", receiver.url_for("/hook"))
    receiver.expect_request("/hook").respond_with_response(
        Response("moved", status=307, headers={"Location": receiver.url_for("/elsewhere")})
    )
    receiver.expect_request("/elsewhere").respond_with_data("ok")

    # when the alert is sent
    delivery, record = _send(operator, critical_report)

    # then the redirect fails the attempt by policy and its target is never requested
    assert (record.execution_status, record.http_status, record.error_class) == (
        "failed",
        307,
        "rejected_by_policy",
    )
    assert delivery.status == "failed"
    assert [request.path for request, _ in receiver.log] == ["/hook"]


# -- Slack: a 200 that is not ok --------------------------------------------------------------


@pytest.mark.parametrize(
    "answer", ['{"ok": false, "error": "invalid_blocks"}', "invalid_payload", "ok but not"]
)
def test_slack_200_whose_body_is_not_ok_is_failed(operator, critical_report, receiver, answer):
    # given Slack answering 200 with something other than ok
    make_kind_connector("slack", "exec-slack", receiver.url_for("/hook"))
    receiver.expect_oneshot_request("/hook").respond_with_data(answer, status=200)

    # when the alert is sent
    delivery, record = _send(operator, critical_report)

    # then the attempt failed (Slack refused the message) and will be planned for retry
    assert (record.execution_status, record.http_status, record.error_class) == (
        "failed",
        200,
        "http_4xx",
    )
    assert delivery.status == "failed"


def test_slack_json_ok_true_is_delivered(operator, critical_report, receiver):
    make_kind_connector("slack", "exec-slack", receiver.url_for("/hook"))
    receiver.expect_oneshot_request("/hook").respond_with_data('{"ok": true}', status=200)

    delivery, record = _send(operator, critical_report)

    assert (record.execution_status, delivery.status) == ("delivered", "delivered")


# -- Teams: 202 is accepted, not delivered ----------------------------------------------------


@pytest.fixture
def accepted_teams_delivery(operator, critical_report, receiver):
    """A Teams delivery whose workflow answered 202 (the connector does not trust it)."""
    make_kind_connector("teams", "exec-teams", receiver.url_for("/workflows/run"))
    receiver.expect_oneshot_request("/workflows/run").respond_with_data("", status=202)
    with time_machine.travel(T0, tick=False):
        result = health_alert_send(actor=operator, health_id=critical_report.health_id)
    [(delivery, record)] = result.attempts
    assert result.success is False
    delivery.refresh_from_db()
    return delivery, record


def test_teams_202_is_recorded_as_accepted_not_delivered(accepted_teams_delivery):
    delivery, record = accepted_teams_delivery

    assert (record.execution_status, record.http_status, record.error_class) == (
        "accepted",
        202,
        "",
    )
    assert (delivery.status, delivery.delivered_at, delivery.attempt_count) == (
        "accepted",
        None,
        1,
    )
    assert delivery.last_attempt_at == T0


def test_teams_accepted_is_an_open_unconfirmed_risk_and_never_retried(
    operator, accepted_teams_delivery
):
    delivery, _ = accepted_teams_delivery

    # when the closure dashboard is read and a plan allowing immediate retries is made
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        dashboard = closure_dashboard()
        plan, public = retry_plan_create(
            actor=operator, policy=RetryPolicy(retry_delay_minutes=0, allow_immediate_retry=True)
        )

    # then the accepted delivery is an open warning, not an acknowledgement risk
    assert dashboard["closure_state"] == "open"
    assert dashboard["open_items"] == ["executive_retry_health_alert_delivery_unconfirmed"]
    [risk] = dashboard["risks"]
    assert (risk["severity"], risk["count"], risk["refs"]) == (
        "warning",
        1,
        [delivery.delivery_id],
    )
    assert dashboard["summary"]["deliveries"]["accepted"] == 1
    assert dashboard["summary"]["executions"]["accepted"] == 1
    # and the planner leaves it alone: it is neither failed nor lost
    assert public["retry_decisions"] == []
    assert RetryDecision.objects.filter(delivery=delivery).count() == 0


def test_teams_accepted_counts_as_delivered_only_when_the_connector_says_so(
    operator, platform_owner, accepted_teams_delivery
):
    delivery, _ = accepted_teams_delivery

    # when the platform owner trusts the workflow's 202
    connector_save(
        actor=platform_owner,
        name="exec-teams",
        kind="teams",
        accepted_counts_as_delivered=True,
    )
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        dashboard = closure_dashboard()

    # then it counts as delivered: what stays open is the recipient's acknowledgement
    assert dashboard["open_items"] == ["executive_retry_health_alert_acknowledgement_outstanding"]
    [risk] = dashboard["risks"]
    assert (risk["severity"], risk["refs"]) == ("warning", [delivery.delivery_id])
    # and the SLA runs from when the connector accepted it
    with time_machine.travel(T0 + timedelta(minutes=61), tick=False):
        assert closure_dashboard()["risks"][0]["severity"] == "critical"
    delivery.refresh_from_db()
    assert delivery.status == "accepted"


def test_teams_accepted_then_acknowledged_closes_the_loop_and_stays_accepted(
    operator, critical_report, accepted_teams_delivery
):
    delivery, _ = accepted_teams_delivery

    # when the recipient confirms it
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        acknowledgement_create(
            actor=operator,
            health_id=critical_report.health_id,
            provider="exec-teams",
            state="acknowledged",
        )
        dashboard = closure_dashboard()

    # then the loop is closed and the record still says what Teams answered
    assert (dashboard["closure_state"], dashboard["risks"]) == ("closed", [])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.suppression_reason) == ("accepted", "")


def test_teams_accepted_can_be_waived_or_retried_by_hand(
    operator, receiver, accepted_teams_delivery
):
    delivery, _ = accepted_teams_delivery
    receiver.expect_oneshot_request("/workflows/run").respond_with_data("", status=200)

    # when an operator retries it by hand and the workflow now posts at once
    retried, record = delivery_retry_now(actor=operator, delivery_id=delivery.delivery_id)

    # then it is delivered on attempt 2
    assert (record.execution_status, record.attempt_number, record.trigger) == (
        "delivered",
        2,
        "manual",
    )
    assert retried.status == "delivered"


def test_teams_accepted_waived_is_suppressed(operator, accepted_teams_delivery):
    delivery, _ = accepted_teams_delivery

    waived = delivery_waive(actor=operator, delivery_id=delivery.delivery_id, reason="on a call")

    assert (waived.status, waived.suppression_reason) == ("suppressed", "waived")


def test_worker_retry_answered_202_counts_as_accepted_in_the_run(
    operator, critical_report, receiver
):
    # given a Teams delivery that failed, then a retry the workflow accepts with 202
    make_kind_connector("teams", "exec-teams", receiver.url_for("/run"))
    receiver.expect_ordered_request("/run").respond_with_data("down", status=500)
    receiver.expect_ordered_request("/run").respond_with_data("", status=202)
    with time_machine.travel(T0, tick=False):
        delivery, _ = _send(operator, critical_report)

    # when a live worker run retries it after the backoff
    with time_machine.travel(T0 + timedelta(minutes=16), tick=False):
        outcome = worker_run_execute(actor=operator, options=WorkerOptions(execute=True))

    # then the run succeeded with one accepted attempt, and the delivery is accepted
    assert outcome.run.status == "succeeded"
    summary = outcome.run.summary
    assert (
        summary["delivered_count"],
        summary["accepted_count"],
        summary["failed_count"],
        summary["skipped_count"],
    ) == (0, 1, 0, 0)
    delivery.refresh_from_db()
    assert delivery.status == "accepted"


# -- e-mail against a real SMTP server --------------------------------------------------------


def test_email_over_smtp_uses_the_connectors_own_account(operator, critical_report, settings):
    # given an SMTP server that accepts only the connector's account
    with SmtpReceiver(accept_login=("alerts@corp", "s3cret-pass")) as smtp:
        use_smtp_server(settings, smtp.host, smtp.port)
        make_kind_connector(
            "email",
            "exec-mail",
            recipients=["cfo@example.com"],
            smtp_username="alerts@corp",
            smtp_password="s3cret-pass",
        )

        # when the alert is sent
        delivery, record = _send(operator, critical_report)

    # then the server got one multipart message, after logging in as the connector
    assert (record.execution_status, delivery.status) == ("delivered", "delivered")
    assert smtp.session.logins == [("alerts@corp", "s3cret-pass")]
    assert smtp.session.recipients == ["rcpt to:<cfo@example.com>"]
    [raw] = smtp.session.messages
    parsed = message_from_bytes(raw)
    assert parsed["Subject"] == "[CAVRA] CRITICAL: executive delivery retry health (3 findings)"
    assert parsed["X-CAVRA-Delivery-Id"] == delivery.delivery_id
    assert [part.get_content_type() for part in parsed.walk()] == [
        "multipart/alternative",
        "text/plain",
        "text/html",
    ]


@pytest.mark.parametrize(
    ("server", "error_class"),
    [
        ({"accept_login": ("someone", "else")}, "config_error"),
        ({"refuse_recipients": True}, "config_error"),
        ({"greeting": "421 4.3.2 Service not available"}, "connection_error"),
        ({"hang": True}, "timeout"),
    ],
    ids=["login-refused", "recipients-refused", "greeting-421", "no-greeting"],
)
def test_email_smtp_failures_are_classified(
    operator, critical_report, settings, server, error_class
):
    # given an SMTP server that fails in one way
    with SmtpReceiver(**server) as smtp:
        use_smtp_server(settings, smtp.host, smtp.port)
        make_kind_connector(
            "email", "exec-mail", smtp_username="alerts@corp", smtp_password="wrong-pass"
        )

        # when the alert is sent with a one-second timeout
        delivery, record = _send(operator, critical_report, timeout_seconds=1)

    # then the attempt failed with that class, and nothing about the account is stored
    assert (record.execution_status, record.error_class, record.http_status) == (
        "failed",
        error_class,
        None,
    )
    assert record.response_excerpt == ""
    assert delivery.status == "failed"


def test_email_smtp_server_down_is_a_connection_error(operator, critical_report, settings):
    # given an SMTP address where nothing listens any more
    with SmtpReceiver() as smtp:
        host, port = smtp.host, smtp.port
    use_smtp_server(settings, host, port)
    make_kind_connector("email", "exec-mail")

    delivery, record = _send(operator, critical_report, timeout_seconds=1)

    assert (record.execution_status, record.error_class) == ("failed", "connection_error")


# -- Standard Webhooks signature, during a secret rotation ------------------------------------


def _receiver_verifies(secrets: list[str], headers, body: bytes) -> bool:
    """A receiver's check written from the Standard Webhooks spec, not from the product code:
    any space-separated `v1,<base64>` signature that matches an HMAC-SHA256 (key: the base64
    part of a `whsec_` secret) over "{id}.{timestamp}.{body}" passes."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for candidate in headers["webhook-signature"].split(" "):
            version, _, signature = candidate.partition(",")
            if version == "v1" and hmac.compare_digest(signature, expected):
                return True
    return False


def test_webhook_rotation_signs_with_both_secrets_until_the_old_one_is_retired(
    operator, platform_owner, critical_report, receiver
):
    # given a webhook signed with an old secret
    old, new = whsec(), whsec()
    connector_save(
        actor=platform_owner,
        name="signed-hook",
        kind="webhook",
        private_config={"url": receiver.url_for("/hook"), "signing_secret": old},
    )
    receiver.expect_request("/hook").respond_with_data("no", status=500)

    # when the alert is sent before, during and after the rotation
    with time_machine.travel(T0, tick=False):
        delivery, _ = _send(operator, critical_report)
    connector_save(
        actor=platform_owner,
        name="signed-hook",
        kind="webhook",
        private_config={"url": receiver.url_for("/hook"), "signing_secrets": [new, old]},
    )
    delivery_retry_now(actor=operator, delivery_id=delivery.delivery_id)
    connector_save(
        actor=platform_owner,
        name="signed-hook",
        kind="webhook",
        private_config={"url": receiver.url_for("/hook"), "signing_secrets": [new]},
    )
    delivery_retry_now(actor=operator, delivery_id=delivery.delivery_id)

    # then: before, one signature (old); during, two (new, then old) so receivers holding
    # either secret accept; after, only the new one verifies
    before, during, after = (request for request, _ in receiver.log)
    assert len(before.headers["webhook-signature"].split(" ")) == 1
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    for request in (before, during, after):
        assert request.headers["webhook-id"] == delivery.delivery_id
    assert _receiver_verifies([old], before.headers, before.get_data()) is True
    assert _receiver_verifies([new], before.headers, before.get_data()) is False
    assert _receiver_verifies([old], during.headers, during.get_data()) is True
    assert _receiver_verifies([new], during.headers, during.get_data()) is True
    assert _receiver_verifies([old], after.headers, after.get_data()) is False
    assert _receiver_verifies([new], after.headers, after.get_data()) is True
    # and a tampered body verifies with neither
    assert _receiver_verifies([old, new], during.headers, during.get_data() + b" ") is False
