"""Executive delivery retry health: every finding of DESIGN.md 4, the level, and the GET rules."""

from datetime import timedelta

import pytest
import time_machine
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.canonical import isoformat
from closure.models import Evidence, HealthReport
from tests.conftest import R, client_for
from tests.factories import make_event

pytestmark = pytest.mark.django_db

HEALTH = f"{R}/delivery-retry-health"
DEFAULT_PARAMETERS = {"expected_interval_minutes": 60, "stale_metadata_minutes": 180}


def _fresh_pipeline(actor, *, minutes_ago: int = 5, schedule_enabled: bool = True) -> None:
    """A worker run and a retry plan reported recently: nothing to find."""
    now = timezone.now()
    make_event(
        actor=actor,
        kind="retry_worker_run",
        status="succeeded",
        schedule_enabled=schedule_enabled,
        occurred_at=now - timedelta(minutes=minutes_ago),
        event_id="run-fresh",
    )
    make_event(
        actor=actor,
        kind="retry_plan",
        status="succeeded",
        occurred_at=now - timedelta(minutes=minutes_ago),
        event_id="plan-fresh",
    )


def _build(api, body: dict | None = None) -> dict:
    response = api.post(HEALTH, body or {}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["health"]


def _categories(health: dict) -> list[str]:
    return [finding["category"] for finding in health["findings"]]


def _model_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in apps.get_models()}


def _writes(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]


def test_health_build_is_healthy_when_pipeline_is_fresh(api, operator):
    # given a worker run and a retry plan reported five minutes ago
    _fresh_pipeline(operator)

    # when health is built
    response = api.post(HEALTH, {}, format="json")

    # then it is healthy, with no findings, and stored with its evidence
    assert response.status_code == 201, response.json()
    body = response.json()
    health = body["health"]
    report = HealthReport.objects.get()
    assert health["health_id"] == report.health_id
    assert health["health_id"].startswith("gordackexecdeliveryhealth-")
    assert len(health["health_id"]) == len("gordackexecdeliveryhealth-") + 16
    assert health["generated_at"] == isoformat(report.generated_at)
    assert health["generated_by"] == "olivia"
    assert health["alert_level"] == "healthy"
    assert health["alert_count"] == 0
    assert health["findings"] == []
    assert health["parameters"] == DEFAULT_PARAMETERS
    assert health["counts"] == {
        "events": 2,
        "by_kind": {"retry_worker_run": {"succeeded": 1}, "retry_plan": {"succeeded": 1}},
        "findings": 0,
        "critical_findings": 0,
        "warning_findings": 0,
    }
    evidence = Evidence.objects.get()
    assert evidence.metadata_kind == MetadataKind.HEALTH
    assert evidence.session_id == report.health_id
    assert evidence.health_id == report.health_id
    assert evidence.signer == "olivia"
    assert (evidence.decision_count, evidence.blocked_count) == (0, 0)
    assert body["metadata"]["session_id"] == report.health_id
    assert body["metadata"]["sequence"] == evidence.sequence


def test_health_missed_worker_when_no_run_was_reported(api, operator):
    # given a recent retry plan but no worker run at all
    make_event(actor=operator, kind="retry_plan", status="succeeded", event_id="plan-1")

    # when health is built
    health = _build(api)

    # then the missed worker is the one critical finding, with nothing to reference
    assert health["alert_level"] == "critical"
    assert health["alert_count"] == 1
    assert health["findings"] == [
        {
            "severity": "critical",
            "category": "missed_executive_delivery_retry_worker",
            "message": "No upstream retry worker run has been reported.",
            "count": 1,
            "refs": [],
        }
    ]
    report = HealthReport.objects.get()
    assert report.alert_level == "critical"
    assert report.findings == health["findings"]
    assert Evidence.objects.get(metadata_kind=MetadataKind.HEALTH).blocked_count == 1


