"""The final reporting closure dashboard: every risk opened, then closed by the action it names."""

from datetime import timedelta

import pytest
import time_machine
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.canonical import isoformat
from closure.models import AlertDelivery, Evidence, HealthReport, WorkerRun
from tests.conftest import A, B, R
from tests.factories import make_connector, make_event

pytestmark = pytest.mark.django_db

DASHBOARD = f"{B}/final-reporting-closure-dashboard"
SCHEMA = "cavra.go-backend-pilot.rollback-drill-final-reporting-closure-dashboard.v1"

HEALTH_STALE = "executive_retry_health_missing_or_stale"
NOT_SENT = "executive_retry_health_alert_not_sent"
FAILED = "executive_retry_health_alert_delivery_failed"
EXHAUSTED = "executive_retry_health_alert_delivery_exhausted"
OVERDUE = "executive_retry_health_alert_retry_overdue"
WORKER_FAILED = "executive_retry_health_alert_retry_worker_failed"
EXECUTION_FAILED = "executive_retry_health_alert_retry_execution_failed"
ACK_OUTSTANDING = "executive_retry_health_alert_acknowledgement_outstanding"

ACK_ACTION = f"Record the recipient's acknowledgement: POST {A}/{{health_id}}/acknowledgements."
LIVE_RUN_ACTION = f"Run the retry worker live: POST {A}/retry-worker-run with execute=true."


# -- helpers ----------------------------------------------------------------------------------


def _dashboard(api) -> dict:
    response = api.get(DASHBOARD)
    assert response.status_code == 200, response.json()
    return response.json()


def _risks(dashboard: dict) -> dict[str, dict]:
    return {risk["code"]: risk for risk in dashboard["risks"]}


def _assert_closed(dashboard: dict) -> None:
    assert dashboard["closure_state"] == "closed"
    assert dashboard["alert_level"] == "healthy"
    assert dashboard["open_item_count"] == 0
    assert dashboard["open_items"] == []
    assert dashboard["risks"] == []
    assert dashboard["recommended_actions"] == []


def _fresh_pipeline(actor) -> None:
    """Upstream facts that make the next health report healthy."""
    make_event(actor=actor, kind="retry_worker_run", status="succeeded", schedule_enabled=True)
    make_event(actor=actor, kind="retry_plan", status="succeeded")


