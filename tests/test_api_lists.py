"""The /api/v1/ resource lists and the alert history: pages, ordering, details, filters and
query counts.

Rows are built directly with the factories. Timestamps come in pairs that share an instant, so
every ordering must break ties by ID to return the order asserted here.
"""

from datetime import UTC, datetime, timedelta

import pytest

from closure.choices import MetadataKind
from closure.evidence.canonical import isoformat
from closure.evidence.chain import GENESIS_HASH
from closure.keyring import field_fingerprint
from closure.models import Connector, Evidence
from tests.conftest import A, assert_invalid, assert_problem, client_for, closure_counts
from tests.factories import (
    make_acknowledgement,
    make_alert,
    make_connector,
    make_decision,
    make_delivery,
    make_event,
    make_evidence,
    make_execution,
    make_health_report,
    make_retry_plan,
    make_worker_run,
)

pytestmark = pytest.mark.django_db

BASE = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
LONG_AGO = BASE - timedelta(days=30)


def at(index: int) -> datetime:
    """Rows 0 and 1 share an instant, 2 and 3 the next minute, …"""
    return BASE + timedelta(minutes=index // 2)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _connector() -> Connector:
    connector = Connector.objects.filter(name="list-webhook").first()
    return connector or make_connector("list-webhook", "https://hooks.example.invalid/lists")


# Builders: create rows `start … start+n-1` of one resource and return their public IDs in
# creation order. Every list except connectors shows the newest (last created) first.


def _events(actor, start, n):
    return [
        make_event(
            actor=actor,
            kind="report_delivery",
            status="failed",
            occurred_at=at(i),
            event_id=f"evt-{i:03d}",
            provider="slack-exec",
            run_id=f"drill-{i}",
        ).event_id
        for i in range(start, start + n)
    ]


def _reports(actor, start, n):
    return [
        make_health_report(actor=actor, generated_at=at(i)).health_id
        for i in range(start, start + n)
    ]


def _connectors(actor, start, n):
    # Named so that name order (the list's order) is the reverse of creation order.
    return [
        make_connector(f"conn-{999 - i:03d}", f"https://hooks.example.invalid/{i}").name
        for i in range(start, start + n)
    ]


def _alerts(actor, start, n):
    report = make_health_report(actor=actor, generated_at=LONG_AGO)
    ids = []
    for i in range(start, start + n):
        alert = make_alert(report=report, actor=actor, created_at=at(i), providers=["list-webhook"])
        make_delivery(alert=alert, connector=_connector(), created_at=at(i))
        ids.append(alert.alert_id)
    return ids


def _deliveries(actor, start, n):
    report = make_health_report(actor=actor, generated_at=LONG_AGO)
    ids = []
    for i in range(start, start + n):
        alert = make_alert(report=report, actor=actor, created_at=LONG_AGO)
        ids.append(make_delivery(alert=alert, connector=_connector(), created_at=at(i)).delivery_id)
    return ids


def _acknowledgements(actor, start, n):
    report = make_health_report(actor=actor, generated_at=LONG_AGO)
    alert = make_alert(report=report, actor=actor, created_at=LONG_AGO)
    connector = _connector()
    return [
        make_acknowledgement(alert=alert, connector=connector, actor=actor, at=at(i)).ack_id
        for i in range(start, start + n)
    ]


def _plans(actor, start, n):
    return [
        make_retry_plan(actor=actor, generated_at=at(i)).retry_plan_id
        for i in range(start, start + n)
    ]


def _runs(actor, start, n):
    plan = make_retry_plan(actor=actor, generated_at=LONG_AGO)
    return [
        make_worker_run(actor=actor, started_at=at(i), retry_plan=plan).run_id
        for i in range(start, start + n)
    ]


def _executions(actor, start, n):
    # Every relation the serializer shows is set, so a missing select_related would show.
    report = make_health_report(actor=actor, generated_at=LONG_AGO)
    alert = make_alert(report=report, actor=actor, created_at=LONG_AGO)
    delivery = make_delivery(alert=alert, connector=_connector(), created_at=LONG_AGO)
    plan = make_retry_plan(actor=actor, generated_at=LONG_AGO)
    decision = make_decision(plan=plan, delivery=delivery, status="executed")
    run = make_worker_run(actor=actor, dry_run=False, started_at=LONG_AGO, retry_plan=plan)
    return [
        make_execution(
            delivery=delivery,
            actor=actor,
            attempt_number=i + 1,
            trigger="retry",
            executed_at=at(i),
            worker_run=run,
            decision=decision,
        ).execution_id
        for i in range(start, start + n)
    ]


def _evidence(actor, start, n):
    return [
        make_evidence(
            kind=MetadataKind.HEALTH, session_id=f"session-{i}", signer="olivia", now=at(i)
        ).sequence
        for i in range(start, start + n)
    ]


# resource → (builder, the public ID field, queries for one page; see QUERIES)
RESOURCES = {
    "delivery-events": (_events, "event_id", 5),
    "health-reports": (_reports, "health_id", 5),
    "connectors": (_connectors, "name", 5),
    "alerts": (_alerts, "alert_id", 6),
    "deliveries": (_deliveries, "delivery_id", 5),
    "acknowledgements": (_acknowledgements, "ack_id", 5),
    "retry-plans": (_plans, "retry_plan_id", 5),
    "worker-runs": (_runs, "run_id", 5),
    "execution-records": (_executions, "execution_id", 5),
    "evidence": (_evidence, "sequence", 5),
}
# The queries of one list page, whatever the number of rows:
#   1 the session, 2 the user, 3 the user's own and its groups' permissions (one query; the
#     view permission is checked once per request),
#   4 COUNT(*) for `count`, 5 the page with its foreign keys joined (select_related),
#   6 alerts only: their deliveries, prefetched for the whole page in one query.
QUERIES = {name: queries for name, (_, _, queries) in RESOURCES.items()}


def list_url(resource: str) -> str:
    return A if resource == "alert-history" else f"/api/v1/{resource}/"


def result_ids(response, key: str) -> list:
    assert response.status_code == 200, response.content
    return [row[key] for row in response.json()["results"]]


@pytest.fixture
def reader(auditor):
    """An auditor's session: auditors read every list."""
    return client_for(auditor)


# -- pages and ordering -----------------------------------------------------------------------


@pytest.mark.parametrize("resource", RESOURCES)
def test_list_is_paginated_with_stable_newest_first_ordering(reader, operator, resource):
    # given five rows, created in pairs that share a timestamp
    build, key, _ = RESOURCES[resource]
    created = build(operator, 0, 5)
    expected = list(reversed(created))

    # when the list is read whole
    response = reader.get(f"/api/v1/{resource}/")

    # then the body is a page with every row, newest first (ties broken by ID)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert (body["count"], body["next"], body["previous"]) == (5, None, None)
    assert [row[key] for row in body["results"]] == expected

    # and paging through two at a time gives the same rows in the same order
    url = f"http://testserver/api/v1/{resource}/"
    first = reader.get(f"/api/v1/{resource}/", {"page_size": 2}).json()
    assert first["count"] == 5
    assert first["previous"] is None
    assert first["next"] == f"{url}?page=2&page_size=2"
    second = reader.get(first["next"]).json()
    assert second["previous"] == f"{url}?page_size=2"
    assert second["next"] == f"{url}?page=3&page_size=2"
    third = reader.get(second["next"]).json()
    assert third["next"] is None
    paged = [row[key] for page in (first, second, third) for row in page["results"]]
    assert paged == expected


@pytest.mark.parametrize("resource", RESOURCES)
def test_list_query_count_does_not_grow_with_rows(
    reader, operator, django_assert_num_queries, resource
):
    # given three rows
    build, key, _ = RESOURCES[resource]
    build(operator, 0, 3)

    # when the list is read, then it takes a fixed number of queries (see QUERIES)
    with django_assert_num_queries(QUERIES[resource]):
        response = reader.get(f"/api/v1/{resource}/")
    assert len(result_ids(response, key)) == 3

    # given thirty rows, then the same number of queries
    build(operator, 3, 27)
    with django_assert_num_queries(QUERIES[resource]):
        response = reader.get(f"/api/v1/{resource}/")
    assert len(result_ids(response, key)) == 30


@pytest.mark.parametrize("resource", RESOURCES)
def test_list_read_writes_nothing(reader, operator, resource):
    # given some rows
    build, _, _ = RESOURCES[resource]
    build(operator, 0, 3)
    before = closure_counts()

    # when the list is read
    listed = reader.get(f"/api/v1/{resource}/")

    # then nothing was written
    assert listed.status_code == 200
    assert closure_counts() == before


@pytest.mark.parametrize("resource", RESOURCES)
def test_detail_by_public_id_matches_the_list_row(reader, operator, resource):
    # given three rows
    build, key, _ = RESOURCES[resource]
    created = build(operator, 0, 3)
    rows = {row[key]: row for row in reader.get(f"/api/v1/{resource}/").json()["results"]}

    # when the middle one is read by its public ID
    response = reader.get(f"/api/v1/{resource}/{created[1]}/")

    # then it is that row, as the list shows it (a plan adds its decisions)
    assert response.status_code == 200
    detail = response.json()
    if resource == "retry-plans":
        assert detail.pop("retry_decisions") == []
    assert detail == rows[created[1]]


@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize("missing", ["gordackexechealthalert-ffffffffffffffff", "999999"])
def test_detail_of_unknown_public_id_is_404(reader, operator, resource, missing):
    # given rows that the ID does not name
    RESOURCES[resource][0](operator, 0, 2)

    response = reader.get(f"/api/v1/{resource}/{missing}/")

    assert_problem(response, status=404, code="not_found", title="Not found", detail="Not found.")


def test_evidence_detail_with_non_numeric_sequence_is_404(reader, operator):
    _evidence(operator, 0, 1)

    response = reader.get("/api/v1/evidence/first/")

    assert_problem(response, status=404, code="not_found", title="Not found", detail="Not found.")


def test_retry_plan_detail_lists_its_decisions(reader, operator, report, offline_webhook):
    # given a plan with two decisions
    alert = make_alert(report=report, actor=operator)
    retry = make_delivery(alert=alert, connector=offline_webhook)
    other = make_connector("other-webhook", "https://hooks.example.invalid/other")
    wait = make_delivery(alert=alert, connector=other)
    plan = make_retry_plan(actor=operator, alert_level="critical")
    make_decision(plan=plan, delivery=retry, action="retry")
    make_decision(plan=plan, delivery=wait, action="wait")

    # when the plan is read by its ID
    response = reader.get(f"/api/v1/retry-plans/{plan.retry_plan_id}/")

    # then its decisions come with it, in decision order
    assert response.status_code == 200
    decisions = response.json()["retry_decisions"]
    assert [(d["delivery_id"], d["action"], d["status"]) for d in decisions] == [
        (retry.delivery_id, "retry", "pending"),
        (wait.delivery_id, "wait", "pending"),
    ]
    assert {d["retry_plan_id"] for d in decisions} == {plan.retry_plan_id}
    assert {d["health_id"] for d in decisions} == {report.health_id}


# -- the alert history (GET A) ----------------------------------------------------------------


def test_alert_history_is_the_alert_list(reader, operator, django_assert_num_queries):
    # given three alerts
    created = _alerts(operator, 0, 3)

    # when the history is read, then it is the alert list, newest first, in 6 queries
    # (see QUERIES: session, user, permissions, count, page, deliveries)
    with django_assert_num_queries(6):
        response = reader.get(A)
    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (3, None, None)
    assert [row["alert_id"] for row in body["results"]] == list(reversed(created))
    assert body["results"] == reader.get("/api/v1/alerts/").json()["results"]

    # and with thirty alerts it still takes 6 queries
    _alerts(operator, 3, 27)
    with django_assert_num_queries(6):
        response = reader.get(A, {"page_size": 10})
    body = response.json()
    assert body["count"] == 30
    assert len(body["results"]) == 10
    assert body["next"] == f"http://testserver{A}?page=2&page_size=10"


def test_alert_history_filters_by_health_id_and_provider(reader, operator):
    # given alerts of two reports, to two connectors
    first = make_health_report(actor=operator, generated_at=LONG_AGO)
    second = make_health_report(actor=operator, generated_at=LONG_AGO)
    slack = make_connector("slack-exec", "https://hooks.example.invalid/slack")
    teams = make_connector("teams-exec", "https://hooks.example.invalid/teams")
    a1 = make_alert(report=first, actor=operator, created_at=at(0))
    make_delivery(alert=a1, connector=slack)
    make_delivery(alert=a1, connector=teams)
    a2 = make_alert(report=first, actor=operator, created_at=at(2))
    make_delivery(alert=a2, connector=teams)
    a3 = make_alert(report=second, actor=operator, created_at=at(4))
    make_delivery(alert=a3, connector=slack)

    def history(**params):
        return result_ids(reader.get(A, params), "alert_id")

    # then each filter returns exactly its alerts, each alert once
    assert history() == [a3.alert_id, a2.alert_id, a1.alert_id]
    assert history(health_id=first.health_id) == [a2.alert_id, a1.alert_id]
    assert history(provider="slack-exec") == [a3.alert_id, a1.alert_id]
    assert history(provider="teams-exec") == [a2.alert_id, a1.alert_id]
    assert history(health_id=first.health_id, provider="slack-exec") == [a1.alert_id]
    assert history(created_after=iso(at(2))) == [a3.alert_id, a2.alert_id]
    assert history(created_before=iso(at(2))) == [a1.alert_id]
    assert history(provider="nobody") == []


# -- filters, one resource at a time ----------------------------------------------------------


def test_delivery_events_filters(reader, operator):
    # given four upstream events
    make_event(
        actor=operator,
        kind="report_delivery",
        status="failed",
        provider="slack-exec",
        run_id="drill-1",
        occurred_at=at(0),
        event_id="e1",
    )
    e2 = make_event(
        actor=operator,
        kind="report_delivery",
        status="delivered",
        provider="teams-exec",
        run_id="drill-1",
        occurred_at=at(2),
        event_id="e2",
    )
    e3 = make_event(
        actor=operator,
        kind="retry_worker_run",
        status="succeeded",
        occurred_at=at(4),
        event_id="e3",
    )
    make_event(
        actor=operator,
        kind="retry_execution",
        status="failed",
        provider="slack-exec",
        run_id="drill-2",
        occurred_at=at(6),
        event_id="e4",
    )

    def events(**params):
        return result_ids(reader.get("/api/v1/delivery-events/", params), "event_id")

    # then each filter returns exactly its rows
    assert events() == ["e4", "e3", "e2", "e1"]
    assert events(kind="report_delivery") == ["e2", "e1"]
    assert events(status="failed") == ["e4", "e1"]
    assert events(provider="slack-exec") == ["e4", "e1"]
    assert events(run_id="drill-1") == ["e2", "e1"]
    assert events(kind="report_delivery", status="failed") == ["e1"]
    assert events(occurred_after=iso(e2.occurred_at)) == ["e4", "e3", "e2"]
    assert events(occurred_before=iso(e3.occurred_at)) == ["e2", "e1"]
    assert events(occurred_after=iso(at(2)), occurred_before=iso(at(6))) == ["e3", "e2"]
    assert events(provider="nobody") == []


def test_health_reports_filters(reader, operator):
    critical = make_health_report(actor=operator, alert_level="critical", generated_at=at(0))
    warning = make_health_report(actor=operator, alert_level="warning", generated_at=at(2))
    healthy = make_health_report(actor=operator, alert_level="healthy", generated_at=at(4))

    def reports(**params):
        return result_ids(reader.get("/api/v1/health-reports/", params), "health_id")

    assert reports() == [healthy.health_id, warning.health_id, critical.health_id]
    assert reports(alert_level="warning") == [warning.health_id]
    assert reports(alert_level="critical") == [critical.health_id]
    assert reports(generated_after=iso(at(2))) == [healthy.health_id, warning.health_id]
    assert reports(generated_before=iso(at(2))) == [critical.health_id]


def test_connectors_filters(reader):
    make_connector("a-webhook", "https://hooks.example.invalid/a")
    make_connector("b-slack", "https://hooks.example.invalid/b", kind="slack")
    make_connector("c-webhook", "https://hooks.example.invalid/c", enabled=False)

    def connectors(**params):
        return result_ids(reader.get("/api/v1/connectors/", params), "name")

    assert connectors() == ["a-webhook", "b-slack", "c-webhook"]
    assert connectors(kind="webhook") == ["a-webhook", "c-webhook"]
    assert connectors(kind="slack") == ["b-slack"]
    assert connectors(enabled="false") == ["c-webhook"]
    assert connectors(enabled="true", kind="webhook") == ["a-webhook"]


def test_alerts_filters(reader, operator):
    first = make_health_report(actor=operator, generated_at=LONG_AGO)
    second = make_health_report(actor=operator, generated_at=LONG_AGO)
    slack = make_connector("slack-exec", "https://hooks.example.invalid/slack")
    a1 = make_alert(report=first, actor=operator, created_at=at(0))
    make_delivery(alert=a1, connector=slack)
    a2 = make_alert(report=second, actor=operator, created_at=at(2), forced=True)

    def alerts(**params):
        return result_ids(reader.get("/api/v1/alerts/", params), "alert_id")

    assert alerts() == [a2.alert_id, a1.alert_id]
    assert alerts(health_id=second.health_id) == [a2.alert_id]
    assert alerts(provider="slack-exec") == [a1.alert_id]
    assert alerts(forced="true") == [a2.alert_id]
    assert alerts(forced="false") == [a1.alert_id]
    assert alerts(created_after=iso(at(2))) == [a2.alert_id]
    assert alerts(created_before=iso(at(2))) == [a1.alert_id]


def test_deliveries_filters(reader, operator):
    first = make_health_report(actor=operator, generated_at=LONG_AGO)
    second = make_health_report(actor=operator, generated_at=LONG_AGO)
    slack = make_connector("slack-exec", "https://hooks.example.invalid/slack")
    teams = make_connector("teams-exec", "https://hooks.example.invalid/teams")
    alert1 = make_alert(report=first, actor=operator, created_at=LONG_AGO)
    alert2 = make_alert(report=second, actor=operator, created_at=LONG_AGO)
    d1 = make_delivery(alert=alert1, connector=slack, status="failed", created_at=at(0))
    d2 = make_delivery(alert=alert1, connector=teams, status="delivered", created_at=at(2))
    d3 = make_delivery(alert=alert2, connector=slack, status="exhausted", created_at=at(4))

    def deliveries(**params):
        return result_ids(reader.get("/api/v1/deliveries/", params), "delivery_id")

    assert deliveries() == [d3.delivery_id, d2.delivery_id, d1.delivery_id]
    assert deliveries(status="failed") == [d1.delivery_id]
    assert deliveries(status="exhausted") == [d3.delivery_id]
    assert deliveries(provider="slack-exec") == [d3.delivery_id, d1.delivery_id]
    assert deliveries(health_id=first.health_id) == [d2.delivery_id, d1.delivery_id]
    assert deliveries(alert_id=alert2.alert_id) == [d3.delivery_id]
    assert deliveries(created_after=iso(at(2))) == [d3.delivery_id, d2.delivery_id]
    assert deliveries(created_before=iso(at(2))) == [d1.delivery_id]
    assert deliveries(status="failed", provider="teams-exec") == []


def test_acknowledgements_filters(reader, operator):
    first = make_health_report(actor=operator, generated_at=LONG_AGO)
    second = make_health_report(actor=operator, generated_at=LONG_AGO)
    slack = make_connector("slack-exec", "https://hooks.example.invalid/slack")
    teams = make_connector("teams-exec", "https://hooks.example.invalid/teams")
    alert1 = make_alert(report=first, actor=operator, created_at=LONG_AGO)
    alert2 = make_alert(report=second, actor=operator, created_at=LONG_AGO)
    k1 = make_acknowledgement(alert=alert1, connector=slack, actor=operator, at=at(0))
    k2 = make_acknowledgement(
        alert=alert1, connector=teams, actor=operator, state="escalated", at=at(2)
    )
    k3 = make_acknowledgement(
        alert=alert2, connector=slack, actor=operator, state="resolved", at=at(4)
    )

    def acks(**params):
        return result_ids(reader.get("/api/v1/acknowledgements/", params), "ack_id")

    assert acks() == [k3.ack_id, k2.ack_id, k1.ack_id]
    assert acks(acknowledgement_state="escalated") == [k2.ack_id]
    assert acks(provider="slack-exec") == [k3.ack_id, k1.ack_id]
    assert acks(health_id=first.health_id) == [k2.ack_id, k1.ack_id]
    assert acks(acknowledged_after=iso(at(2))) == [k3.ack_id, k2.ack_id]
    assert acks(acknowledged_before=iso(at(2))) == [k1.ack_id]


def test_retry_plans_filters(reader, operator, report, offline_webhook):
    # given three plans; the second has two `retry` decisions, the third one `wait`
    alert = make_alert(report=report, actor=operator)
    d1 = make_delivery(alert=alert, connector=offline_webhook)
    d2 = make_delivery(
        alert=alert, connector=make_connector("other-webhook", "https://hooks.example.invalid/o")
    )
    quiet = make_retry_plan(actor=operator, alert_level="healthy", generated_at=at(0))
    retrying = make_retry_plan(actor=operator, alert_level="critical", generated_at=at(2))
    make_decision(plan=retrying, delivery=d1, action="retry", status="superseded")
    make_decision(plan=retrying, delivery=d2, action="retry", status="superseded")
    waiting = make_retry_plan(actor=operator, alert_level="warning", generated_at=at(4))
    make_decision(plan=waiting, delivery=d1, action="wait")

    def plans(**params):
        return result_ids(reader.get("/api/v1/retry-plans/", params), "retry_plan_id")

    assert plans() == [waiting.retry_plan_id, retrying.retry_plan_id, quiet.retry_plan_id]
    assert plans(alert_level="critical") == [retrying.retry_plan_id]
    # a plan with two matching decisions is listed once, and counted once
    assert plans(action="retry") == [retrying.retry_plan_id]
    assert reader.get("/api/v1/retry-plans/", {"action": "retry"}).json()["count"] == 1
    assert plans(action="wait") == [waiting.retry_plan_id]
    assert plans(action="suppress") == []
    assert plans(generated_after=iso(at(2))) == [waiting.retry_plan_id, retrying.retry_plan_id]
    assert plans(generated_before=iso(at(2))) == [quiet.retry_plan_id]


def test_worker_runs_filters(reader, operator):
    dry = make_worker_run(actor=operator, dry_run=True, status="succeeded", started_at=at(0))
    live = make_worker_run(actor=operator, dry_run=False, status="partial", started_at=at(2))
    idle = make_worker_run(actor=operator, dry_run=False, status="no_work", started_at=at(4))

    def runs(**params):
        return result_ids(reader.get("/api/v1/worker-runs/", params), "run_id")

    assert runs() == [idle.run_id, live.run_id, dry.run_id]
    assert runs(status="partial") == [live.run_id]
    assert runs(dry_run="true") == [dry.run_id]
    assert runs(dry_run="false") == [idle.run_id, live.run_id]
    assert runs(started_after=iso(at(2))) == [idle.run_id, live.run_id]
    assert runs(started_before=iso(at(2))) == [dry.run_id]


def test_execution_records_filters(reader, operator):
    first = make_health_report(actor=operator, generated_at=LONG_AGO)
    second = make_health_report(actor=operator, generated_at=LONG_AGO)
    slack = make_connector("slack-exec", "https://hooks.example.invalid/slack")
    teams = make_connector("teams-exec", "https://hooks.example.invalid/teams")
    d1 = make_delivery(
        alert=make_alert(report=first, actor=operator), connector=slack, attempt_count=2
    )
    d2 = make_delivery(alert=make_alert(report=second, actor=operator), connector=teams)
    run = make_worker_run(actor=operator, dry_run=False, status="partial", started_at=at(2))
    x1 = make_execution(delivery=d1, actor=operator, executed_at=at(0))
    x2 = make_execution(
        delivery=d1,
        actor=operator,
        execution_status="delivered",
        attempt_number=2,
        trigger="retry",
        executed_at=at(2),
        worker_run=run,
    )
    x3 = make_execution(
        delivery=d2,
        actor=operator,
        executed_at=at(4),
        trigger="manual",
        error_class="timeout",
        http_status=None,
    )

    def records(**params):
        return result_ids(reader.get("/api/v1/execution-records/", params), "execution_id")

    assert records() == [x3.execution_id, x2.execution_id, x1.execution_id]
    assert records(execution_status="delivered") == [x2.execution_id]
    assert records(execution_status="failed") == [x3.execution_id, x1.execution_id]
    assert records(trigger="manual") == [x3.execution_id]
    assert records(provider="slack-exec") == [x2.execution_id, x1.execution_id]
    assert records(health_id=second.health_id) == [x3.execution_id]
    assert records(delivery_id=d1.delivery_id) == [x2.execution_id, x1.execution_id]
    assert records(worker_run_id=run.run_id) == [x2.execution_id]
    assert records(error_class="timeout") == [x3.execution_id]
    assert records(error_class="http_5xx") == [x1.execution_id]
    assert records(executed_after=iso(at(2))) == [x3.execution_id, x2.execution_id]
    assert records(executed_before=iso(at(2))) == [x1.execution_id]


def test_evidence_filters(reader):
    s1 = make_evidence(
        kind=MetadataKind.HEALTH, session_id="h-1", signer="olivia", now=at(0), health_id="h-1"
    )
    s2 = make_evidence(
        kind=MetadataKind.WORKER_RUN,
        session_id="run-1",
        signer="olivia",
        now=at(2),
        provider="slack-exec",
        dry_run=True,
    )
    s3 = make_evidence(
        kind=MetadataKind.EXECUTION_RECORD,
        session_id="x-1",
        signer="paula",
        now=at(4),
        health_id="h-1",
        provider="slack-exec",
        execution_status="delivered",
        dry_run=False,
    )

    def evidence(**params):
        return result_ids(reader.get("/api/v1/evidence/", params), "sequence")

    assert evidence() == [s3.sequence, s2.sequence, s1.sequence]
    assert evidence(metadata_kind=MetadataKind.WORKER_RUN.value) == [s2.sequence]
    assert evidence(session_id="x-1") == [s3.sequence]
    assert evidence(health_id="h-1") == [s3.sequence, s1.sequence]
    assert evidence(provider="slack-exec") == [s3.sequence, s2.sequence]
    assert evidence(execution_status="delivered") == [s3.sequence]
    assert evidence(dry_run="true") == [s2.sequence]
    assert evidence(dry_run="false") == [s3.sequence]
    assert evidence(signer="paula") == [s3.sequence]
    assert evidence(created_after=iso(at(2))) == [s3.sequence, s2.sequence]
    assert evidence(created_before=iso(at(2))) == [s1.sequence]
    assert evidence(sequence_from=s2.sequence) == [s3.sequence, s2.sequence]
    assert evidence(sequence_to=s2.sequence) == [s2.sequence, s1.sequence]


CHOICE = "Select a valid choice. {} is not one of the available choices."
DATETIME = "Enter a valid date/time."


@pytest.mark.parametrize(
    ("resource", "params", "errors"),
    [
        ("delivery-events", {"kind": "sent"}, {"kind": [CHOICE.format("sent")]}),
        ("delivery-events", {"occurred_after": "yesterday"}, {"occurred_after": [DATETIME]}),
        ("health-reports", {"alert_level": "red"}, {"alert_level": [CHOICE.format("red")]}),
        ("connectors", {"kind": "fax"}, {"kind": [CHOICE.format("fax")]}),
        ("alerts", {"created_before": "soon"}, {"created_before": [DATETIME]}),
        ("deliveries", {"status": "lost"}, {"status": [CHOICE.format("lost")]}),
        (
            "acknowledgements",
            {"acknowledgement_state": "seen"},
            {"acknowledgement_state": [CHOICE.format("seen")]},
        ),
        ("retry-plans", {"action": "maybe"}, {"action": [CHOICE.format("maybe")]}),
        ("worker-runs", {"status": "done"}, {"status": [CHOICE.format("done")]}),
        ("execution-records", {"trigger": "cron"}, {"trigger": [CHOICE.format("cron")]}),
        ("evidence", {"sequence_from": "one"}, {"sequence_from": ["Enter a number."]}),
        ("alert-history", {"created_after": "later"}, {"created_after": [DATETIME]}),
    ],
)
def test_list_invalid_filter_value_is_400(reader, resource, params, errors):
    # when a filter value is not one the filter accepts
    response = reader.get(list_url(resource), params)

    # then a validation problem naming the filter, not a silently unfiltered list
    assert_invalid(response, errors)


# -- connectors show public fields only -------------------------------------------------------


def test_connectors_list_and_detail_never_show_private_configuration(reader, operator):
    # given a connector with a secret URL, token and signing key (each unique)
    secret_url = "https://hooks.slack.example/services/T0SECRET/B0SECRET/xyzzy-9f4e1c"
    token = "tok-unique-51d0c6a2"  # noqa: S105
    signing_key = "whsec_c2lnbmluZy1rZXktdW5pcXVl"
    connector = make_connector(
        "exec-slack", secret_url, kind="slack", token=token, signing_secret=signing_key
    )
    secrets = [secret_url, "T0SECRET", "xyzzy-9f4e1c", token, signing_key]

    # when the list, the detail and a filtered list are read
    responses = [
        reader.get("/api/v1/connectors/"),
        reader.get("/api/v1/connectors/exec-slack/"),
        reader.get("/api/v1/connectors/", {"kind": "slack"}),
    ]

    # then only public fields are shown, and no secret appears anywhere in the text
    for response in responses:
        assert response.status_code == 200
        text = response.content.decode()
        for secret in secrets:
            assert secret not in text
    assert responses[1].json() == {
        "name": "exec-slack",
        "kind": "slack",
        "enabled": True,
        "description": "",
        "accepted_counts_as_delivered": False,
        "config_set": True,
        "config_fingerprint": connector.config_fingerprint,
        "config_changed_at": iso(connector.config_changed_at).replace("+00:00", "Z"),
        "config_fields": {
            key: {
                "fingerprint": field_fingerprint(key, value),
                "changed_at": isoformat(connector.config_changed_at),
            }
            for key, value in {
                "url": secret_url,
                "token": token,
                "signing_secret": signing_key,
            }.items()
        },
        "created_at": iso(connector.created_at),
    }
    assert len(connector.config_fingerprint) == 12
    assert connector.config_fingerprint not in secret_url


# -- evidence integrity -----------------------------------------------------------------------


def test_evidence_verify_of_empty_ledger(reader):
    response = reader.get("/api/v1/evidence/verify/")

    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "count": 0,
        "head": GENESIS_HASH,
        "first_broken_sequence": None,
        "problem": None,
        "checkpoint": None,
    }