def test_health_missed_worker_when_newest_run_is_older_than_twice_the_interval(api, operator):
    # given an old worker run and a newer one, both succeeded
    now = timezone.now()
    make_event(
        actor=operator,
        kind="retry_worker_run",
        status="succeeded",
        schedule_enabled=True,
        occurred_at=now - timedelta(minutes=90),
        event_id="run-old",
    )
    make_event(
        actor=operator,
        kind="retry_worker_run",
        status="succeeded",
        schedule_enabled=True,
        occurred_at=now,
        event_id="run-new",
    )

    def plan_now():
        make_event(actor=operator, kind="retry_plan", status="succeeded")

    # when the clock moves to just under 2 × 60 minutes after the newest run
    with time_machine.travel(now + timedelta(minutes=119), tick=True):
        plan_now()
        health = _build(api)
    # then the worker is not missed (the newest run counts, not the older one)
    assert health["findings"] == []
    assert health["alert_level"] == "healthy"

    # when the clock moves past 2 × 60 minutes
    with time_machine.travel(now + timedelta(minutes=121), tick=True):
        plan_now()
        health = _build(api)
    # then the newest run is referenced as missed
    assert health["alert_level"] == "critical"
    assert health["findings"] == [
        {
            "severity": "critical",
            "category": "missed_executive_delivery_retry_worker",
            "message": f"The newest upstream retry worker run ({isoformat(now)}) is older than "
            f"twice the expected interval of 60 minutes.",
            "count": 1,
            "refs": ["run-new"],
        }
    ]

    # when the expected interval is widened to 61 minutes, the same run is on time again
    with time_machine.travel(now + timedelta(minutes=121), tick=True):
        health = _build(api, {"expected_interval_minutes": 61})
    assert health["findings"] == []
    assert health["parameters"] == {"expected_interval_minutes": 61, "stale_metadata_minutes": 180}
    assert HealthReport.objects.count() == 3


def test_health_stale_retry_plan_when_no_plan_is_newer_than_the_window(api, operator):
    # given a fresh worker run and a retry plan 181 minutes old
    now = timezone.now()
    make_event(
        actor=operator,
        kind="retry_worker_run",
        status="succeeded",
        schedule_enabled=True,
        occurred_at=now - timedelta(minutes=5),
    )
    make_event(
        actor=operator,
        kind="retry_plan",
        status="succeeded",
        occurred_at=now - timedelta(minutes=181),
        event_id="plan-old",
    )

    # when health is built
    health = _build(api)

    # then the plan is stale: a warning, so the level is warning
    assert health["alert_level"] == "warning"
    assert health["findings"] == [
        {
            "severity": "warning",
            "category": "stale_executive_delivery_retry_plan",
            "message": "No upstream retry plan in the last 180 minutes.",
            "count": 1,
            "refs": [],
        }
    ]
    assert health["counts"]["warning_findings"] == 1
    assert health["counts"]["critical_findings"] == 0

    # when the stale window is widened to 200 minutes, the same plan is recent enough
    health = _build(api, {"stale_metadata_minutes": 200})
    assert health["findings"] == []
    assert health["alert_level"] == "healthy"


def test_health_stale_retry_plan_when_no_plan_was_ever_reported(api, operator):
    # given only a fresh worker run
    make_event(actor=operator, kind="retry_worker_run", status="succeeded", schedule_enabled=True)

    # when health is built
    health = _build(api)

    # then the missing plan is reported as stale
    assert _categories(health) == ["stale_executive_delivery_retry_plan"]
    assert health["alert_level"] == "warning"


def test_health_failed_report_delivery_is_critical(api, operator):
    # given a fresh pipeline and a failed executive report delivery
    _fresh_pipeline(operator)
    make_event(
        actor=operator,
        kind="report_delivery",
        status="failed",
        provider="slack-exec",
        run_id="drill-7",
        event_id="delivery-failed",
    )

    # when health is built
    health = _build(api)

    # then the failure is a critical finding that references the event
    assert health["alert_level"] == "critical"
    assert health["findings"] == [
        {
            "severity": "critical",
            "category": "failed_executive_report_delivery",
            "message": "1 failed executive report deliveries have no later delivered event for "
            "the same run and provider.",
            "count": 1,
            "refs": ["delivery-failed"],
        }
    ]
    assert health["counts"]["by_kind"]["report_delivery"] == {"failed": 1}


