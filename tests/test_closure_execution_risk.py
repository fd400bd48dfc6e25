"""The closure risk of a failed retry execution: opened by a retry (worker or manual) that
failed, closed by a later attempt that delivers, an acknowledgement or a waiver."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from closure.models import AlertDelivery, ExecutionRecord
from closure.selectors import MAX_REFS, closure_dashboard
from tests.conftest import A, B, R, client_for
from tests.factories import (
    make_acknowledgement,
    make_alert,
    make_connector,
    make_delivery,
    make_execution,
)
from tests.test_perf_reporting import DASHBOARD_QUERIES

pytestmark = pytest.mark.django_db

DASHBOARD = f"{B}/final-reporting-closure-dashboard"
EXECUTION_FAILED = "executive_retry_health_alert_retry_execution_failed"
FAILED = "executive_retry_health_alert_delivery_failed"
EXHAUSTED = "executive_retry_health_alert_delivery_exhausted"
UNCONFIRMED = "executive_retry_health_alert_delivery_unconfirmed"
WORKER_FAILED = "executive_retry_health_alert_retry_worker_failed"
ACK_OUTSTANDING = "executive_retry_health_alert_acknowledgement_outstanding"
ACTION = (
    "Read why it failed (GET /api/v1/execution-records/?delivery_id={delivery_id}"
    "&execution_status=failed), fix the cause, then retry until an attempt delivers "
    f"(POST {A}/deliveries/{{delivery_id}}/retry, or the worker live); or record the "
    f"recipient's acknowledgement (POST {A}/{{health_id}}/acknowledgements); or waive "
    f"with a reason (POST {A}/deliveries/{{delivery_id}}/waive)."
)


def _execution_failed_risk(refs: list[str], count: int | None = None) -> dict:
    count = len(refs) if count is None else count
    noun = "alert delivery has" if count == 1 else "alert deliveries have"
    verb = "is" if count == 1 else "are"
    return {
        "code": EXECUTION_FAILED,
        "severity": "critical",
        "count": count,
        "summary": f"{count} {noun} a failed retry execution and {verb} not since delivered, "
        "acknowledged or waived.",
        "refs": refs,
        "action": ACTION,
    }


def _dashboard(api) -> dict:
    response = api.get(DASHBOARD)
    assert response.status_code == 200, response.json()
    return response.json()


def _risks(dashboard: dict) -> dict[str, dict]:
    return {risk["code"]: risk for risk in dashboard["risks"]}


def _answer(receiver, status: int) -> None:
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data(
        "ok" if status < 300 else "boom", status=status
    )


def _run_live(api) -> dict:
    response = api.post(f"{A}/retry-worker-run", {"execute": True}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["run"]


def _failed_retry(api, receiver) -> tuple[str, AlertDelivery]:
    """A critical report whose alert failed on ops-webhook, then failed again when the live
    worker retried it 16 minutes later."""
    response = api.post(f"{R}/delivery-retry-health", {}, format="json")
    assert response.status_code == 201, response.json()
    health_id = response.json()["health"]["health_id"]
    _answer(receiver, 500)
    response = api.post(f"{A}/deliver", {"provider": "ops-webhook"}, format="json")
    assert response.status_code == 201, response.json()
    delivery = AlertDelivery.objects.get(
        delivery_id=response.json()["deliveries"][0]["delivery_id"]
    )
    with time_machine.travel(delivery.last_attempt_at + timedelta(minutes=16), tick=True):
        _answer(receiver, 500)
        assert _run_live(api)["status"] == "failed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == ("failed", 2)
    return health_id, delivery


@pytest.fixture
def retried_delivery(operator, failed_delivery):
    """`failed_delivery` (its first send failed an hour ago), retried by the worker 30 minutes
    ago, and that retry failed too."""
    retried_at = timezone.now() - timedelta(minutes=30)
    make_execution(
        delivery=failed_delivery,
        actor=operator,
        attempt_number=2,
        trigger="retry",
        executed_at=retried_at,
    )
    AlertDelivery.objects.filter(pk=failed_delivery.pk).update(
        attempt_count=2, last_attempt_at=retried_at
    )
    return failed_delivery


# -- opened ------------------------------------------------------------------------------------


def test_execution_failed_risk_is_not_opened_by_a_failed_first_send(api, webhook, receiver):
    # given a report whose alert failed on its first send, and nothing retried yet
    api.post(f"{R}/delivery-retry-health", {}, format="json")
    _answer(receiver, 500)
    response = api.post(f"{A}/deliver", {"provider": "ops-webhook"}, format="json")
    assert response.json()["deliveries"][0]["status"] == "failed"

    # when the dashboard is read
    dashboard = _dashboard(api)

    # then only the failed delivery is open: a first send is not a retry execution
    assert dashboard["open_items"] == [FAILED]
    assert list(ExecutionRecord.objects.values_list("trigger", "execution_status")) == [
        ("initial", "failed")
    ]


def test_execution_failed_risk_is_opened_by_a_failed_worker_retry(api, webhook, receiver):
    # given a failed delivery whose live worker retry failed too
    _, delivery = _failed_retry(api, receiver)

    # when the dashboard is read
    dashboard = _dashboard(api)

    # then the risk is open, critical, names the delivery, and says what closes it
    assert dashboard["alert_level"] == "critical"
    assert dashboard["open_items"] == [FAILED, EXECUTION_FAILED, WORKER_FAILED]
    assert _risks(dashboard)[EXECUTION_FAILED] == _execution_failed_risk([delivery.delivery_id])
    assert dashboard["recommended_actions"][1] == ACTION
    assert dashboard["open_item_count"] == 3
    assert list(
        ExecutionRecord.objects.order_by("attempt_number").values_list(
            "trigger", "execution_status"
        )
    ) == [("initial", "failed"), ("retry", "failed")]


def test_execution_failed_risk_is_opened_by_a_failed_manual_retry_of_an_exhausted_delivery(
    operator, report, offline_webhook
):
    # given an exhausted delivery whose retry by hand failed
    alert = make_alert(report=report, actor=operator)
    delivery = make_delivery(
        alert=alert, connector=offline_webhook, status="exhausted", attempt_count=2
    )
    make_execution(delivery=delivery, actor=operator)
    make_execution(delivery=delivery, actor=operator, attempt_number=2, trigger="manual")

    # when the dashboard is computed
    dashboard = closure_dashboard()

    # then both the exhausted delivery and its failed retry execution are open
    assert dashboard["open_items"] == [EXHAUSTED, EXECUTION_FAILED]
    assert _risks(dashboard)[EXECUTION_FAILED] == _execution_failed_risk([delivery.delivery_id])


def test_execution_failed_risk_is_not_opened_by_a_skipped_retry(operator, failed_delivery):
    # given a failed delivery whose retry was skipped, not sent
    make_execution(
        delivery=failed_delivery,
        actor=operator,
        execution_status="skipped",
        skip_reason="no_longer_failed",
        attempt_number=1,
        trigger="retry",
    )

    # when the dashboard is computed, then only the failed delivery is open
    assert closure_dashboard()["open_items"] == [FAILED]


# -- closed ------------------------------------------------------------------------------------


def test_execution_failed_risk_is_closed_by_a_later_attempt_that_delivers(api, webhook, receiver):
    # given a failed retry execution
    _, delivery = _failed_retry(api, receiver)
    assert EXECUTION_FAILED in _dashboard(api)["open_items"]

    # when a later live run (after the 30-minute backoff of attempt 2) delivers
    with time_machine.travel(delivery.last_attempt_at + timedelta(minutes=31), tick=True):
        _answer(receiver, 200)
        assert _run_live(api)["status"] == "succeeded"
        dashboard = _dashboard(api)

    # then the risk is closed; the failed retry stays on record
    assert dashboard["open_items"] == [ACK_OUTSTANDING]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == ("delivered", 3)
    assert list(
        ExecutionRecord.objects.order_by("attempt_number").values_list(
            "trigger", "execution_status"
        )
    ) == [("initial", "failed"), ("retry", "failed"), ("retry", "delivered")]


def test_execution_failed_risk_is_closed_by_an_acknowledgement(api, webhook, receiver):
    # given a failed retry execution
    health_id, delivery = _failed_retry(api, receiver)

    # when the recipient's acknowledgement on that connector is recorded
    response = api.post(
        f"{A}/{health_id}/acknowledgements", {"provider": "ops-webhook"}, format="json"
    )
    assert response.status_code == 201, response.json()

    # then the risk is closed and the delivery is suppressed as acknowledged
    dashboard = _dashboard(api)
    assert EXECUTION_FAILED not in dashboard["open_items"]
    assert dashboard["open_items"] == [WORKER_FAILED]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.suppression_reason) == ("suppressed", "acknowledged")
    assert ExecutionRecord.objects.filter(trigger="retry", execution_status="failed").count() == 1


def test_execution_failed_risk_is_closed_by_a_waiver(api, webhook, receiver):
    # given a failed retry execution
    _, delivery = _failed_retry(api, receiver)

    # when an operator waives the delivery with a reason
    response = api.post(
        f"{A}/deliveries/{delivery.delivery_id}/waive",
        {"reason": "Recipient reached by phone."},
        format="json",
    )
    assert response.status_code == 200, response.json()

    # then the risk is closed and the delivery is suppressed as waived
    assert _dashboard(api)["open_items"] == [WORKER_FAILED]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.suppression_reason) == ("suppressed", "waived")


def test_execution_failed_risk_is_closed_only_by_a_closing_acknowledgement_on_its_connector(
    operator, retried_delivery
):
    # given a failed retry execution, acknowledged elsewhere and dismissed on its connector
    # (the delivery keeps its status: recorded directly, as an older acknowledgement would be)
    other = make_connector("other-webhook", "https://hooks.example.invalid/other")
    alert = retried_delivery.alert
    make_acknowledgement(alert=alert, connector=other, actor=operator)
    make_acknowledgement(
        alert=alert, connector=retried_delivery.connector, actor=operator, state="dismissed"
    )

    # when the dashboard is computed, then the risk is still open
    dashboard = closure_dashboard()
    assert _risks(dashboard)[EXECUTION_FAILED] == _execution_failed_risk(
        [retried_delivery.delivery_id]
    )

    # when it is resolved on its own connector, then the risk is closed
    make_acknowledgement(
        alert=alert, connector=retried_delivery.connector, actor=operator, state="resolved"
    )
    assert EXECUTION_FAILED not in closure_dashboard()["open_items"]
    assert AlertDelivery.objects.get(pk=retried_delivery.pk).status == "failed"


def test_execution_failed_risk_is_closed_when_a_later_attempt_is_accepted(
    operator, retried_delivery
):
    # given a failed retry execution, then a third attempt the connector accepted (202)
    make_execution(
        delivery=retried_delivery,
        actor=operator,
        execution_status="accepted",
        attempt_number=3,
        trigger="retry",
    )
    AlertDelivery.objects.filter(pk=retried_delivery.pk).update(status="accepted")

    # when the dashboard is computed, then the unconfirmed delivery is open, not this risk
    dashboard = closure_dashboard()
    assert dashboard["open_items"] == [UNCONFIRMED]


# -- size and queries --------------------------------------------------------------------------


def test_execution_failed_risk_names_the_oldest_deliveries_in_the_same_queries(
    operator, report, offline_webhook, django_assert_num_queries
):
    # given 25 deliveries whose retry failed, and 3 whose first send alone failed
    start = timezone.now() - timedelta(hours=2)
    retried = []
    for minute in range(28):
        delivery = make_delivery(
            alert=make_alert(report=report, actor=operator),
            connector=offline_webhook,
            attempt_count=2,
            created_at=start + timedelta(minutes=minute),
        )
        make_execution(delivery=delivery, actor=operator)
        if minute >= 3:
            make_execution(delivery=delivery, actor=operator, attempt_number=2, trigger="retry")
            retried.append(delivery.delivery_id)

    # when the dashboard is computed (no delivered alert awaits acknowledgement, so the
    # acknowledgement refs query is not made: the new risk itself adds none)
    with django_assert_num_queries(DASHBOARD_QUERIES - 1, exact=True):
        dashboard = closure_dashboard()

    # then the risk counts all 25 and names the 20 oldest; the failed risk counts all 28
    risks = _risks(dashboard)
    assert risks[EXECUTION_FAILED] == _execution_failed_risk(retried[:MAX_REFS], count=25)
    assert risks[FAILED]["count"] == 28
    assert len(risks[FAILED]["refs"]) == MAX_REFS


# -- console -----------------------------------------------------------------------------------


def test_closure_page_shows_the_execution_failed_risk_with_its_actions(operator, retried_delivery):
    # given a failed retry execution
    delivery_id = retried_delivery.delivery_id
    health_id = retried_delivery.alert.health.health_id

    # when the console's closure page is read
    response = client_for(operator).get("/console/closure/")

    # then the risk links its delivery and offers retry or waive, and the acknowledgement
    assert response.status_code == 200
    views = {view.risk["code"]: view for view in response.context["risks"]}
    view = views[EXECUTION_FAILED]
    assert view.refs == [(delivery_id, f"/console/deliveries/{delivery_id}/")]
    assert [(a.label, a.url) for a in view.actions] == [
        (f"Retry or waive {delivery_id}", f"/console/deliveries/{delivery_id}/"),
        (
            "Acknowledge on exec-webhook",
            f"/console/acknowledgements/?health_id={health_id}&provider=exec-webhook"
            "&next=%2Fconsole%2Fclosure%2F",
        ),
    ]
    page = response.content.decode()
    assert f'id="risk-{EXECUTION_FAILED}"' in page
    assert "1 alert delivery has a failed retry execution and is not since delivered" in page
    assert f"Retry or waive {delivery_id}" in page