def test_evidence_verify_returns_ok_count_and_head(reader, operator):
    # given three evidence rows
    _evidence(operator, 0, 3)
    head = Evidence.objects.order_by("-sequence").first()
    before = closure_counts()

    # when the chain is verified
    response = reader.get("/api/v1/evidence/verify/")

    # then it is intact, with the newest row's chain hash as head; nothing was written
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "count": 3,
        "head": head.chain_hash,
        "first_broken_sequence": None,
        "problem": None,
        "checkpoint": None,
    }
    assert head.sequence == 3
    assert closure_counts() == before


def test_evidence_verify_reports_the_first_broken_sequence(reader, operator):
    # given two good rows and a third whose chain hash was forged
    _evidence(operator, 0, 2)
    second = Evidence.objects.get(sequence=2)
    Evidence.objects.create(
        sequence=3,
        metadata_kind=MetadataKind.HEALTH,
        session_id="forged",
        created_at=at(9),
        signer="mallory",
        payload={"forged": True},
        payload_sha256="0" * 64,
        previous_hash=second.chain_hash,
        chain_hash="f" * 64,
    )

    # when the chain is verified
    response = reader.get("/api/v1/evidence/verify/")

    # then the forged row is named, and the head is the last good row
    assert response.status_code == 200
    assert response.json() == {
        "ok": False,
        "count": 2,
        "head": second.chain_hash,
        "first_broken_sequence": 3,
        "problem": "payload does not match payload_sha256",
        "checkpoint": None,
    }
