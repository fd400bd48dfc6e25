"""An operator closes the reporting loop by clicking, from sign-in to a recorded review."""

import pytest

from closure.choices import MetadataKind
from closure.demo import DemoReceiver
from closure.models import AlertDelivery, ClosureReview, Evidence, WorkerRun
from closure.roles import OPERATORS
from closure.selectors import closure_dashboard
from tests.e2e.conftest import follow, log_in
from tests.factories import make_connector, make_user


@pytest.fixture
def demo_receiver():
    """The demo's receiver: /flaky fails every first attempt with a 503, /steady accepts."""
    receiver = DemoReceiver(port=0).start()
    yield receiver
    receiver.stop()


def test_operator_clicks_through_the_five_steps_to_a_closed_loop_and_reviews_it(
    roles, open_session, demo_receiver
):
    # given an operator and two webhook connectors, one of which fails first attempts
    make_user("olivia", OPERATORS)
    make_connector("exec-webhook", f"{demo_receiver.url}/flaky")
    make_connector("backup-webhook", f"{demo_receiver.url}/steady")
    session = open_session("operator-flow")
    page = session.page

    # when the operator opens the console, they are asked to sign in first
    page.goto("/console/")
    assert "/console/login/" in page.url
    session.shot("login")
    log_in(session, "/console/", "olivia")
    assert page.url.endswith("/console/")
    assert page.locator(".step h2").all_inner_texts() == [
        "Build health",
        "Send alert",
        "Plan retry",
        "Run the retry worker",
        "Closure",
    ]
    session.shot("flow-empty")

    # step 1: build health (no upstream worker run is known, so it is critical)
    follow(page.locator("#step-health").get_by_role("button", name="Build health"))
    assert page.locator(".message-success").inner_text().startswith("Health report built: critical")
    session.shot("health-report")

    # step 2: send the alert to every connector; the flaky one fails
    follow(page.get_by_role("link", name="Flow"))
    follow(page.locator("#step-alert").get_by_role("button", name="Send alert"))
    assert page.locator(".message-success").inner_text() == (
        "Alert sent to 2 connectors: 1 delivered, 1 failed, 0 suppressed."
    )
    session.shot("alert-sent")

    # step 3: plan an immediate retry
    follow(page.get_by_role("link", name="Flow"))
    session.shot("flow-after-send")
    follow(page.locator("#step-plan").get_by_role("link", name="Plan retry…"))
    page.fill("#id_retry_delay_minutes", "0")
    page.check("#id_allow_immediate_retry")
    session.shot("plan-form")
    follow(page.locator("#plan-form").get_by_role("button", name="Plan retry"))
    assert page.locator(".message-success").inner_text() == (
        "Retry plan made: 1 decision — 1 retry, 0 wait, 0 suppress. Nothing was sent."
    )
    session.shot("plan-detail")

    # step 4: a dry run first, then the live run behind its confirmation
    follow(page.get_by_role("button", name="Dry run"))
    assert page.locator(".message-success").inner_text() == (
        "Dry run: 1 alert would be sent; 0 sent, 0 failed, 0 skipped. Nothing was changed."
    )
    assert not WorkerRun.objects.filter(dry_run=False).exists()
    session.shot("dry-run")
    follow(page.get_by_role("link", name="Execute live…"))
    rows = page.locator(".confirm-table tbody tr")
    assert rows.count() == 1
    assert "exec-webhook" in rows.first.inner_text()
    session.shot("execute-confirmation")
    page.check("#id_confirm")
    follow(page.get_by_role("button", name="Execute live: send 1 alert"))
    assert page.locator(".message-success").inner_text() == (
        "Live run succeeded: 1 sent and delivered, 0 failed, 0 skipped."
    )
    session.shot("live-run")
    assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"delivered"}

    # step 5: the closure dashboard still waits for both acknowledgements
    follow(page.get_by_role("link", name="Flow"))
    follow(page.locator("#step-closure").get_by_role("link", name="Closure dashboard and review…"))
    assert page.locator(".risk code").all_inner_texts() == [
        "executive_retry_health_alert_acknowledgement_outstanding"
    ]
    session.shot("closure-open")
    for provider in ("exec-webhook", "backup-webhook"):
        follow(page.get_by_role("link", name=f"Acknowledge on {provider}"))
        page.fill("#id_external_ref", "INC-42")
        session.shot(f"acknowledge-{provider}")
        follow(page.locator("#ack-form").get_by_role("button", name="Acknowledge"))
        assert page.url.endswith("/console/closure/")
        assert f"acknowledged on {provider}" in page.locator(".message-success").inner_text()
    assert page.locator(".closure-state .badge").inner_text() == "closed"
    session.shot("closure-closed")

    # and the review is recorded
    page.fill("#id_note", "Loop closed after the retry and both acknowledgements.")
    follow(page.get_by_role("button", name="Record review"))
    assert page.locator(".message-success").inner_text() == (
        "Review recorded: Confirm the loop is closed (closure closed, 0 open risks)."
    )
    session.shot("review")

    # the remaining pages, lists and details, for the record
    delivery = AlertDelivery.objects.get(provider="exec-webhook")
    record = delivery.executions.order_by("attempt_number").last()
    for name, path in (
        ("health-reports", "/console/health/"),
        ("alerts", "/console/alerts/"),
        ("deliveries-charts", "/console/deliveries/"),
        ("delivery", f"/console/deliveries/{delivery.delivery_id}/"),
        ("executions", "/console/executions/"),
        ("execution", f"/console/executions/{record.execution_id}/"),
        ("retry-plans", "/console/retry-plans/"),
        ("worker-runs", "/console/worker-runs/"),
        ("acknowledgements", "/console/acknowledgements/"),
        ("reviews", "/console/reviews/"),
        ("evidence", "/console/evidence/"),
        (
            "evidence-row",
            f"/console/evidence/{Evidence.objects.order_by('sequence').last().sequence}/",
        ),
        ("evidence-verify", "/console/evidence/verify/"),
        ("flow-closed", "/console/"),
    ):
        assert page.goto(path).status == 200, path
        assert page.locator(".badge-broken").count() == 0, path
        session.shot(name)

    # then the loop is closed, the review is stored, and the browser saw no error
    assert closure_dashboard()["closure_state"] == "closed"
    review = ClosureReview.objects.get()
    assert (review.decision, review.closure_state) == ("confirm_closed", "closed")
    assert Evidence.objects.filter(metadata_kind=MetadataKind.CLOSURE_REVIEW).count() == 1
    assert session.problems == []


def test_flow_page_fits_a_tablet(roles, open_session):
    # given an operator on a tablet-sized screen
    make_user("olivia", OPERATORS)
    session = open_session("tablet", width=768, height=1024)

    # when they sign in and look at the flow and the closure dashboard
    log_in(session, "/console/", "olivia")
    session.shot("flow")
    width = session.page.evaluate("document.documentElement.scrollWidth")
    session.page.goto("/console/closure/")
    session.shot("closure")

    # then nothing is wider than the screen, and nothing went wrong
    assert width <= 768
    assert session.problems == []
