"""Console list pages run a fixed number of queries, whatever the number of rows.

Each page is read with 2 and with 26 rows (more than a page) of its records; the query count
is the same, exact, and each query is named in a comment. The counts are for a signed-in
operator: the session, the user and the permissions (the user's own and its groups', one query)
are 3 queries, then cached for the request.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from closure.choices import MetadataKind
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    ClosureReview,
    Evidence,
    ExecutionRecord,
    HealthAlert,
    HealthReport,
    RetryPlan,
    WorkerRun,
)
from tests.conftest import client_for
from tests.factories import (
    make_acknowledgement,
    make_alert,
    make_closure_review,
    make_decision,
    make_delivery,
    make_evidence,
    make_execution,
    make_health_report,
    make_retry_plan,
    make_worker_run,
)

pytestmark = pytest.mark.django_db


def populate(operator, connector, rows: int, *, reviews: bool = False) -> None:
    """`rows` records of every kind the list pages show (reviews, the slow ones to make, only
    when asked)."""
    now = timezone.now()
    notes = None
    for number in range(rows):
        at = now - timedelta(minutes=number)
        report = make_health_report(actor=operator, generated_at=at)
        alert = make_alert(report=report, actor=operator, created_at=at)
        delivery = make_delivery(alert=alert, connector=connector, created_at=at)
        make_execution(delivery=delivery, actor=operator, executed_at=at)
        make_acknowledgement(alert=alert, connector=connector, actor=operator, state="escalated")
        plan = make_retry_plan(actor=operator, generated_at=at)
        make_decision(plan=plan, delivery=delivery, action="wait", status="superseded")
        make_worker_run(actor=operator, retry_plan=plan, started_at=at)
        make_evidence(kind=MetadataKind.HEALTH, session_id=report.health_id, signer="olivia")
        if not reviews:
            continue
        if notes is None:
            notes = dict.fromkeys(_open_items(), "accepted")
        make_closure_review(actor=operator, decision="accept_open_risks", **notes)


def _open_items():
    from closure.selectors import closure_dashboard

    return closure_dashboard()["open_items"]


# page → (exact queries, the model it lists). "3 auth" is the session, the user and the
# permissions (the user's own and its groups', one query); "count" the bounded count (at most
# 10,001 rows read).
PAGES = {
    # 3 auth; count; the page of reports (generated_by joined); the build form reads nothing
    "/console/health/": (5, HealthReport),
    # 3 auth; the send form's report choices and connector choices; count; the page of alerts
    # (health and created_by joined); their deliveries (one prefetch)
    "/console/alerts/": (8, HealthAlert),
    # 3 auth; count; the page (alert and health joined); attempts over time and attempts per
    # delivery (one grouped query each, over the filtered set)
    "/console/deliveries/": (7, AlertDelivery),
    # 3 auth; the form's report and connector choices; count; the page (alert, health,
    # acknowledged_by joined)
    "/console/acknowledgements/": (7, Acknowledgement),
    # 3 auth; the form's connector and report choices; count; the page (generated_by joined)
    "/console/retry-plans/": (7, RetryPlan),
    # 3 auth; the latest plan (the form's initial choice); the form's plan and connector
    # choices; count; the page (started_by and retry_plan joined)
    "/console/worker-runs/": (8, WorkerRun),
    # 3 auth; count; the page (delivery, alert, health, worker run, executed_by joined);
    # attempts over time (one grouped query)
    "/console/executions/": (6, ExecutionRecord),
    # 3 auth; count; the page (reviewer joined)
    "/console/reviews/": (5, ClosureReview),
    # 3 auth; count; the page (each row's hashes are recomputed in Python, its subject's link
    # comes from the public ID's prefix: no query per row)
    "/console/evidence/": (5, Evidence),
}


@pytest.mark.parametrize("rows", [2, 26])
@pytest.mark.parametrize("path", list(PAGES))
def test_console_list_page_query_count_does_not_grow(
    operator, offline_webhook, django_assert_num_queries, path, rows
):
    # given `rows` records of every kind and an operator's session
    populate(operator, offline_webhook, rows, reviews=path == "/console/reviews/")
    client = client_for(operator)
    queries, model = PAGES[path]

    # when the operator opens the list page
    with django_assert_num_queries(queries, exact=True):
        response = client.get(path)

    # then it shows a full page of rows, in the same number of queries either way
    assert response.status_code == 200
    assert response.context["page"].paginator.count == model.objects.count()
    assert len(response.context["page"].object_list) == min(model.objects.count(), 25)


# 3 auth; the flow's state (latest report with its alert count, its deliveries by status, the
# open decisions, the latest plan, the latest run: 5); the closure dashboard (7: latest report,
# deliveries by status, the risks' refs, the open decisions, the latest live run, the
# circuits, the summary); the Send alert form's report and connector choices (2)
FLOW_QUERIES = 17
# 3 auth; the closure dashboard (7); the deliveries among the risks' refs (for the
# Acknowledge actions); the latest reviews
CLOSURE_QUERIES = 12


@pytest.mark.parametrize("rows", [2, 26])
@pytest.mark.parametrize(
    ("path", "queries"), [("/console/", FLOW_QUERIES), ("/console/closure/", CLOSURE_QUERIES)]
)
def test_console_flow_and_closure_pages_run_a_fixed_number_of_queries(
    operator, offline_webhook, django_assert_num_queries, path, queries, rows
):
    populate(operator, offline_webhook, rows, reviews=path == "/console/closure/")
    client = client_for(operator)

    with django_assert_num_queries(queries, exact=True):
        response = client.get(path)

    assert response.status_code == 200
    assert response.context["dashboard"]["closure_state"] == "open"
