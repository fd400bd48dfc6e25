"""What the console's pages show: the API's filters, pagination, the server-drawn charts, the
evidence's integrity, the flow's steps and the closure's risks with their records and actions."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.contrib.auth.models import Group

from closure.choices import MetadataKind
from closure.console.reporting import row_integrity
from closure.console.selectors import attempts_over_time, attempts_per_delivery
from closure.models import AlertDelivery, Evidence, ExecutionRecord
from closure.roles import ROLE_PERMISSIONS
from tests.conftest import client_for
from tests.factories import (
    make_alert,
    make_connector,
    make_delivery,
    make_evidence,
    make_execution,
    make_health_report,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 26, 12, 30, tzinfo=UTC)


@pytest.fixture
def attempts(operator):
    """Two deliveries: exec-webhook failed twice then delivered, pager failed once."""
    report = make_health_report(actor=operator, generated_at=NOW - timedelta(hours=3))
    alert = make_alert(report=report, actor=operator, created_at=NOW - timedelta(hours=3))
    hook = make_connector("exec-webhook", "https://hooks.example.invalid/a")
    pager = make_connector("pager", "https://hooks.example.invalid/b")
    first = make_delivery(
        alert=alert, connector=hook, status="delivered", attempt_count=3, created_at=NOW
    )
    second = make_delivery(alert=alert, connector=pager, created_at=NOW)
    for number, (status, hours_ago) in enumerate(
        [("failed", 3), ("failed", 2), ("delivered", 0)], start=1
    ):
        make_execution(
            delivery=first,
            actor=operator,
            execution_status=status,
            attempt_number=number,
            executed_at=NOW - timedelta(hours=hours_ago, minutes=-5),
        )
    make_execution(delivery=second, actor=operator, executed_at=NOW - timedelta(hours=2))
    return first, second


def test_console_list_filters_with_the_api_filterset(operator, attempts):
    client = client_for(operator)

    failed = client.get("/console/executions/", {"execution_status": "failed"})
    pager = client.get("/console/deliveries/", {"provider": "pager"})

    assert sorted(e.execution_status for e in failed.context["page"].object_list) == [
        "failed",
        "failed",
        "failed",
    ]
    assert [d.provider for d in pager.context["page"].object_list] == ["pager"]
    assert "3 records match the filters" in failed.content.decode()
    # the filter's labels are the API's query parameters
    assert '<label for="id_execution_status">Execution status</label>' in failed.content.decode()


def test_console_list_shows_an_invalid_filter_next_to_it_and_no_rows(operator, attempts):
    client = client_for(operator)

    response = client.get("/console/executions/", {"execution_status": "lost"})

    assert response.status_code == 200
    assert list(response.context["page"].object_list) == []
    assert response.context["filterset"].errors == {
        "execution_status": ["Select a valid choice. lost is not one of the available choices."]
    }
    assert "No execution record matches the filters." in response.content.decode()


def test_console_list_paginates_and_keeps_the_filters_in_its_links(operator, offline_webhook):
    report = make_health_report(actor=operator)
    for _ in range(27):
        make_delivery(alert=make_alert(report=report, actor=operator), connector=offline_webhook)
    client = client_for(operator)

    first = client.get("/console/deliveries/", {"status": "failed"})
    second = client.get("/console/deliveries/", {"status": "failed", "page": "2"})

    assert len(first.context["page"].object_list) == 25
    assert len(second.context["page"].object_list) == 2
    assert 'href="?status=failed&amp;page=2" rel="next"' in first.content.decode()
    assert "27 deliveries match the filters · page 2 of 2" in second.content.decode()


# -- charts -------------------------------------------------------------------------------------


def test_attempts_over_time_counts_each_hour_by_outcome(attempts):
    buckets = attempts_over_time(ExecutionRecord.objects.all(), span="24h", now=NOW)

    assert len(buckets) == 24
    assert buckets[-1].start == datetime(2026, 11, 26, 12, tzinfo=UTC)
    by_hour = {b.start.hour: (b.delivered, b.failed, b.other) for b in buckets if b.total}
    assert by_hour == {9: (0, 1, 0), 10: (0, 2, 0), 12: (1, 0, 0)}


def test_attempts_per_delivery_caps_the_last_bar(operator, offline_webhook):
    report = make_health_report(actor=operator)
    for count in (0, 1, 1, 3, 6, 9):
        alert = make_alert(report=report, actor=operator)
        make_delivery(alert=alert, connector=offline_webhook, attempt_count=count)

    histogram = attempts_per_delivery(AlertDelivery.objects.all())

    assert histogram == [
        ("0", 1),
        ("1", 2),
        ("2", 0),
        ("3", 1),
        ("4", 0),
        ("5", 0),
        ("6+", 2),
    ]


def test_deliveries_page_draws_both_charts_as_inline_svg_without_inline_style(operator, attempts):
    client = client_for(operator)

    with time_machine.travel(NOW, tick=False):
        response = client.get("/console/deliveries/")

    page = response.content.decode()
    assert page.count('<svg class="chart-svg"') == 2
    assert page.count('<rect class="bar bar-failed"') == 2  # the 09:00 and 10:00 hours
    assert page.count('<rect class="bar bar-delivered"') == 1
    assert page.count('<rect class="bar bar-count"') == 2  # deliveries with 1 and 3 attempts
    assert "<title>10:00: 2 failed</title>" in page
    assert "style=" not in page
    assert "<script>" not in page
    assert "cdn" not in page.lower()
    # and the exact numbers are also a table
    assert '<th scope="row">3 attempts</th><td>1</td>' in page


def test_chart_follows_the_filters_and_the_period(operator, attempts):
    client = client_for(operator)

    with time_machine.travel(NOW, tick=False):
        pager = client.get("/console/deliveries/", {"provider": "pager", "span": "14d"})

    timeline = pager.context["timeline"]
    assert len(timeline.table_rows) == 14
    assert timeline.table_rows[-1] == ["Nov 26", 0, 1, 0]
    assert 'href="?provider=pager&amp;span=24h"' in pager.content.decode()


# -- evidence integrity -------------------------------------------------------------------------


def test_evidence_rows_are_recomputed_and_a_changed_payload_is_flagged(operator, report):
    first = make_evidence(kind=MetadataKind.HEALTH, session_id=report.health_id, signer="olivia")
    second = make_evidence(kind=MetadataKind.HEALTH, session_id=report.health_id, signer="olivia")
    client = client_for(operator)

    page = client.get("/console/evidence/").content.decode()
    detail = client.get(f"/console/evidence/{second.sequence}/").content.decode()
    # a row whose payload no longer matches its hash (as read, not as stored: the ledger
    # refuses to change a stored row)
    second.payload = {**second.payload, "signer": "mallory"}
    [(_, intact), (_, altered)] = row_integrity([first, second])

    assert page.count('<span class="badge badge-ok"') == 2
    assert "is the chain hash of #1" in detail
    assert (intact.ok, intact.link_ok) == (True, None)
    assert (altered.payload_ok, altered.chain_ok, altered.link_ok, altered.ok) == (
        False,
        True,
        True,
        False,
    )


def test_evidence_verify_page_recomputes_the_chain(operator, report):
    for _ in range(3):
        make_evidence(kind=MetadataKind.HEALTH, session_id=report.health_id, signer="olivia")
    client = client_for(operator)

    response = client.get("/console/evidence/verify/")

    assert response.context["verification"]["ok"] is True
    assert response.context["verification"]["count"] == Evidence.objects.count() == 3
    assert '<span class="badge badge-ok">intact</span>' in response.content.decode()


# -- the flow and the closure -------------------------------------------------------------------


def test_flow_page_shows_each_steps_state_and_action(operator, failed_delivery):
    client = client_for(operator)

    response = client.get("/console/")

    assert response.context["statuses"] == {
        "health": "done",
        "alert": "done",
        "plan": "attention",
        "worker": "waiting",
        "closure": "attention",
    }
    page = response.content.decode()
    assert "Deliveries: <strong>0</strong> delivered, <strong>1</strong> failed" in page
    assert "<strong>0</strong> retry due now" in page
    assert "The worker has not run yet." in page
    assert "executive_retry_health_alert_delivery_failed</code> × 1" in page


def test_flow_page_shows_the_flow_diagram_from_the_docs(operator, failed_delivery):
    from django.contrib.staticfiles import finders

    page = client_for(operator).get("/console/").content.decode()

    assert '<img src="/static/diagrams/closure-flow.svg" width="1180" height="560"' in page
    source = Path(__file__).resolve().parent.parent / "docs" / "diagrams" / "closure-flow.svg"
    assert Path(finders.find("diagrams/closure-flow.svg")) == source


def test_flow_page_tells_an_auditor_which_role_acts(auditor, failed_delivery):
    page = client_for(auditor).get("/console/").content.decode()

    assert "Building health needs the operators' role." in page
    assert "Planning needs the plan_retry permission." in page
    assert "Live runs need the execute_retry permission." in page
    assert page.count('method="post"') == 1  # sign-out, the only form an auditor gets


def test_closure_page_links_the_records_that_keep_each_risk_open(operator, failed_delivery):
    client = client_for(operator)

    response = client.get("/console/closure/")

    [risk] = response.context["risks"]
    assert risk.risk["code"] == "executive_retry_health_alert_delivery_failed"
    assert risk.refs == [
        (failed_delivery.delivery_id, f"/console/deliveries/{failed_delivery.delivery_id}/")
    ]
    assert [(a.label, a.url) for a in risk.actions] == [
        ("Plan retries", "/console/retry-plans/"),
        ("Run the worker", "/console/worker-runs/"),
    ]
    page = response.content.decode()
    assert f'<a class="id" href="/console/deliveries/{failed_delivery.delivery_id}/">' in page
    assert 'id="review-form"' in page


def test_closure_page_offers_the_review_only_to_reviewers(auditor, failed_delivery):
    page = client_for(auditor).get("/console/closure/").content.decode()

    assert 'id="review-form"' not in page
    assert "executive_retry_health_alert_delivery_failed" in page


# -- roles --------------------------------------------------------------------------------------


def test_the_migration_creates_the_three_groups_with_their_permissions(db):
    # given the database as the migrations left it (no fixture re-creates the groups)
    groups = {
        group.name: sorted(group.permissions.values_list("codename", flat=True))
        for group in Group.objects.prefetch_related("permissions")
    }

    # then the three roles exist with exactly their permissions, the custom ones included
    assert groups == {name: sorted(codenames) for name, codenames in ROLE_PERMISSIONS.items()}
    assert {"plan_retry", "execute_retry", "acknowledge_alert", "review_closure"} <= set(
        groups["operators"]
    )
    assert "export_evidence" in groups["auditors"]
    assert "execute_retry" not in groups["auditors"]
    assert {"add_connector", "change_connector"} <= set(groups["platform owners"])


# -- Content-Security-Policy --------------------------------------------------------------------


def test_console_pages_carry_a_strict_csp(operator, failed_delivery):
    response = client_for(operator).get("/console/closure/")

    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe" not in policy


def test_no_template_has_an_inline_script_style_or_event_handler():
    # given every template of the site (the console's, the admin overrides, the error pages)
    root = Path(__file__).resolve().parent.parent / "templates"
    templates = sorted(root.rglob("*.html"))
    assert len(templates) >= 30

    # then none holds a script without src, a style element or attribute, or an on… handler
    offending = {
        str(path.relative_to(root)): found
        for path in templates
        if (found := INLINE.findall(path.read_text(encoding="utf-8")))
    }
    assert offending == {}


INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=", re.IGNORECASE)