def test_health_failed_report_delivery_cleared_by_later_delivery_for_same_run_and_provider(
    api, operator
):
    # given a fresh pipeline and a failed report delivery
    _fresh_pipeline(operator)
    failed_at = timezone.now() - timedelta(minutes=10)
    make_event(
        actor=operator,
        kind="report_delivery",
        status="failed",
        provider="slack-exec",
        run_id="drill-7",
        occurred_at=failed_at,
        event_id="delivery-failed",
    )
    assert _categories(_build(api)) == ["failed_executive_report_delivery"]

    # when a later delivered event arrives for the same run_id and provider
    make_event(
        actor=operator,
        kind="report_delivery",
        status="delivered",
        provider="slack-exec",
        run_id="drill-7",
        occurred_at=failed_at + timedelta(minutes=1),
        event_id="delivery-ok",
    )
    health = _build(api)

    # then the failure is recovered and health is healthy again
    assert health["findings"] == []
    assert health["alert_level"] == "healthy"
    assert health["counts"]["by_kind"]["report_delivery"] == {"failed": 1, "delivered": 1}


def test_health_failed_report_delivery_not_cleared_by_unrelated_or_earlier_deliveries(
    api, operator
):
    # given a fresh pipeline and a failed report delivery for drill-7 on slack-exec
    _fresh_pipeline(operator)
    failed_at = timezone.now() - timedelta(minutes=10)
    make_event(
        actor=operator,
        kind="report_delivery",
        status="failed",
        provider="slack-exec",
        run_id="drill-7",
        occurred_at=failed_at,
        event_id="delivery-failed",
    )

    # when delivered events arrive later for another provider and another run, and one
    # for the same run and provider arrives with an EARLIER time
    for event_id, provider, run_id, minutes in (
        ("other-provider", "teams-exec", "drill-7", 1),
        ("other-run", "slack-exec", "drill-8", 1),
        ("earlier-same", "slack-exec", "drill-7", -1),
    ):
        make_event(
            actor=operator,
            kind="report_delivery",
            status="delivered",
            provider=provider,
            run_id=run_id,
            occurred_at=failed_at + timedelta(minutes=minutes),
            event_id=event_id,
        )
    # and a later delivered retry execution (another kind) for the same run and provider
    make_event(
        actor=operator,
        kind="retry_execution",
        status="delivered",
        provider="slack-exec",
        run_id="drill-7",
        occurred_at=failed_at + timedelta(minutes=2),
    )
    health = _build(api)

    # then the failure is still open
    assert _categories(health) == ["failed_executive_report_delivery"]
    [finding] = health["findings"]
    assert (finding["count"], finding["refs"]) == (1, ["delivery-failed"])
    assert health["alert_level"] == "critical"


def test_health_failed_retry_execution_is_critical_until_a_later_delivery(api, operator):
    # given a fresh pipeline and two failed retry executions for drill-9 on slack-exec
    _fresh_pipeline(operator)
    first_at = timezone.now() - timedelta(minutes=20)
    for event_id, minutes in (("exec-failed-1", 0), ("exec-failed-2", 5)):
        make_event(
            actor=operator,
            kind="retry_execution",
            status="failed",
            provider="slack-exec",
            run_id="drill-9",
            occurred_at=first_at + timedelta(minutes=minutes),
            event_id=event_id,
        )
    # and a later delivered report delivery (another kind), which does not recover them
    make_event(
        actor=operator,
        kind="report_delivery",
        status="delivered",
        provider="slack-exec",
        run_id="drill-9",
        occurred_at=first_at + timedelta(minutes=6),
    )

    # when health is built, then both failures are reported, newest first
    health = _build(api)
    assert health["alert_level"] == "critical"
    assert health["findings"] == [
        {
            "severity": "critical",
            "category": "failed_executive_delivery_retry_execution",
            "message": "2 failed retry executions have no later delivered event for the same "
            "run and provider.",
            "count": 2,
            "refs": ["exec-failed-2", "exec-failed-1"],
        }
    ]

    # when a delivered retry execution falls between them, only the later failure stays open
    make_event(
        actor=operator,
        kind="retry_execution",
        status="delivered",
        provider="slack-exec",
        run_id="drill-9",
        occurred_at=first_at + timedelta(minutes=1),
    )
    [finding] = _build(api)["findings"]
    assert (finding["count"], finding["refs"]) == (1, ["exec-failed-2"])

    # when a delivered retry execution follows the last failure, the finding is gone
    make_event(
        actor=operator,
        kind="retry_execution",
        status="delivered",
        provider="slack-exec",
        run_id="drill-9",
        occurred_at=first_at + timedelta(minutes=7),
    )
    health = _build(api)
    assert health["findings"] == []
    assert health["alert_level"] == "healthy"


