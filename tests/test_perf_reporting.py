"""Reporting reads stay bounded on large tables (bench/dashboard.py, bench/list_pages.py).

The closure dashboard runs the same, exact number of queries with few and with many records
of every kind of open risk; the admin changelists and console list pages of the large tables
run a fixed number of queries, count at most a bounded number of rows (never a whole-table
`COUNT(*)`), and an admin search by public ID is an exact, indexed match.
"""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from closure.models import ApiToken, ConnectorCircuit, Evidence, RetryDecision
from closure.selectors import MAX_REFS, closure_dashboard
from tests.conftest import B, client_for
from tests.factories import (
    make_acknowledgement,
    make_alert,
    make_decision,
    make_delivery,
    make_execution,
    make_health_report,
    make_retry_plan,
    make_user,
    make_worker_run,
)
from tests.test_console_queries import populate

pytestmark = pytest.mark.django_db

DASHBOARD_URL = f"{B}/final-reporting-closure-dashboard"
FEW, MANY = 2, MAX_REFS + 6  # MANY fills every risk's refs and more


def open_risks(operator, connector, units: int) -> None:
    """`units` records of every open delivery risk, plus one failed live run and one open
    circuit: failed (with an overdue retry decision), exhausted, accepted but unconfirmed,
    delivered and unacknowledged (and one acknowledged, which closes nothing else)."""
    now = timezone.now()
    plan = make_retry_plan(actor=operator, alert_level="critical")
    for number in range(units):
        at = now - timedelta(hours=2, minutes=number)
        report = make_health_report(actor=operator, generated_at=at)
        for status in ("failed", "exhausted", "accepted", "delivered"):
            alert = make_alert(report=report, actor=operator, created_at=at)
            delivery = make_delivery(alert=alert, connector=connector, status=status, created_at=at)
            make_execution(
                delivery=delivery,
                actor=operator,
                executed_at=at,
                execution_status="failed" if status in ("failed", "exhausted") else "delivered",
            )
            if status == "failed":
                make_decision(plan=plan, delivery=delivery, next_retry_at=at)
    acked = make_alert(report=make_health_report(actor=operator), actor=operator)
    make_delivery(alert=acked, connector=connector, status="delivered")
    make_acknowledgement(alert=acked, connector=connector, actor=operator)
    make_worker_run(actor=operator, dry_run=False, status="failed")
    ConnectorCircuit.objects.create(
        connector=connector, state="open", open_until=now + timedelta(minutes=10)
    )


# closure_dashboard() reads, whatever the number of records:
#  1. the latest health report, with "was any alert of it sent" (EXISTS)
#  2. deliveries: one aggregate of counts per status, failed-or-stuck, unacknowledged,
#     unconfirmed, failed retry execution
#  3. up to 20 refs of each open delivery group (failed, exhausted, unconfirmed, failed retry
#     execution), one window
#  4. overdue retry decisions: up to 20 with their delivery, and the total
#  5. the latest finished live worker run
#  6. up to 20 delivered, unacknowledged deliveries, oldest first
#  7. connector circuits that are not closed, with the total
#  8. the summary: plans, live runs by status, executions by status, acknowledgements (UNION)
DASHBOARD_QUERIES = 8
# The API request adds: the token with its user; the permissions (the user's own and its
# groups', one query); a token's last use is written at most once a minute (one UPDATE).
DASHBOARD_API_QUERIES = DASHBOARD_QUERIES + 2


@pytest.mark.parametrize("units", [FEW, MANY])
def test_closure_dashboard_query_count_is_the_same_with_few_and_many_rows(
    operator, offline_webhook, django_assert_num_queries, units
):
    # given `units` records of every open risk
    open_risks(operator, offline_webhook, units)

    # when the dashboard is computed
    with django_assert_num_queries(DASHBOARD_QUERIES, exact=True):
        dashboard = closure_dashboard()

    # then every risk is open with its true total and at most MAX_REFS refs
    counts = {risk["code"]: (risk["count"], len(risk["refs"])) for risk in dashboard["risks"]}
    refs = min(units, MAX_REFS)
    assert counts == {
        "executive_retry_health_alert_delivery_failed": (units, refs),
        "executive_retry_health_alert_delivery_exhausted": (units, refs),
        "executive_retry_health_alert_delivery_unconfirmed": (units, refs),
        "executive_retry_health_alert_retry_overdue": (units, refs),
        "executive_retry_health_alert_retry_worker_failed": (1, 1),
        "executive_retry_health_alert_acknowledgement_outstanding": (units, refs),
        "executive_retry_health_alert_connector_circuit_open": (1, 1),
    }
    assert dashboard["summary"]["executions"]["failed"] == 2 * units


