"""The webhook connector against real local HTTP servers: outcomes, signing, destination policy,
and the secrecy of its configuration."""

import base64
import hashlib
import hmac
import json
import logging
import secrets
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import time_machine
from werkzeug import Response

from closure.choices import DecisionAction, DecisionReason
from closure.models import AlertDelivery, Evidence, ExecutionRecord, RetryDecision
from closure.services.alerts import health_alert_send
from closure.services.health import HealthParameters, health_report_build
from closure.services.retries import RetryPolicy, retry_plan_create
from closure.worker import WorkerOptions, worker_run_execute
from tests.conftest import A, B, R
from tests.factories import make_connector
from tests.receivers import LocalReceiver

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def critical_report(operator):
    """A critical health report (no upstream worker run was ever reported)."""
    report = health_report_build(actor=operator, parameters=HealthParameters())
    assert report.alert_level == "critical"
    return report


def _send_one(actor, report, **options) -> tuple[AlertDelivery, ExecutionRecord]:
    result = health_alert_send(actor=actor, health_id=report.health_id, **options)
    [(delivery, record)] = result.attempts
    return delivery, record


def _whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _verify_standard_webhook(secret: str, headers, body: bytes) -> bool:
    """A receiver's check, written from the Standard Webhooks spec, not from the product code:
    HMAC-SHA256 keyed with the base64-decoded `whsec_` secret over "{id}.{timestamp}.{body}",
    sent as space-separated `v1,<base64>` signatures."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


# -- outcomes -----------------------------------------------------------------------------------


def test_webhook_2xx_is_delivered_with_status_latency_and_response_hash(
    operator, critical_report, receiver, webhook
):
    # given a receiver that accepts the alert
    answer = b'{"accepted":true}'
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data(
        answer, status=202, content_type="application/json"
    )

    # when the alert is sent
    delivery, record = _send_one(operator, critical_report)

    # then the delivery is delivered and the record carries the HTTP facts
    assert delivery.status == "delivered"
    assert delivery.attempt_count == 1
    assert delivery.delivered_at == record.executed_at
    assert record.execution_status == "delivered"
    assert record.trigger == "initial"
    assert record.attempt_number == 1
    assert record.http_status == 202
    assert record.error_class == ""
    assert record.retry_after_seconds is None
    assert isinstance(record.latency_ms, int)
    assert 0 <= record.latency_ms < 5000
    assert record.response_sha256 == hashlib.sha256(answer).hexdigest()
    assert record.response_excerpt == '{"accepted":true}'
    # and the receiver got one JSON POST carrying the alert payload for this delivery
    [(request, _)] = receiver.log
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["webhook-id"] == delivery.delivery_id
    sent = json.loads(request.get_data())
    assert sent == {
        **delivery.alert.payload,
        "delivery_id": delivery.delivery_id,
        "attempt_number": 1,
    }


def test_webhook_500_is_failed_http_5xx(operator, critical_report, receiver, webhook):
    # given a receiver that fails
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data("boom", status=500)

    # when the alert is sent
    delivery, record = _send_one(operator, critical_report)

    # then the attempt is failed, classified http_5xx, and the delivery is failed
    assert record.execution_status == "failed"
    assert record.http_status == 500
    assert record.error_class == "http_5xx"
    assert record.retry_after_seconds is None
    assert record.response_sha256 == hashlib.sha256(b"boom").hexdigest()
    assert delivery.status == "failed"
    assert delivery.attempt_count == 1
    assert delivery.retry_not_before is None
    assert delivery.delivered_at is None
    assert delivery.lease_owner == ""
    assert delivery.leased_until is None


def test_webhook_429_with_retry_after_seconds_is_rate_limited_and_honoured(
    operator, critical_report, receiver, webhook
):
    # given a receiver that rate-limits for an hour
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "3600"}
    )

    # when the alert is sent at a frozen instant
    with time_machine.travel(T0, tick=False):
        delivery, record = _send_one(operator, critical_report)

        # then the attempt is rate_limited and the wait is stored on record and delivery
        assert record.execution_status == "failed"
        assert record.http_status == 429
        assert record.error_class == "rate_limited"
        assert record.retry_after_seconds == 3600
        assert record.executed_at == T0
        delivery.refresh_from_db()
        assert delivery.status == "failed"
        assert delivery.retry_not_before == T0 + timedelta(seconds=3600)

    # and a plan after the 15-minute backoff still waits for the Retry-After, not the backoff
    with time_machine.travel(T0 + timedelta(minutes=20), tick=False):
        plan, _ = retry_plan_create(actor=operator, policy=RetryPolicy())
    decision = RetryDecision.objects.get(plan=plan)
    assert decision.action == DecisionAction.WAIT
    assert decision.reason == DecisionReason.RETRY_AFTER_PENDING
    assert decision.next_retry_at == T0 + timedelta(seconds=3600)


def test_webhook_429_with_retry_after_http_date_is_rate_limited_and_stored(
    operator, critical_report, receiver, webhook
):
    # given a receiver that rate-limits until an HTTP-date 90 seconds from now
    until = format_datetime(T0 + timedelta(seconds=90), usegmt=True)
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data(
        "slow down", status=429, headers={"Retry-After": until}
    )

    # when the alert is sent at a frozen instant
    with time_machine.travel(T0, tick=False):
        delivery, record = _send_one(operator, critical_report)

    # then the date is turned into seconds and stored on the record and the delivery
    assert until == "Mon, 02 Mar 2026 09:31:30 GMT"
    assert record.error_class == "rate_limited"
    assert record.http_status == 429
    assert record.retry_after_seconds == 90
    delivery.refresh_from_db()
    assert delivery.retry_not_before == T0 + timedelta(seconds=90)


def test_webhook_503_with_retry_after_is_http_5xx_and_honoured(
    operator, critical_report, receiver, webhook
):
    # given a receiver in maintenance for two minutes
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data(
        "maintenance", status=503, headers={"Retry-After": "120"}
    )

    # when the alert is sent at a frozen instant
    with time_machine.travel(T0, tick=False):
        delivery, record = _send_one(operator, critical_report)

    # then it is a 5xx failure whose Retry-After is kept
    assert record.error_class == "http_5xx"
    assert record.http_status == 503
    assert record.retry_after_seconds == 120
    delivery.refresh_from_db()
    assert delivery.retry_not_before == T0 + timedelta(seconds=120)


def test_webhook_server_that_hangs_times_out(operator, critical_report):
    # given a receiver that accepts the connection but never answers
    with LocalReceiver() as hanging:
        hanging.answer = hanging.hang
        make_connector("slow-hook", hanging.url_for("/hook"))

        # when the alert is sent with a one-second timeout
        delivery, record = _send_one(operator, critical_report, timeout_seconds=1)

        # then the attempt is a timeout after about the timeout, not after the server gave up
        assert [r.path for r in hanging.requests] == ["/hook"]
    assert record.execution_status == "failed"
    assert record.error_class == "timeout"
    assert record.http_status is None
    assert record.response_sha256 == ""
    assert 900 <= record.latency_ms < 5000
    assert delivery.status == "failed"


def test_webhook_response_trickling_past_the_total_deadline_times_out(operator, critical_report):
    # given a receiver that answers 200 but sends its body one byte every 200 ms, forever
    with LocalReceiver() as trickling:
        trickling.answer = trickling.trickle(interval_seconds=0.2)
        make_connector("trickle-hook", trickling.url_for("/hook"))

        # when the alert is sent with a one-second total deadline
        delivery, record = _send_one(operator, critical_report, timeout_seconds=1)

    # then the per-read timeout never fires but the total deadline does
    assert record.execution_status == "failed"
    assert record.error_class == "timeout"
    assert record.http_status is None
    assert 900 <= record.latency_ms < 5000
    assert delivery.status == "failed"


def test_webhook_redirect_is_rejected_by_policy_and_not_followed(
    operator, critical_report, receiver, webhook
):
    # given a receiver that redirects to another path it would happily accept
    receiver.expect_request("/hook", method="POST").respond_with_response(
        Response("moved", status=302, headers={"Location": receiver.url_for("/elsewhere")})
    )
    receiver.expect_request("/elsewhere").respond_with_data("ok", status=200)

    # when the alert is sent
    delivery, record = _send_one(operator, critical_report)

    # then the redirect is a policy failure and its target is never requested
    assert record.execution_status == "failed"
    assert record.http_status == 302
    assert record.error_class == "rejected_by_policy"
    assert delivery.status == "failed"
    assert [request.path for request, _ in receiver.log] == ["/hook"]


# -- Standard Webhooks signature ----------------------------------------------------------------


def test_webhook_signature_verifies_and_webhook_id_is_stable_across_retry(
    operator, critical_report, receiver
):
    # given a signed webhook whose receiver fails the first attempt and accepts the second
    secret = _whsec()
    make_connector("signed-hook", receiver.url_for("/hook"), signing_secret=secret)
    receiver.expect_ordered_request("/hook", method="POST").respond_with_data("no", status=500)
    receiver.expect_ordered_request("/hook", method="POST").respond_with_data("ok", status=200)

    # when the alert is sent, and retried by a live worker run after the backoff
    with time_machine.travel(T0, tick=False):
        delivery, first_record = _send_one(operator, critical_report)
    retried_at = T0 + timedelta(minutes=16)
    with time_machine.travel(retried_at, tick=False):
        plan, _ = retry_plan_create(actor=operator, policy=RetryPolicy())
        outcome = worker_run_execute(
            actor=operator, options=WorkerOptions(execute=True, retry_plan_id=plan.retry_plan_id)
        )

    # then both requests carry the delivery's ID, their own timestamp and a valid signature
    assert first_record.execution_status == "failed"
    [retry_result] = outcome.results
    assert retry_result.execution.execution_status == "delivered"
    assert retry_result.execution.attempt_number == 2
    [(first, _), (second, _)] = receiver.log
    for request, sent_at, attempt in ((first, T0, 1), (second, retried_at, 2)):
        body = request.get_data()
        assert request.headers["webhook-id"] == delivery.delivery_id
        assert request.headers["webhook-timestamp"] == str(int(sent_at.timestamp()))
        assert request.headers["webhook-signature"].startswith("v1,")
        assert _verify_standard_webhook(secret, request.headers, body) is True
        assert json.loads(body)["attempt_number"] == attempt
    # and the check is real: a changed body or another secret does not verify
    assert _verify_standard_webhook(secret, first.headers, first.get_data() + b" ") is False
    assert _verify_standard_webhook(_whsec(), first.headers, first.get_data()) is False
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]


def test_webhook_unsigned_connector_sends_no_signature_header(
    operator, critical_report, receiver, webhook
):
    # given a webhook without a signing secret
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data("ok")

    # when the alert is sent
    delivery, _ = _send_one(operator, critical_report)

    # then it carries id and timestamp but no signature
    [(request, _)] = receiver.log
    assert request.headers["webhook-id"] == delivery.delivery_id
    assert "webhook-signature" not in request.headers


def test_webhook_signing_secret_that_is_not_base64_is_a_config_error(
    operator, critical_report, receiver
):
    # given a signing secret that cannot be decoded
    make_connector("broken-hook", receiver.url_for("/hook"), signing_secret="whsec_not*base64")

    # when the alert is sent
    delivery, record = _send_one(operator, critical_report)

    # then nothing is sent and the attempt is a config error
    assert record.execution_status == "failed"
    assert record.error_class == "config_error"
    assert record.http_status is None
    assert delivery.status == "failed"
    assert receiver.log == []


# -- destination policy -------------------------------------------------------------------------


@pytest.fixture
def connect_calls(monkeypatch):
    """Every socket connect made in this process during the test (the spy still connects)."""
    calls: list = []
    real_connect = socket.socket.connect

    def spy(sock, address):
        calls.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    return calls


@pytest.mark.parametrize(
    "url_template",
    [
        "http://127.0.0.1:{port}/hook",
        "http://localhost:{port}/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/hook",
        "http://2130706433:{port}/",
        "http://0x7f.1:{port}/",
        "ftp://127.0.0.1:{port}/hook",
    ],
)
def test_webhook_destination_refused_without_opening_a_socket(
    operator, critical_report, receiver, settings, connect_calls, url_template
):
    # given loopback destinations are not allowed (production) and a connector aimed at a
    # loopback, private, link-local or oddly encoded address (the loopback ones at a live server)
    settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS = False
    make_connector("internal-hook", url_template.format(port=receiver.port))

    # when the alert is sent
    delivery, record = _send_one(operator, critical_report)

    # then the attempt is refused by policy before any connection is made
    assert record.execution_status == "failed"
    assert record.error_class == "rejected_by_policy"
    assert record.http_status is None
    assert record.response_sha256 == ""
    assert delivery.status == "failed"
    assert connect_calls == []
    assert receiver.log == []


def test_webhook_loopback_destination_is_reached_only_with_the_test_setting(
    operator, critical_report, receiver, settings, connect_calls
):
    # given the test-only setting allows loopback (the control for the refusals above)
    settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS = True
    make_connector("local-hook", f"http://127.0.0.1:{receiver.port}/hook")
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data("ok")

    # when the alert is sent
    delivery, record = _send_one(operator, critical_report)

    # then the socket connects and the receiver gets the alert
    assert record.execution_status == "delivered"
    assert delivery.status == "delivered"
    assert connect_calls == [("127.0.0.1", receiver.port)]
    assert len(receiver.log) == 1


# -- secrecy ------------------------------------------------------------------------------------


def test_webhook_connector_secret_never_in_api_responses_evidence_or_logs(
    api, operator, receiver, caplog
):
    # given a connector whose URL path and signing key are secrets, and a receiver that fails
    # every attempt and echoes the secret path back in its error body
    caplog.set_level(logging.DEBUG)
    token = secrets.token_hex(16)
    signing_secret = _whsec()
    signing_key = signing_secret.removeprefix("whsec_")
    make_connector(
        "secret-hook", receiver.url_for(f"/hooks/{token}"), signing_secret=signing_secret
    )
    receiver.expect_request(f"/hooks/{token}", method="POST").respond_with_handler(
        lambda request: Response(f"unknown hook {request.url} token={token}", status=500)
    )
    responses = []

    # when the whole flow runs through the API and fails at each step
    responses.append(api.post(f"{R}/delivery-retry-health", {}, format="json"))
    responses.append(api.post(f"{A}/deliver", {}, format="json"))
    [delivery] = responses[-1].json()["deliveries"]
    immediate = {"retry_delay_minutes": 0, "allow_immediate_retry": True}
    responses.append(api.post(f"{A}/retry-plan", {"retry_policy": immediate}, format="json"))
    responses.append(
        api.post(
            f"{A}/retry-worker-run",
            {"execute": True, "retry_policy": immediate},
            format="json",
        )
    )
    responses.append(api.post(f"{A}/deliveries/{delivery['delivery_id']}/retry", {}, format="json"))
    for path in [
        f"{B}/final-reporting-closure-dashboard",
        f"{R}/delivery-retry-health-alert-dashboard",
        A,
        "/api/v1/connectors/",
        "/api/v1/connectors/secret-hook/",
        "/api/v1/alerts/",
        "/api/v1/deliveries/",
        f"/api/v1/deliveries/{delivery['delivery_id']}/",
        "/api/v1/execution-records/",
        "/api/v1/retry-plans/",
        "/api/v1/worker-runs/",
        "/api/v1/evidence/",
        "/api/v1/evidence/verify/",
    ]:
        responses.append(api.get(path))

    # then the secret was really used: every attempt reached the secret path and failed
    assert [r.status_code for r in responses[:5]] == [201, 201, 201, 201, 201]
    assert [r.status_code for r in responses[5:]] == [200] * 13
    assert [request.path for request, _ in receiver.log] == [f"/hooks/{token}"] * 3
    assert list(
        ExecutionRecord.objects.order_by("attempt_number").values_list(
            "trigger", "execution_status", "http_status"
        )
    ) == [("initial", "failed", 500), ("retry", "failed", 500), ("manual", "failed", 500)]
    # and it appears in no API response, evidence payload, stored excerpt or log line
    for response in responses:
        body = response.content.decode()
        assert token not in body, response.request["PATH_INFO"]
        assert signing_key not in body, response.request["PATH_INFO"]
    evidence_text = json.dumps(list(Evidence.objects.values_list("payload", flat=True)))
    assert Evidence.objects.count() == 8
    assert token not in evidence_text
    assert signing_key not in evidence_text
    excerpts = list(ExecutionRecord.objects.values_list("response_excerpt", flat=True))
    assert all(token not in excerpt for excerpt in excerpts)
    # (werkzeug's lines are the receiver's own access log, not the product's)
    product_lines = [r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug")]
    assert all(token not in line and signing_key not in line for line in product_lines)