def test_health_failed_findings_count_all_but_reference_at_most_twenty(api, operator):
    # given 25 unrecovered report delivery failures
    _fresh_pipeline(operator)
    start = timezone.now() - timedelta(minutes=60)
    for number in range(25):
        make_event(
            actor=operator,
            kind="report_delivery",
            status="failed",
            provider="slack-exec",
            run_id=f"drill-{number}",
            occurred_at=start + timedelta(minutes=number),
            event_id=f"failed-{number:02d}",
        )

    # when health is built
    [finding] = _build(api)["findings"]

    # then the count is the true total and the refs are the 20 newest
    assert finding["count"] == 25
    assert finding["refs"] == [f"failed-{number:02d}" for number in range(24, 4, -1)]


def test_health_disabled_schedule_when_newest_worker_run_reports_it(api, operator):
    # given an older run with its schedule disabled and a newer one with it enabled
    now = timezone.now()
    _fresh_pipeline(operator, minutes_ago=5, schedule_enabled=True)
    make_event(
        actor=operator,
        kind="retry_worker_run",
        status="succeeded",
        schedule_enabled=False,
        occurred_at=now - timedelta(minutes=30),
        event_id="run-disabled-old",
    )
    # then an older disabled schedule is not a finding
    assert _build(api)["findings"] == []

    # when the newest worker run reports its schedule disabled
    make_event(
        actor=operator,
        kind="retry_worker_run",
        status="succeeded",
        schedule_enabled=False,
        occurred_at=now - timedelta(minutes=1),
        event_id="run-disabled-new",
    )
    health = _build(api)

    # then it is a warning referencing that run
    assert health["alert_level"] == "warning"
    assert health["findings"] == [
        {
            "severity": "warning",
            "category": "disabled_executive_delivery_retry_schedule",
            "message": "The newest upstream retry worker run reports its schedule disabled.",
            "count": 1,
            "refs": ["run-disabled-new"],
        }
    ]

    # when an even newer run does not report its schedule at all, nothing is found
    make_event(actor=operator, kind="retry_worker_run", status="succeeded", occurred_at=now)
    assert _build(api)["findings"] == []


def test_health_alert_level_is_the_most_severe_finding(api, operator):
    # given two warnings: a stale plan and a disabled schedule
    now = timezone.now()
    make_event(
        actor=operator,
        kind="retry_worker_run",
        status="succeeded",
        schedule_enabled=False,
        occurred_at=now - timedelta(minutes=5),
        event_id="run-disabled",
    )
    make_event(
        actor=operator,
        kind="retry_plan",
        status="succeeded",
        occurred_at=now - timedelta(minutes=300),
    )

    # when health is built, then the level is warning
    health = _build(api)
    assert health["alert_level"] == "warning"
    assert health["alert_count"] == 2
    assert _categories(health) == [
        "stale_executive_delivery_retry_plan",
        "disabled_executive_delivery_retry_schedule",
    ]

    # when a critical finding joins them, then the level is critical
    make_event(
        actor=operator,
        kind="retry_execution",
        status="failed",
        provider="teams-exec",
        run_id="drill-3",
        event_id="exec-failed",
    )
    health = _build(api)
    assert health["alert_level"] == "critical"
    assert health["alert_count"] == 3
    assert _categories(health) == [
        "stale_executive_delivery_retry_plan",
        "failed_executive_delivery_retry_execution",
        "disabled_executive_delivery_retry_schedule",
    ]
    assert (health["counts"]["critical_findings"], health["counts"]["warning_findings"]) == (1, 2)
    latest = HealthReport.objects.order_by("-generated_at", "-id").first()
    assert (latest.alert_level, latest.alert_count) == ("critical", 3)
    evidence = Evidence.objects.filter(session_id=latest.health_id).get()
    assert (evidence.decision_count, evidence.blocked_count) == (3, 1)