@pytest.mark.parametrize("units", [FEW, MANY])
def test_closure_dashboard_api_with_a_token_runs_a_fixed_number_of_queries(
    operator, offline_webhook, django_assert_num_queries, units
):
    # given `units` records of every open risk and a REST client with an API token
    open_risks(operator, offline_webhook, units)
    _, raw = ApiToken.issue(user=operator, name="dashboard reader")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    # when it reads the dashboard (the first read also records the token's last use)
    with django_assert_num_queries(DASHBOARD_API_QUERIES + 1, exact=True):
        assert client.get(DASHBOARD_URL).status_code == 200
    with django_assert_num_queries(DASHBOARD_API_QUERIES, exact=True):
        response = client.get(DASHBOARD_URL)

    # then it gets the whole dashboard in the same number of queries either way, at most 10
    assert DASHBOARD_API_QUERIES == 10
    assert response.status_code == 200
    assert response.json()["open_item_count"] == 7


def test_closure_dashboard_latest_report_is_the_newest_and_knows_its_alert(
    operator, offline_webhook
):
    # given an older report whose alert was delivered and a newer critical one never sent
    older = make_health_report(actor=operator, generated_at=timezone.now() - timedelta(hours=1))
    make_delivery(
        alert=make_alert(report=older, actor=operator),
        connector=offline_webhook,
        status="delivered",
    )
    newest = make_health_report(actor=operator)

    # when the dashboard is computed
    dashboard = closure_dashboard()

    # then the newest report is the one judged, and it counts as not sent
    not_sent = [r for r in dashboard["risks"] if r["code"].endswith("alert_not_sent")]
    assert [risk["refs"] for risk in not_sent] == [[newest.health_id]]


# -- admin changelists and console lists ---------------------------------------------------------

COUNT_STAR = re.compile(r"SELECT COUNT\(\*\)", re.IGNORECASE)


def counts_without_limit(queries) -> list[str]:
    """The `SELECT COUNT(*)` queries that read a whole (filtered) table: no LIMIT inside."""
    return [
        query["sql"]
        for query in queries
        if COUNT_STAR.search(query["sql"]) and " LIMIT " not in query["sql"]
    ]


@pytest.fixture
def staff_reader(roles):
    from closure.roles import AUDITORS, OPERATORS

    return make_user("stella", OPERATORS, AUDITORS, is_staff=True)


# changelist → exact queries: 3 auth (session, user, permissions in one query); the
# provider filter's connector names; the bounded count (LIMIT 10,001); the page (related
# columns joined); the date hierarchy's first and last date (one MIN/MAX).
ADMIN_CHANGELISTS = {
    "/admin/closure/executionrecord/": 7,
    "/admin/closure/executionrecord/?execution_status__exact=failed": 7,
    "/admin/closure/executionrecord/?provider=exec-webhook": 7,
    "/admin/closure/executionrecord/?trigger__exact=initial&error_class__exact=http_5xx": 7,
    "/admin/closure/alertdelivery/": 7,
    "/admin/closure/alertdelivery/?status__exact=failed": 7,
    "/admin/closure/evidence/": 7,
    "/admin/closure/evidence/?signer=olivia": 7,
}