def _build_health(api) -> dict:
    response = api.post(f"{R}/delivery-retry-health", {}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["health"]


def _answer(receiver, status: int, path: str = "/hook") -> None:
    receiver.expect_oneshot_request(path, method="POST").respond_with_data(
        "ok" if status < 300 else "boom", status=status
    )


def _deliver(api, receiver, *, status: int) -> AlertDelivery:
    """Send the latest report's alert to ops-webhook, which answers `status`."""
    _answer(receiver, status)
    response = api.post(f"{A}/deliver", {"provider": "ops-webhook"}, format="json")
    assert response.status_code == 201, response.json()
    [sent] = response.json()["deliveries"]
    return AlertDelivery.objects.get(delivery_id=sent["delivery_id"])


def _critical_failed_delivery(api, receiver) -> tuple[dict, AlertDelivery]:
    """A critical report (no upstream facts) whose alert failed on ops-webhook."""
    health = _build_health(api)
    assert health["alert_level"] == "critical"
    delivery = _deliver(api, receiver, status=500)
    assert delivery.status == "failed"
    return health, delivery


def _plan(api, body: dict | None = None) -> dict:
    response = api.post(f"{A}/retry-plan", body or {}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["plan"]


def _run_live(api, body: dict | None = None) -> dict:
    response = api.post(f"{A}/retry-worker-run", {"execute": True, **(body or {})}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["run"]


def _acknowledge(api, health_id: str, provider: str = "ops-webhook", **fields) -> None:
    response = api.post(
        f"{A}/{health_id}/acknowledgements", {"provider": provider, **fields}, format="json"
    )
    assert response.status_code == 201, response.json()


def _all_model_counts() -> dict[str, int]:
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


def _writes(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]


# -- closed and missing or stale health ---------------------------------------------------------


def test_closure_dashboard_is_closed_when_health_is_fresh_and_healthy(api, operator):
    # given a fresh, healthy report and nothing else
    _fresh_pipeline(operator)
    assert _build_health(api)["alert_level"] == "healthy"

    # when the dashboard is read
    dashboard = _dashboard(api)

    # then the loop is closed, with the public-safety controls and zero counts
    _assert_closed(dashboard)
    assert dashboard["schema_version"] == SCHEMA
    assert len(dashboard["controls"]) == 4
    assert dashboard["summary"]["retry_plans"] == 0
    assert dashboard["summary"]["acknowledgements"] == 0
    assert set(dashboard["summary"]["deliveries"].values()) == {0}
    assert dashboard["summary"]["executions"] == {
        "delivered": 0,
        "failed": 0,
        "skipped": 0,
        "accepted": 0,
        "superseded": 0,
    }


def test_closure_health_missing_is_closed_by_building_health(api, operator):
    # given no health report at all
    # when the dashboard is read, then health is the one open warning
    dashboard = _dashboard(api)
    assert dashboard["closure_state"] == "open"
    assert dashboard["alert_level"] == "warning"
    assert dashboard["open_item_count"] == 1
    assert dashboard["risks"] == [
        {
            "code": HEALTH_STALE,
            "severity": "warning",
            "count": 1,
            "summary": "No health report has been built yet.",
            "refs": [],
            "action": f"Build a fresh health report: POST {R}/delivery-retry-health.",
        }
    ]
    assert dashboard["recommended_actions"] == [
        f"Build a fresh health report: POST {R}/delivery-retry-health."
    ]

    # when a (healthy) report is built, then the loop is closed
    _fresh_pipeline(operator)
    _build_health(api)
    _assert_closed(_dashboard(api))


def test_closure_health_stale_is_closed_by_building_health_again(api, operator):
    # given a healthy report built now
    _fresh_pipeline(operator)
    health = _build_health(api)
    generated_at = HealthReport.objects.get().generated_at

    # when the dashboard is read 181 minutes later
    with time_machine.travel(generated_at + timedelta(minutes=181), tick=True):
        dashboard = _dashboard(api)

        # then the report is stale, referenced by its ID
        assert dashboard["open_items"] == [HEALTH_STALE]
        [risk] = dashboard["risks"]
        assert risk["refs"] == [health["health_id"]]
        assert risk["summary"] == (
            f"The latest health report ({isoformat(generated_at)}) is older than 180 minutes."
        )

        # when a fresh report is built, then the loop is closed
        _fresh_pipeline(operator)
        _build_health(api)
        _assert_closed(_dashboard(api))


# -- alert not sent -----------------------------------------------------------------------------


def test_closure_alert_not_sent_is_closed_by_delivering(api, operator, receiver, webhook):
    # given a critical report whose alert was not sent
    health = _build_health(api)
    assert health["alert_level"] == "critical"

    # when the dashboard is read, then the unsent alert is the critical risk
    dashboard = _dashboard(api)
    assert dashboard["closure_state"] == "open"
    assert dashboard["alert_level"] == "critical"
    assert dashboard["risks"] == [
        {
            "code": NOT_SENT,
            "severity": "critical",
            "count": 1,
            "summary": "The latest health report is critical and no alert of it was sent.",
            "refs": [health["health_id"]],
            "action": f"Send the alert: POST {A}/deliver.",
        }
    ]

    # when the alert is delivered, then it is no longer unsent (only its acknowledgement waits)
    delivery = _deliver(api, receiver, status=200)
    assert delivery.status == "delivered"
    dashboard = _dashboard(api)
    assert dashboard["open_items"] == [ACK_OUTSTANDING]
    assert dashboard["alert_level"] == "warning"

    # when it is acknowledged, then the loop is closed
    _acknowledge(api, health["health_id"])
    _assert_closed(_dashboard(api))


# -- delivery failed ----------------------------------------------------------------------------


def test_closure_delivery_failed_is_closed_by_plan_and_live_run(api, operator, receiver, webhook):
    # given an alert whose delivery failed
    health, delivery = _critical_failed_delivery(api, receiver)

    # when the dashboard is read, then the failed delivery is the open critical risk
    dashboard = _dashboard(api)
    assert dashboard["alert_level"] == "critical"
    assert dashboard["risks"] == [
        {
            "code": FAILED,
            "severity": "critical",
            "count": 1,
            "summary": "1 alert delivery failed and is not yet delivered, acknowledged or waived.",
            "refs": [delivery.delivery_id],
            "action": f"Plan retries (POST {A}/retry-plan) and run the worker live "
            f"(POST {A}/retry-worker-run with execute=true), or acknowledge the alert.",
        }
    ]
    assert dashboard["summary"]["deliveries"]["failed"] == 1

    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=True):
        # when a plan makes it retryable, then it is still open: planning sends nothing
        plan = _plan(api)
        assert plan["retryable_count"] == 1
        assert _dashboard(api)["open_items"] == [FAILED]

        # when a live run delivers it
        _answer(receiver, 200)
        run = _run_live(api, {"retry_plan_id": plan["retry_plan_id"]})
        assert run["status"] == "succeeded"

        # then the failure is closed and only the acknowledgement is outstanding
        dashboard = _dashboard(api)
        assert dashboard["open_items"] == [ACK_OUTSTANDING]
        assert _risks(dashboard)[ACK_OUTSTANDING]["refs"] == [delivery.delivery_id]
        assert dashboard["summary"]["executions"] == {
            "delivered": 1,
            "failed": 1,
            "skipped": 0,
            "accepted": 0,
            "superseded": 0,
        }
        assert dashboard["summary"]["worker_runs"]["succeeded"] == 1

        # when the recipient acknowledges, then the repaired loop is closed
        _acknowledge(api, health["health_id"])
        dashboard = _dashboard(api)
    _assert_closed(dashboard)
    assert dashboard["summary"]["deliveries"]["delivered"] == 1
    assert dashboard["summary"]["deliveries"]["failed"] == 0
    assert dashboard["summary"]["acknowledgements"] == 1


def test_closure_delivery_failed_is_closed_by_acknowledgement(api, operator, receiver, webhook):
    # given an alert whose delivery failed
    health, delivery = _critical_failed_delivery(api, receiver)
    assert _dashboard(api)["open_items"] == [FAILED]

    # when the recipient acknowledges it anyway (through another channel)
    _acknowledge(api, health["health_id"])

    # then the delivery is suppressed and the loop is closed
    delivery.refresh_from_db()
    assert (delivery.status, delivery.suppression_reason) == ("suppressed", "acknowledged")
    _assert_closed(_dashboard(api))


# -- delivery exhausted -------------------------------------------------------------------------


def _exhausted_delivery(api, receiver) -> tuple[dict, AlertDelivery]:
    health, delivery = _critical_failed_delivery(api, receiver)
    [decision] = _plan(api, {"retry_policy": {"max_retry_attempts": 1}})["retry_decisions"]
    assert decision["reason"] == "max_attempts_reached"
    delivery.refresh_from_db()
    assert delivery.status == "exhausted"
    return health, delivery


def _exhausted_risk(delivery_id: str) -> dict:
    return {
        "code": EXHAUSTED,
        "severity": "critical",
        "count": 1,
        "summary": "1 alert delivery used up the retry attempts.",
        "refs": [delivery_id],
        "action": f"Retry by hand (POST {A}/deliveries/{{delivery_id}}/retry) or waive with a "
        f"reason (POST {A}/deliveries/{{delivery_id}}/waive).",
    }


def test_closure_delivery_exhausted_is_closed_by_waiver(api, operator, receiver, webhook):
    # given a delivery whose attempts are used up
    _, delivery = _exhausted_delivery(api, receiver)

    # when the dashboard is read, then the exhausted delivery (not a failed one) is open
    dashboard = _dashboard(api)
    assert dashboard["alert_level"] == "critical"
    assert dashboard["risks"] == [_exhausted_risk(delivery.delivery_id)]

    # when a waiver comes without a reason, then it is refused and nothing changes
    waive = f"{A}/deliveries/{delivery.delivery_id}/waive"
    evidence_before = Evidence.objects.count()
    response = api.post(waive, {}, format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["reason"]
    delivery.refresh_from_db()
    assert delivery.status == "exhausted"
    assert Evidence.objects.count() == evidence_before

    # when an operator waives it with a reason
    response = api.post(waive, {"reason": "Recipient reached by phone."}, format="json")

    # then the delivery is suppressed as waived, recorded as evidence, and the loop is closed
    assert response.status_code == 200, response.json()
    assert response.json()["delivery"]["status"] == "suppressed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.suppression_reason, delivery.suppression_note) == (
        "suppressed",
        "waived",
        "Recipient reached by phone.",
    )
    waiver = Evidence.objects.get(metadata_kind=MetadataKind.DELIVERY_WAIVER)
    assert waiver.session_id == delivery.delivery_id
    assert waiver.payload["subject"]["previous_status"] == "exhausted"
    assert waiver.payload["subject"]["reason"] == "Recipient reached by phone."
    assert Evidence.objects.count() == evidence_before + 1
    dashboard = _dashboard(api)
    _assert_closed(dashboard)
    assert dashboard["summary"]["deliveries"]["suppressed"] == 1


def test_closure_delivery_exhausted_is_closed_by_manual_retry(api, operator, receiver, webhook):
    # given a delivery whose attempts are used up
    health, delivery = _exhausted_delivery(api, receiver)
    assert _dashboard(api)["risks"] == [_exhausted_risk(delivery.delivery_id)]

    # when an operator retries it by hand and the receiver accepts
    _answer(receiver, 200)
    response = api.post(f"{A}/deliveries/{delivery.delivery_id}/retry", {}, format="json")

    # then it is delivered (attempt 2, manual) and only the acknowledgement is outstanding
    assert response.status_code == 201, response.json()
    record = response.json()["execution_record"]
    assert (record["execution_status"], record["trigger"], record["attempt_number"]) == (
        "delivered",
        "manual",
        2,
    )
    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    assert _dashboard(api)["open_items"] == [ACK_OUTSTANDING]

    # when acknowledged, then closed
    _acknowledge(api, health["health_id"])
    _assert_closed(_dashboard(api))


# -- retry overdue ------------------------------------------------------------------------------


def test_closure_retry_overdue_is_closed_by_a_live_run(api, operator, receiver, webhook):
    # given a failed delivery and, 16 minutes later, a plan that made its retry due
    _, delivery = _critical_failed_delivery(api, receiver)
    failed_at = delivery.last_attempt_at
    due_at = failed_at + timedelta(minutes=15)
    with time_machine.travel(failed_at + timedelta(minutes=16), tick=True):
        plan = _plan(api)
        [decision] = plan["retry_decisions"]
        assert (decision["action"], decision["next_retry_at"]) == ("retry", isoformat(due_at))
        # the retry is due but within the 30-minute grace: not overdue yet
        assert _dashboard(api)["open_items"] == [FAILED]

    # when nobody runs the worker for more than the grace period
    with time_machine.travel(due_at + timedelta(minutes=31), tick=True):
        dashboard = _dashboard(api)

        # then the retry is overdue (a warning), next to the failed delivery (critical)
        assert dashboard["open_items"] == [FAILED, OVERDUE]
        assert dashboard["alert_level"] == "critical"
        assert _risks(dashboard)[OVERDUE] == {
            "code": OVERDUE,
            "severity": "warning",
            "count": 1,
            "summary": "1 retry decision has been due for more than 30 minutes without being "
            "executed.",
            "refs": [delivery.delivery_id],
            "action": LIVE_RUN_ACTION,
        }

        # when the worker runs live and delivers
        _answer(receiver, 200)
        run = _run_live(api, {"retry_plan_id": plan["retry_plan_id"]})
        assert (run["status"], run["summary"]["delivered_count"]) == ("succeeded", 1)

        # then neither the overdue retry nor the failure is open any more
        dashboard = _dashboard(api)
    assert dashboard["open_items"] == [ACK_OUTSTANDING]
    delivery.refresh_from_db()
    assert delivery.status == "delivered"


# -- worker failed ------------------------------------------------------------------------------


def test_closure_worker_failed_is_closed_by_a_later_successful_run(
    api, operator, receiver, webhook
):
    # given a failed delivery, and 16 minutes later a live run whose retry fails too
    _, delivery = _critical_failed_delivery(api, receiver)
    failed_at = delivery.last_attempt_at
    with time_machine.travel(failed_at + timedelta(minutes=16), tick=True):
        _answer(receiver, 500)
        failed_run = _run_live(api)
        assert failed_run["status"] == "failed"

        # when the dashboard is read, then the failed run is an open warning
        dashboard = _dashboard(api)
        assert dashboard["open_items"] == [FAILED, EXECUTION_FAILED, WORKER_FAILED]
        assert _risks(dashboard)[WORKER_FAILED] == {
            "code": WORKER_FAILED,
            "severity": "warning",
            "count": 1,
            "summary": "The latest live retry worker run is failed.",
            "refs": [failed_run["run_id"]],
            "action": "Inspect its execution records, then run the worker live again: "
            f"POST {A}/retry-worker-run with execute=true.",
        }
        # a dry run does not count as the latest live run
        response = api.post(f"{A}/retry-worker-run", {}, format="json")
        assert response.json()["run"]["dry_run"] is True
        assert _dashboard(api)["open_items"] == [FAILED, EXECUTION_FAILED, WORKER_FAILED]

    # when a later live run (after the 30-minute backoff of attempt 2) delivers
    delivery.refresh_from_db()
    assert delivery.attempt_count == 2
    with time_machine.travel(delivery.last_attempt_at + timedelta(minutes=31), tick=True):
        _answer(receiver, 200)
        later_run = _run_live(api)
        assert later_run["status"] == "succeeded"
        dashboard = _dashboard(api)

    # then the worker risk and the failure are closed
    assert dashboard["open_items"] == [ACK_OUTSTANDING]
    assert dashboard["summary"]["worker_runs"]["failed"] == 1
    assert dashboard["summary"]["worker_runs"]["succeeded"] == 1
    assert WorkerRun.objects.filter(dry_run=False).count() == 2


# -- acknowledgement outstanding ----------------------------------------------------------------


def test_closure_acknowledgement_outstanding_is_warning_then_critical_then_closed(
    api, operator, receiver, webhook
):
    # given an alert delivered now
    health = _build_health(api)
    delivery = _deliver(api, receiver, status=200)
    delivered_at = delivery.delivered_at

    # when the dashboard is read within the 60-minute SLA, then it is a warning
    dashboard = _dashboard(api)
    assert dashboard["alert_level"] == "warning"
    assert dashboard["risks"] == [
        {
            "code": ACK_OUTSTANDING,
            "severity": "warning",
            "count": 1,
            "summary": "1 delivered alert awaits acknowledgement.",
            "refs": [delivery.delivery_id],
            "action": ACK_ACTION,
        }
    ]

    with time_machine.travel(delivered_at + timedelta(minutes=61), tick=True):
        # when the SLA has passed, then the same risk is critical
        dashboard = _dashboard(api)
        assert dashboard["alert_level"] == "critical"
        assert dashboard["risks"] == [
            {
                "code": ACK_OUTSTANDING,
                "severity": "critical",
                "count": 1,
                "summary": "1 delivered alert awaits acknowledgement; the oldest for more than "
                "60 minutes.",
                "refs": [delivery.delivery_id],
                "action": ACK_ACTION,
            }
        ]

        # when the recipient only dismisses it, then it stays open
        _acknowledge(api, health["health_id"], acknowledgement_state="dismissed")
        assert _dashboard(api)["open_items"] == [ACK_OUTSTANDING]

        # when the recipient acknowledges it, then the loop is closed
        _acknowledge(api, health["health_id"])
        dashboard = _dashboard(api)
    _assert_closed(dashboard)
    assert dashboard["summary"]["acknowledgements"] == 2


# -- a dataset with every kind of open risk ---------------------------------------------------


def _names(prefix: str, units: int) -> list[str]:
    return [f"{prefix}-{number:02d}" for number in range(units)]


def _populate(api, receiver, units: int):
    """`units` connectors each of three kinds, driven through the real flow:

    ok-NN deliver (half of them acknowledged), bad-NN fail, retry live and fail again, then
    hold an overdue retry decision; dead-NN fail and are exhausted. One failed live run; a
    newer critical report that was never sent. Returns the time to read the dashboard at.
    """
    for prefix, status in (("ok", 200), ("bad", 500), ("dead", 500)):
        for name in _names(prefix, units):
            make_connector(name, receiver.url_for(f"/{name}"))
            receiver.expect_request(f"/{name}", method="POST").respond_with_data(
                "answer", status=status
            )
    start = timezone.now()
    health = _build_health(api)
    response = api.post(f"{A}/deliver", {"provider": "all"}, format="json")
    assert response.status_code == 201, response.json()
    assert len(response.json()["deliveries"]) == 3 * units
    _plan(
        api,
        {
            "provider": ",".join(_names("dead", units)),
            "retry_policy": {"max_retry_attempts": 1},
        },
    )
    bad = ",".join(_names("bad", units))
    with time_machine.travel(start + timedelta(minutes=16), tick=True):
        plan = _plan(api, {"provider": bad})
        assert plan["retryable_count"] == units
        run = _run_live(
            api, {"retry_plan_id": plan["retry_plan_id"], "max_retry_deliveries": units}
        )
        assert run["status"] == "failed"
    with time_machine.travel(start + timedelta(minutes=47), tick=True):
        assert _plan(api, {"provider": bad})["retryable_count"] == units
    read_at = start + timedelta(minutes=90)
    with time_machine.travel(read_at - timedelta(minutes=1), tick=True):
        for name in _names("ok", units)[::2]:
            _acknowledge(api, health["health_id"], provider=name)
        assert _build_health(api)["alert_level"] == "critical"
    return read_at


# The dashboard reads, whatever the number of records:
#  1. session          the session row of the logged-in operator
#  2. user             the operator
#  3. permissions      the operator's own and group permissions, in one query
#  4. latest report    the newest health report, with "was any alert of it sent" (EXISTS)
#  5. deliveries       one aggregate: count per status, failed-or-stuck, unacknowledged,
#                      failed retry execution
#  6. delivery refs    up to 20 failed, 20 exhausted and 20 failed-retry-execution public IDs,
#                      ranked in one window query
#  7. overdue          up to 20 overdue retry decisions with their delivery and the total
#  8. latest live run  the newest finished live worker run
#  9. ack refs         up to 20 delivered, unacknowledged deliveries, oldest first
# 10. circuits         connector circuits that are not closed, with the total
# 11. summary          plans, live runs by status, executions by status, acknowledgements,
#                      four grouped counts in one UNION ALL
DASHBOARD_QUERIES = 11


@pytest.mark.parametrize("units", [3, 30])
def test_closure_dashboard_query_count_does_not_grow_with_records(
    api, receiver, django_assert_num_queries, units
):
    # given every kind of open risk, for 3 units (9 deliveries) or 30 units (90 deliveries)
    read_at = _populate(api, receiver, units)

    # when the dashboard is read
    with time_machine.travel(read_at, tick=True), django_assert_num_queries(DASHBOARD_QUERIES):
        dashboard = _dashboard(api)

    # then all seven risks are open with their true totals, whatever their size
    counts = {risk["code"]: risk["count"] for risk in dashboard["risks"]}
    assert counts == {
        NOT_SENT: 1,
        FAILED: units,
        EXHAUSTED: units,
        EXECUTION_FAILED: units,
        OVERDUE: units,
        WORKER_FAILED: 1,
        ACK_OUTSTANDING: units // 2,
    }
    assert dashboard["summary"]["deliveries"] == {
        "pending": 0,
        "delivered": units,
        "accepted": 0,
        "failed": units,
        "exhausted": units,
        "suppressed": 0,
    }
    assert dashboard["summary"]["executions"] == {
        "delivered": units,
        "failed": 3 * units,
        "skipped": 0,
        "accepted": 0,
        "superseded": 0,
    }


def test_closure_dashboard_refs_hold_at_most_twenty_ids_but_the_true_count(api, receiver):
    # given 30 failed, 30 exhausted, 30 overdue and 15 unacknowledged deliveries
    read_at = _populate(api, receiver, 30)
    first_created = list(
        AlertDelivery.objects.order_by("created_at", "id").values_list("delivery_id", "provider")
    )

    # when the dashboard is read
    with time_machine.travel(read_at, tick=True):
        dashboard = _dashboard(api)

    # then each list names at most 20 public IDs, the oldest first, while count is the total
    risks = _risks(dashboard)
    for code, prefix, total in (
        (FAILED, "bad", 30),
        (EXHAUSTED, "dead", 30),
    ):
        assert risks[code]["count"] == total
        expected = [d for d, provider in first_created if provider.startswith(prefix)][:20]
        assert risks[code]["refs"] == expected
    assert risks[OVERDUE]["count"] == 30
    assert len(risks[OVERDUE]["refs"]) == 20
    assert set(risks[OVERDUE]["refs"]) <= {d for d, p in first_created if p.startswith("bad")}
    assert risks[ACK_OUTSTANDING]["count"] == 15
    assert len(risks[ACK_OUTSTANDING]["refs"]) == 15
    assert risks[ACK_OUTSTANDING]["severity"] == "critical"
    assert all(len(risk["refs"]) <= 20 for risk in dashboard["risks"])


def test_closure_dashboard_get_writes_nothing(api, receiver):
    # given every kind of open risk
    read_at = _populate(api, receiver, 3)
    counts_before = _all_model_counts()
    chain_head = Evidence.objects.order_by("-sequence").values_list("chain_hash", flat=True)[0]

    # when the dashboard is read, twice
    with time_machine.travel(read_at, tick=True), CaptureQueriesContext(connection) as queries:
        first = _dashboard(api)
        second = _dashboard(api)

    # then no statement wrote, every table holds what it held, and the answers agree
    assert _writes(queries.captured_queries) == []
    assert _all_model_counts() == counts_before
    assert Evidence.objects.order_by("-sequence").values_list("chain_hash", flat=True)[0] == (
        chain_head
    )
    assert first["open_items"] == second["open_items"]
    assert first["risks"] == second["risks"]