def test_health_get_returns_the_latest_stored_report(api, operator):
    # given a critical report, then a healthy one built ten minutes later
    first = _build(api)
    assert first["alert_level"] == "critical"
    with time_machine.travel(timezone.now() + timedelta(minutes=10), tick=True):
        _fresh_pipeline(operator)
        second = _build(api)
        reports_before = HealthReport.objects.count()
        evidence_before = Evidence.objects.count()

        # when the latest report is read
        response = api.get(HEALTH)

    # then it is the second one, with its evidence envelope, and nothing was stored
    assert response.status_code == 200
    body = response.json()
    assert body["health"] == second
    assert body["health"]["alert_level"] == "healthy"
    assert body["metadata"]["metadata_kind"] == MetadataKind.HEALTH
    assert body["metadata"]["session_id"] == second["health_id"]
    assert body["metadata"]["subject"] == second
    assert HealthReport.objects.count() == reports_before == 2
    assert Evidence.objects.count() == evidence_before == 2


def test_health_get_without_any_report_is_a_problem(api):
    # given no stored report, when the latest is read
    response = api.get(HEALTH)

    # then it is a 404 problem and nothing was stored
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "no_health_report"
    assert HealthReport.objects.count() == 0
    assert Evidence.objects.count() == 0


def test_health_get_preview_computes_without_storing(api, operator):
    # given a stored healthy report
    _fresh_pipeline(operator)
    stored = _build(api)
    assert stored["alert_level"] == "healthy"
    # and a failure reported after it
    make_event(
        actor=operator,
        kind="report_delivery",
        status="failed",
        provider="slack-exec",
        run_id="drill-1",
        event_id="late-failure",
    )
    reports_before = HealthReport.objects.count()
    evidence_before = Evidence.objects.count()

    # when a preview is requested
    response = api.get(HEALTH, {"preview": "true"})

    # then it reflects the new failure, is marked unstored, and stored nothing
    assert response.status_code == 200
    body = response.json()
    assert body["preview"] is True
    assert body["stored"] is False
    assert body["health"]["health_id"] is None
    assert body["health"]["alert_level"] == "critical"
    assert _categories(body["health"]) == ["failed_executive_report_delivery"]
    assert body["health"]["findings"][0]["refs"] == ["late-failure"]
    assert body["health"]["parameters"] == DEFAULT_PARAMETERS
    assert HealthReport.objects.count() == reports_before == 1
    assert Evidence.objects.count() == evidence_before == 1

    # and the latest stored report is still the healthy one
    assert api.get(HEALTH).json()["health"] == stored


def test_health_get_preview_with_a_bad_flag_is_rejected(api):
    # when preview is neither true nor false
    response = api.get(HEALTH, {"preview": "maybe"})

    # then it is a validation problem naming the parameter, and nothing was stored
    assert response.status_code == 400
    assert response.json()["errors"] == {"preview": ["Must be true or false."]}
    assert HealthReport.objects.count() == 0


@pytest.mark.parametrize("query", [{}, {"preview": "true"}, {"preview": "false"}])
def test_health_get_never_writes(api, operator, query):
    # given a degraded pipeline and one stored report
    make_event(
        actor=operator,
        kind="report_delivery",
        status="failed",
        provider="slack-exec",
        run_id="drill-1",
    )
    _build(api)
    counts_before = _model_counts()

    # when health is read
    with CaptureQueriesContext(connection) as queries:
        response = api.get(HEALTH, query)

    # then no statement wrote, and every table holds what it held before
    assert response.status_code == 200
    assert _writes(queries.captured_queries) == []
    assert _model_counts() == counts_before


def test_health_get_needs_the_view_permission(outsider):
    # given a user without any role, when the latest report is read
    response = client_for(outsider).get(HEALTH, {"preview": "true"})

    # then it is refused and nothing was computed into storage
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert HealthReport.objects.count() == 0