@pytest.mark.parametrize("rows", [FEW, MANY])
@pytest.mark.parametrize("path", list(ADMIN_CHANGELISTS))
def test_admin_changelist_counts_are_bounded_and_queries_fixed(
    staff_reader, operator, offline_webhook, django_assert_num_queries, path, rows
):
    # given `rows` records of every kind
    populate(operator, offline_webhook, rows)
    client = client_for(staff_reader)

    # when a staff auditor opens the changelist, filtered or not
    with (
        django_assert_num_queries(ADMIN_CHANGELISTS[path], exact=True),
        CaptureQueriesContext(connection) as captured,
    ):
        response = client.get(path)

    # then the rows are listed with a bounded count, never a COUNT(*) of the whole table
    assert response.status_code == 200
    assert response.context["cl"].result_count == rows
    assert response.context["cl"].full_result_count is None
    assert counts_without_limit(captured.captured_queries) == []


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/admin/closure/executionrecord/", "execution_id"),
        ("/admin/closure/executionrecord/", "delivery_id"),
        ("/admin/closure/alertdelivery/", "delivery_id"),
        ("/admin/closure/alertdelivery/", "alert_id"),
        ("/admin/closure/evidence/", "session_id"),
    ],
)
def test_admin_search_by_public_id_is_one_exact_indexed_match(
    staff_reader, operator, offline_webhook, django_assert_num_queries, path, field
):
    # given many records, and the public ID of one of them (or of its delivery or alert)
    populate(operator, offline_webhook, MANY)
    client = client_for(staff_reader)
    model = path.split("/")[3]
    expected = _one_record(model, field)

    # when a staff auditor searches for that ID
    with (
        django_assert_num_queries(7, exact=True),
        CaptureQueriesContext(connection) as captured,
    ):
        response = client.get(path, {"q": expected["term"]})

    # then exactly that record is found, by an exact match on the field that holds that kind
    # of ID: no UPPER() = UPPER() and no OR across joined tables (no index serves either)
    assert [row.pk for row in response.context["cl"].result_list] == [expected["pk"]]
    count = next(q["sql"] for q in captured.captured_queries if COUNT_STAR.search(q["sql"]))
    assert "UPPER(" not in count
    assert not (" OR " in count and " JOIN " in count)


def _one_record(model: str, field: str) -> dict:
    from closure.models import AlertDelivery, ExecutionRecord

    if model == "executionrecord":
        record = ExecutionRecord.objects.select_related("delivery").order_by("id")[3]
        term = record.execution_id if field == "execution_id" else record.delivery.delivery_id
        return {"pk": record.pk, "term": term}
    if model == "alertdelivery":
        record = AlertDelivery.objects.select_related("alert").order_by("id")[3]
        term = record.delivery_id if field == "delivery_id" else record.alert.alert_id
        return {"pk": record.pk, "term": term}
    record = Evidence.objects.order_by("sequence")[3]
    return {"pk": record.pk, "term": record.session_id}


# console page → exact queries (see tests/test_console_queries.py for each one's list)
CONSOLE_LISTS = {
    "/console/executions/": 6,
    "/console/executions/?execution_status=failed": 6,
    "/console/executions/?provider=exec-webhook": 6,
    "/console/deliveries/": 7,
    "/console/deliveries/?status=failed": 7,
    "/console/evidence/": 5,
    "/console/evidence/?signer=olivia": 5,
}


@pytest.mark.parametrize("rows", [FEW, MANY])
@pytest.mark.parametrize("path", list(CONSOLE_LISTS))
def test_console_list_counts_are_bounded_and_queries_fixed(
    operator, offline_webhook, django_assert_num_queries, path, rows
):
    # given `rows` records of every kind
    populate(operator, offline_webhook, rows)
    client = client_for(operator)

    # when the operator opens the list, filtered or not
    with (
        django_assert_num_queries(CONSOLE_LISTS[path], exact=True),
        CaptureQueriesContext(connection) as captured,
    ):
        response = client.get(path)

    # then one page of the rows is shown, counted with a bound, never a whole-table COUNT(*)
    assert response.status_code == 200
    assert response.context["page"].paginator.count == rows
    assert len(response.context["page"].object_list) == min(rows, 25)
    assert counts_without_limit(captured.captured_queries) == []


def test_admin_search_for_a_term_no_search_field_can_hold_finds_nothing(
    staff_reader, operator, offline_webhook
):
    # given retry decisions, searchable only by their plan's and delivery's public IDs
    populate(operator, offline_webhook, FEW)
    client = client_for(staff_reader)
    decision = RetryDecision.objects.select_related("plan").order_by("id").first()

    # when a staff auditor searches for text that is no public ID, then for a plan's ID
    other = client.get("/admin/closure/retrydecision/", {"q": "olivia"})
    by_plan = client.get("/admin/closure/retrydecision/", {"q": decision.plan.retry_plan_id})

    # then the first finds nothing (not every row) and the second exactly that plan's decision
    assert list(other.context["cl"].result_list) == []
    assert [row.pk for row in by_plan.context["cl"].result_list] == [decision.pk]
