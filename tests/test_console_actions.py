"""Every console action: a POST form with CSRF that calls the API's service, ends on a page that
says what happened, shows errors next to the field, and refuses a role without the permission.

Connectors are real: a local HTTP receiver (pytest-httpserver) stands in for the webhook.
"""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from closure.choices import MetadataKind
from closure.console.retries import live_selection
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    ClosureReview,
    Evidence,
    ExecutionRecord,
    HealthAlert,
    HealthReport,
    RetryDecision,
    RetryPlan,
    WorkerRun,
)
from closure.selectors import closure_dashboard
from tests.conftest import client_for, closure_counts
from tests.factories import (
    make_alert,
    make_delivery,
    make_execution,
    make_health_report,
    make_worker_run,
)

pytestmark = pytest.mark.django_db

POLICY = {
    "max_retry_attempts": "3",
    "retry_delay_minutes": "15",
    "backoff_multiplier": "2.0",
    "max_delay_minutes": "1440",
}


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def field_errors(response, form: str = "form") -> dict[str, list[str]]:
    return {name: list(errors) for name, errors in response.context[form].errors.items()}


def kinds_written(before: int) -> list[str]:
    """The metadata kinds of the evidence rows written after sequence `before`."""
    return list(
        Evidence.objects.filter(sequence__gt=before)
        .order_by("sequence")
        .values_list("metadata_kind", flat=True)
    )


def last_sequence() -> int:
    return Evidence.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0


# -- sign-in ------------------------------------------------------------------------------------


def test_console_login_signs_in_returns_to_next_and_logout_needs_a_post(operator):
    # given the sign-in page with a page to return to
    client = Client()

    # when the operator mistypes the password, then types it right
    wrong = client.post(
        "/console/login/?next=/console/closure/",
        {"username": "olivia", "password": "nope", "next": "/console/closure/"},
    )
    right = client.post(
        "/console/login/",
        {"username": "olivia", "password": "pw-for-tests-only", "next": "/console/closure/"},
    )

    # then the first is refused on the page, the second lands where they were going
    assert wrong.status_code == 200
    assert wrong.context["form"].non_field_errors() == [
        "Please enter a correct username and password. Note that both fields may be case-sensitive."
    ]
    assert (right.status_code, right["Location"]) == (302, "/console/closure/")
    # and signing out is a POST (a GET is refused and keeps the session)
    assert client.get("/console/logout/").status_code == 405
    assert client.get("/console/").status_code == 200
    out = client.post("/console/logout/")
    assert (out.status_code, out["Location"]) == (302, "/console/login/")
    assert client.get("/console/")["Location"] == "/console/login/?next=/console/"


def test_console_login_ignores_a_next_url_of_another_site(operator):
    client = Client()

    response = client.post(
        "/console/login/",
        {"username": "olivia", "password": "pw-for-tests-only", "next": "https://evil.example/"},
    )

    assert (response.status_code, response["Location"]) == (302, "/console/")


# -- step 1: build health -----------------------------------------------------------------------


def test_console_build_health_stores_a_report_and_says_what_it_found(operator):
    # given no upstream evidence at all
    client = client_for(operator)
    sequence = last_sequence()

    # when the operator builds health with the default parameters
    response = client.post(
        "/console/health/",
        {"expected_interval_minutes": "60", "stale_metadata_minutes": "180"},
        follow=True,
    )

    # then one report is stored (no worker run is known: critical) and its page says so
    report = HealthReport.objects.get()
    assert response.redirect_chain == [(f"/console/health/{report.health_id}/", 302)]
    assert (report.alert_level, report.alert_count, report.generated_by) == (
        "critical",
        2,
        operator,
    )
    assert report.parameters == {"expected_interval_minutes": 60, "stale_metadata_minutes": 180}
    assert messages_of(response) == ["Health report built: critical, 2 findings."]
    assert kinds_written(sequence) == [MetadataKind.HEALTH]


def test_console_build_health_shows_errors_next_to_the_field_and_writes_nothing(operator):
    client = client_for(operator)
    before = closure_counts()

    response = client.post(
        "/console/health/", {"expected_interval_minutes": "0", "stale_metadata_minutes": "x"}
    )

    assert response.status_code == 400
    assert field_errors(response) == {
        "expected_interval_minutes": ["Ensure this value is greater than or equal to 1."],
        "stale_metadata_minutes": ["Enter a whole number."],
    }
    page = response.content.decode()
    assert 'id="id_expected_interval_minutes_errors"' in page
    assert 'id="id_stale_metadata_minutes_errors"' in page
    assert closure_counts() == before


# -- step 2: send the alert ---------------------------------------------------------------------


def test_console_send_alert_to_the_chosen_connector_then_suppresses_a_repeat_unless_forced(
    operator, report, webhook, offline_webhook, receiver
):
    # given two connectors, and a receiver that accepts the alert
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    client = client_for(operator)
    chosen = {"health_id": report.health_id, "providers": ["ops-webhook"]}
    window = {"suppression_window_minutes": "60"}

    # when the operator sends to ops-webhook only
    first = client.post("/console/alerts/", {**chosen, **window}, follow=True)

    # then only ops-webhook was called, and the alert's page counts what happened
    alert = HealthAlert.objects.get()
    assert first.redirect_chain == [(f"/console/alerts/{alert.alert_id}/", 302)]
    assert messages_of(first) == ["Alert sent to 1 connector: 1 delivered, 0 failed, 0 suppressed."]
    assert list(AlertDelivery.objects.values_list("provider", "status")) == [
        ("ops-webhook", "delivered")
    ]
    assert len(receiver.log) == 1

    # when they send again within the suppression window, then with force
    again = client.post("/console/alerts/", {**chosen, **window}, follow=True)
    forced = client.post("/console/alerts/", {**chosen, **window, "force": "on"}, follow=True)

    # then the repeat is suppressed and calls nothing; the forced one is sent
    assert messages_of(again) == [
        "Alert sent to 0 connectors: 0 delivered, 0 failed, "
        "1 suppressed (ops-webhook: recently_alerted)."
    ]
    assert messages_of(forced) == [
        "Alert sent to 1 connector: 1 delivered, 0 failed, 0 suppressed."
    ]
    assert len(receiver.log) == 2
    assert list(HealthAlert.objects.order_by("id").values_list("forced", flat=True)) == [
        False,
        False,
        True,
    ]


def test_console_send_alert_counts_a_failed_delivery(operator, report, webhook, receiver):
    receiver.expect_request("/hook", method="POST").respond_with_data("down", status=500)
    client = client_for(operator)

    response = client.post(
        "/console/alerts/",
        {"health_id": "", "suppression_window_minutes": "60"},
        follow=True,
    )

    assert messages_of(response) == [
        "Alert sent to 1 connector: 0 delivered, 1 failed, 0 suppressed."
    ]
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempt_count) == ("failed", 1)
    assert delivery.executions.get().error_class == "http_5xx"


def test_console_send_alert_refuses_a_healthy_report_without_force(
    operator, closed_loop, webhook, receiver
):
    client = client_for(operator)
    before = closure_counts()

    response = client.post(
        "/console/alerts/",
        {"health_id": closed_loop.health_id, "suppression_window_minutes": "60"},
    )

    assert response.status_code == 400
    assert field_errors(response) == {
        "force": ["Not sent: the health report is healthy. Tick force to send it anyway."]
    }
    assert 'id="id_force_errors"' in response.content.decode()
    assert closure_counts() == before
    assert receiver.log == []


def test_console_send_alert_refuses_an_unknown_report_next_to_its_field(operator, report, webhook):
    client = client_for(operator)
    before = closure_counts()

    response = client.post(
        "/console/alerts/",
        {
            "health_id": "gordackexecdeliveryhealth-0000000000000000",
            "suppression_window_minutes": "-1",
        },
    )

    assert response.status_code == 400
    assert field_errors(response) == {
        "health_id": [
            "Select a valid choice. gordackexecdeliveryhealth-0000000000000000 is not one of "
            "the available choices."
        ],
        "suppression_window_minutes": ["Ensure this value is greater than or equal to 0."],
    }
    assert closure_counts() == before


# -- acknowledgements ---------------------------------------------------------------------------


def test_console_acknowledge_records_state_reference_notes_and_returns_to_next(
    operator, report, failed_delivery
):
    # given a failed delivery to exec-webhook, and the closure dashboard as the page to return to
    client = client_for(operator)
    sequence = last_sequence()

    # when the operator records a resolution there
    response = client.post(
        "/console/acknowledgements/",
        {
            "health_id": report.health_id,
            "provider": "exec-webhook",
            "acknowledgement_state": "resolved",
            "external_ref": "INC-7",
            "notes": "confirmed by phone",
            "next": "/console/closure/",
        },
        follow=True,
    )

    # then the acknowledgement holds what was typed, and the open delivery is closed
    assert response.redirect_chain == [("/console/closure/", 302)]
    ack = Acknowledgement.objects.get()
    assert (ack.state, ack.provider, ack.external_ref, ack.notes, ack.acknowledged_by) == (
        "resolved",
        "exec-webhook",
        "INC-7",
        "confirmed by phone",
        operator,
    )
    assert messages_of(response) == [
        f"Acknowledgement recorded: resolved on exec-webhook for {report.health_id}; "
        "1 open delivery closed."
    ]
    failed_delivery.refresh_from_db()
    assert (failed_delivery.status, failed_delivery.suppression_reason) == (
        "suppressed",
        "acknowledged",
    )
    assert kinds_written(sequence) == [MetadataKind.ALERT_ACK]


def test_console_acknowledge_ignores_a_next_url_of_another_site(operator, report, failed_delivery):
    client = client_for(operator)

    response = client.post(
        "/console/acknowledgements/",
        {
            "health_id": report.health_id,
            "provider": "exec-webhook",
            "acknowledgement_state": "acknowledged",
            "next": "https://evil.example/",
        },
    )

    assert (response.status_code, response["Location"]) == (302, "/console/acknowledgements/")


def test_console_acknowledge_where_no_alert_was_sent_says_why_and_writes_nothing(
    operator, report, failed_delivery, webhook
):
    client = client_for(operator)
    before = closure_counts()

    response = client.post(
        "/console/acknowledgements/",
        {
            "health_id": report.health_id,
            "provider": "ops-webhook",
            "acknowledgement_state": "acknowledged",
        },
    )

    assert response.status_code == 409
    assert field_errors(response) == {
        "__all__": [f"no alert of {report.health_id} was sent to ops-webhook"]
    }
    assert closure_counts() == before


# -- step 3: plan -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "action", "reason", "delivery_status"),
    [
        ({}, "retry", "retry_due", "failed"),
        (
            {"retry_delay_minutes": "120", "max_delay_minutes": "1440"},
            "wait",
            "backoff_pending",
            "failed",
        ),
        ({"max_retry_attempts": "1"}, "suppress", "max_attempts_reached", "exhausted"),
    ],
)
def test_console_plan_retry_applies_the_policy_fields(
    operator, failed_delivery, policy, action, reason, delivery_status
):
    # given a delivery whose one attempt failed an hour ago
    client = client_for(operator)
    sequence = last_sequence()

    # when the operator plans with this policy
    response = client.post("/console/retry-plans/", {**POLICY, **policy}, follow=True)

    # then the plan holds the policy and one decision, and the page counts it
    plan = RetryPlan.objects.get()
    assert response.redirect_chain == [(f"/console/retry-plans/{plan.retry_plan_id}/", 302)]
    expected_policy = {
        "max_retry_attempts": int(policy.get("max_retry_attempts", 3)),
        "retry_delay_minutes": float(policy.get("retry_delay_minutes", 15)),
        "backoff_multiplier": 2.0,
        "allow_immediate_retry": False,
        "max_delay_minutes": 1440.0,
    }
    assert plan.policy == expected_policy
    counts = {"retry": 0, "wait": 0, "suppress": 0, action: 1}
    assert messages_of(response) == [
        f"Retry plan made: 1 decision — {counts['retry']} retry, {counts['wait']} wait, "
        f"{counts['suppress']} suppress. Nothing was sent."
    ]
    decision = RetryDecision.objects.get()
    assert (decision.action, decision.reason, decision.delivery) == (
        action,
        reason,
        failed_delivery,
    )
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == delivery_status
    assert kinds_written(sequence) == [MetadataKind.RETRY_PLAN]


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (
            {"retry_delay_minutes": "0"},
            {"retry_delay_minutes": ["Must be at least 1 unless allow_immediate_retry is true."]},
        ),
        (
            {"retry_delay_minutes": "30", "max_delay_minutes": "10"},
            {"max_delay_minutes": ["Must not be less than retry_delay_minutes."]},
        ),
        (
            {"backoff_multiplier": "0.5", "max_retry_attempts": "0"},
            {
                "max_retry_attempts": ["Ensure this value is greater than or equal to 1."],
                "backoff_multiplier": ["Ensure this value is greater than or equal to 1.0."],
            },
        ),
        (
            {"providers": ["no-such-connector"]},
            {
                "providers": [
                    "Select a valid choice. no-such-connector is not one of the available choices."
                ]
            },
        ),
    ],
)
def test_console_plan_retry_shows_errors_next_to_the_field_and_writes_nothing(
    operator, failed_delivery, fields, errors
):
    client = client_for(operator)
    before = closure_counts()

    response = client.post("/console/retry-plans/", {**POLICY, **fields})

    assert response.status_code == 400
    assert field_errors(response) == errors
    page = response.content.decode()
    for name in errors:
        assert f'id="id_{name}_errors"' in page
    assert closure_counts() == before


# -- step 4: dry run, then the confirmed live run -----------------------------------------------


def test_console_dry_run_calls_no_connector_and_records_only_the_run(operator, due_retry, receiver):
    # given a due retry to the live receiver
    client = client_for(operator)
    executions = ExecutionRecord.objects.count()

    # when the operator dry-runs the plan
    response = client.post(
        "/console/worker-runs/",
        {
            "retry_plan_id": due_retry.retry_plan_id,
            "max_retry_deliveries": "25",
            "timeout_seconds": "10",
        },
        follow=True,
    )

    # then the run is a dry run that says what it would send, and nothing was sent
    run = WorkerRun.objects.get()
    assert response.redirect_chain == [(f"/console/worker-runs/{run.run_id}/", 302)]
    assert (run.dry_run, run.status, run.retry_plan) == (True, "succeeded", due_retry)
    assert messages_of(response) == [
        "Dry run: 1 alert would be sent; 0 sent, 0 failed, 0 skipped. Nothing was changed."
    ]
    assert receiver.log == []
    assert ExecutionRecord.objects.count() == executions
    assert RetryDecision.objects.get().status == "pending"
    assert 'href="/console/worker-runs/' + run.run_id + '/execute/"' in response.content.decode()


def test_console_dry_run_needs_a_plan_from_the_list(operator, due_retry):
    client = client_for(operator)
    before = closure_counts()

    response = client.post(
        "/console/worker-runs/",
        {"retry_plan_id": "", "max_retry_deliveries": "501", "timeout_seconds": "10"},
    )

    assert response.status_code == 400
    assert field_errors(response) == {
        "retry_plan_id": ["This field is required."],
        "max_retry_deliveries": ["Ensure this value is less than or equal to 500."],
    }
    assert closure_counts() == before


@pytest.fixture
def dry_run(operator, due_retry):
    """A dry run of the due retry's plan, the page a live run starts from."""
    return make_worker_run(
        actor=operator,
        retry_plan=due_retry,
        status="succeeded",
        summary={"selected_retry_count": 1},
    )


def test_console_live_confirmation_lists_exactly_what_will_be_sent(operator, dry_run):
    # given a dry run of a plan with one due retry
    client = client_for(operator)
    decision = RetryDecision.objects.select_related("delivery").get()

    # when the operator opens the confirmation
    response = client.get(f"/console/worker-runs/{dry_run.run_id}/execute/")

    # then it names the one delivery, its connector and its attempt, and the button's count
    assert response.status_code == 200
    assert [d.delivery for d in response.context["decisions"]] == [decision.delivery]
    page = response.content.decode()
    assert decision.delivery.delivery_id in page
    assert "<strong>ops-webhook</strong>" in page
    assert "2 of 3" in page
    assert "Execute live: send 1 alert</button>" in page
    assert response.context["form"].initial["selection_sha256"] == live_selection(dry_run)[2]


def test_console_live_run_needs_the_tick_and_sends_nothing_without_it(operator, dry_run, receiver):
    client = client_for(operator)
    before = closure_counts()
    digest = live_selection(dry_run)[2]

    response = client.post(
        f"/console/worker-runs/{dry_run.run_id}/execute/", {"selection_sha256": digest}
    )

    assert response.status_code == 400
    assert field_errors(response) == {"confirm": ["This field is required."]}
    assert 'id="id_confirm_errors"' in response.content.decode()
    assert receiver.log == []
    assert closure_counts() == before


def test_console_live_run_refuses_a_list_that_changed_since_it_was_shown(
    operator, dry_run, receiver
):
    client = client_for(operator)
    before = closure_counts()

    response = client.post(
        f"/console/worker-runs/{dry_run.run_id}/execute/",
        {"confirm": "on", "selection_sha256": "0" * 64},
    )

    assert response.status_code == 409
    assert response.context["selection_changed"] is True
    assert "The list changed since it was shown" in response.content.decode()
    assert receiver.log == []
    assert closure_counts() == before


@pytest.mark.parametrize(
    ("status", "message", "run_status", "delivery_status"),
    [
        (
            200,
            "Live run succeeded: 1 sent and delivered, 0 failed, 0 skipped.",
            "succeeded",
            "delivered",
        ),
        (500, "Live run failed: 0 sent and delivered, 1 failed, 0 skipped.", "failed", "failed"),
    ],
)
def test_console_live_run_sends_the_confirmed_list_and_says_what_happened(
    operator, dry_run, receiver, status, message, run_status, delivery_status
):
    # given the confirmation of a dry run and a receiver answering `status`
    receiver.expect_request("/hook", method="POST").respond_with_data("x", status=status)
    client = client_for(operator)
    digest = live_selection(dry_run)[2]
    sequence = last_sequence()

    # when the operator ticks the box and confirms
    response = client.post(
        f"/console/worker-runs/{dry_run.run_id}/execute/",
        {"confirm": "on", "selection_sha256": digest},
        follow=True,
    )

    # then exactly one call went out, recorded as one attempt of a live run
    live = WorkerRun.objects.get(dry_run=False)
    assert response.redirect_chain == [(f"/console/worker-runs/{live.run_id}/", 302)]
    assert messages_of(response) == [message]
    assert len(receiver.log) == 1
    assert (live.status, live.started_by) == (run_status, operator)
    record = ExecutionRecord.objects.get(worker_run=live)
    assert (record.trigger, record.attempt_number, record.http_status) == ("retry", 2, status)
    assert AlertDelivery.objects.get().status == delivery_status
    assert MetadataKind.WORKER_RUN in kinds_written(sequence)


def test_console_live_run_starts_only_from_a_dry_run(operator, due_retry):
    live = make_worker_run(actor=operator, dry_run=False, retry_plan=due_retry, status="succeeded")
    client = client_for(operator)
    before = closure_counts()

    response = client.post(
        f"/console/worker-runs/{live.run_id}/execute/", {"confirm": "on"}, follow=True
    )

    assert response.redirect_chain == [(f"/console/worker-runs/{live.run_id}/", 302)]
    assert messages_of(response) == ["A live run starts from a dry run of a stored retry plan."]
    assert closure_counts() == before


# -- deliveries: waive, retry now ---------------------------------------------------------------


def test_console_waive_closes_a_failed_delivery_with_its_reason(operator, failed_delivery):
    client = client_for(operator)
    sequence = last_sequence()
    url = f"/console/deliveries/{failed_delivery.delivery_id}/waive/"

    response = client.post(url, {"reason": "recipient confirmed by phone"}, follow=True)

    assert response.redirect_chain == [(f"/console/deliveries/{failed_delivery.delivery_id}/", 302)]
    assert messages_of(response) == [
        f"Delivery {failed_delivery.delivery_id} waived: now suppressed (waived). Nothing was sent."
    ]
    failed_delivery.refresh_from_db()
    assert (
        failed_delivery.status,
        failed_delivery.suppression_reason,
        failed_delivery.suppression_note,
    ) == ("suppressed", "waived", "recipient confirmed by phone")
    assert kinds_written(sequence) == [MetadataKind.DELIVERY_WAIVER]


def test_console_waive_needs_a_reason_and_a_recoverable_delivery(operator, report, webhook):
    alert = make_alert(report=report, actor=operator)
    delivered = make_delivery(alert=alert, connector=webhook, status="delivered")
    client = client_for(operator)
    before = closure_counts()
    url = f"/console/deliveries/{delivered.delivery_id}/waive/"

    blank = client.post(url, {"reason": ""})
    not_recoverable = client.post(url, {"reason": "why not"})

    assert blank.status_code == 400
    assert field_errors(blank, "waive_form") == {"reason": ["This field is required."]}
    assert not_recoverable.status_code == 409
    assert field_errors(not_recoverable, "waive_form") == {
        "__all__": [
            "only failed, exhausted or accepted deliveries can be waived; "
            f"{delivered.delivery_id} is delivered"
        ]
    }
    assert closure_counts() == before


def test_console_retry_now_makes_one_attempt_and_says_its_outcome(
    operator, report, webhook, receiver
):
    # given a delivery to the live receiver whose first attempt failed an hour ago
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    an_hour_ago = timezone.now() - timedelta(hours=1)
    alert = make_alert(report=report, actor=operator, created_at=an_hour_ago)
    delivery = make_delivery(alert=alert, connector=webhook, created_at=an_hour_ago)
    make_execution(delivery=delivery, actor=operator, executed_at=an_hour_ago)
    client = client_for(operator)

    # when the operator retries it by hand
    response = client.post(
        f"/console/deliveries/{delivery.delivery_id}/retry/", {"timeout_seconds": "5"}, follow=True
    )

    # then one call went out, recorded as the second attempt, and the delivery is delivered
    assert messages_of(response) == [
        "Manual retry: 1 sent, attempt 2 delivered; the delivery is now delivered."
    ]
    assert len(receiver.log) == 1
    record = delivery.executions.get(attempt_number=2)
    assert (record.trigger, record.execution_status) == ("manual", "delivered")
    delivery.refresh_from_db()
    assert delivery.status == "delivered"


# -- step 5: record a review --------------------------------------------------------------------


def test_console_review_of_a_closed_loop_is_recorded_with_its_snapshot(operator, closed_loop):
    client = client_for(operator)
    sequence = last_sequence()

    response = client.post(
        "/console/closure/", {"decision": "confirm_closed", "note": "all clear"}, follow=True
    )

    review = ClosureReview.objects.get()
    assert response.redirect_chain == [(f"/console/reviews/{review.review_id}/", 302)]
    assert messages_of(response) == [
        "Review recorded: Confirm the loop is closed (closure closed, 0 open risks)."
    ]
    assert (review.decision, review.closure_state, review.note, review.reviewer) == (
        "confirm_closed",
        "closed",
        "all clear",
        operator,
    )
    assert kinds_written(sequence) == [MetadataKind.CLOSURE_REVIEW]


def test_console_review_cannot_confirm_an_open_loop(operator, failed_delivery):
    client = client_for(operator)
    before = closure_counts()
    open_items = closure_dashboard()["open_items"]

    response = client.post("/console/closure/", {"decision": "confirm_closed"})

    assert response.status_code == 409
    assert field_errors(response) == {
        "__all__": [
            f"closure is open ({', '.join(open_items)}); confirm_closed needs a closed "
            "dashboard, or accept the open risks with a note on each"
        ]
    }
    assert closure_counts() == before


def test_console_review_accepting_open_risks_needs_a_note_next_to_each(operator, failed_delivery):
    # given an open loop
    client = client_for(operator)
    open_items = closure_dashboard()["open_items"]
    assert open_items  # the failed delivery keeps it open
    before = closure_counts()

    # when the operator accepts the risks without notes
    missing = client.post("/console/closure/", {"decision": "accept_open_risks"})

    # then an error shows next to each risk's note, and nothing is written
    assert missing.status_code == 400
    assert field_errors(missing) == {
        f"risk_note__{code}": ["A note is required for this open risk."] for code in open_items
    }
    assert f'id="id_risk_note__{open_items[0]}_errors"' in missing.content.decode()
    assert closure_counts() == before

    # when they write a note on each, the review stores every note
    notes = {f"risk_note__{code}": f"accepted: {code}" for code in open_items}
    accepted = client.post("/console/closure/", {"decision": "accept_open_risks", **notes})
    assert accepted.status_code == 302
    review = ClosureReview.objects.get()
    assert review.risk_notes == {code: f"accepted: {code}" for code in open_items}


# -- every action: CSRF, permissions ------------------------------------------------------------


@pytest.fixture
def actions(report, failed_delivery, dry_run, closed_loop):
    """(URL, a valid body) of every console POST action."""
    delivery = failed_delivery.delivery_id
    return {
        "build health": (
            "/console/health/",
            {"expected_interval_minutes": "60", "stale_metadata_minutes": "180"},
        ),
        "send alert": (
            "/console/alerts/",
            {"health_id": report.health_id, "force": "on", "suppression_window_minutes": "60"},
        ),
        "acknowledge": (
            "/console/acknowledgements/",
            {
                "health_id": report.health_id,
                "provider": "exec-webhook",
                "acknowledgement_state": "acknowledged",
            },
        ),
        "plan retry": ("/console/retry-plans/", POLICY),
        "dry run": (
            "/console/worker-runs/",
            {
                "retry_plan_id": dry_run.retry_plan.retry_plan_id,
                "max_retry_deliveries": "25",
                "timeout_seconds": "10",
            },
        ),
        "execute live": (
            f"/console/worker-runs/{dry_run.run_id}/execute/",
            {"confirm": "on", "selection_sha256": live_selection(dry_run)[2]},
        ),
        "waive": (f"/console/deliveries/{delivery}/waive/", {"reason": "by phone"}),
        "retry now": (f"/console/deliveries/{delivery}/retry/", {"timeout_seconds": "5"}),
        "record review": ("/console/closure/", {"decision": "accept_open_risks"}),
    }


ACTIONS = [
    "build health",
    "send alert",
    "acknowledge",
    "plan retry",
    "dry run",
    "execute live",
    "waive",
    "retry now",
    "record review",
]


@pytest.mark.parametrize("action", ACTIONS)
def test_console_action_without_the_csrf_token_is_refused(operator, actions, action, receiver):
    # given an operator's browser session that enforces CSRF
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    url, body = actions[action]
    before = closure_counts()

    # when a form is posted without its token
    response = client.post(url, body)

    # then it is refused and nothing happened
    assert response.status_code == 403
    assert closure_counts() == before
    assert receiver.log == []


@pytest.mark.parametrize("role", ["auditor", "platform_owner"])
@pytest.mark.parametrize("action", ACTIONS)
def test_console_action_is_refused_to_a_role_without_its_permission(
    request, actions, action, role, receiver
):
    client = client_for(request.getfixturevalue(role))
    url, body = actions[action]
    before = closure_counts()

    response = client.post(url, body)

    assert response.status_code == 403
    assert closure_counts() == before
    assert receiver.log == []


def test_console_action_with_the_csrf_token_goes_through(operator, report):
    # the same CSRF-enforcing client, with the token of the page it came from
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    page = client.get("/console/health/")
    token = page.cookies["csrftoken"].value

    response = client.post(
        "/console/health/",
        {
            "csrfmiddlewaretoken": token,
            "expected_interval_minutes": "60",
            "stale_metadata_minutes": "180",
        },
    )

    assert response.status_code == 302
    assert HealthReport.objects.count() == 2


def test_planner_without_execute_retry_may_dry_run_but_not_confirm_live(
    planner_only, dry_run, receiver
):
    client = client_for(planner_only)
    before = closure_counts()

    confirmation = client.get(f"/console/worker-runs/{dry_run.run_id}/execute/")
    execute = client.post(
        f"/console/worker-runs/{dry_run.run_id}/execute/",
        {"confirm": "on", "selection_sha256": live_selection(dry_run)[2]},
    )
    run_page = client.get(f"/console/worker-runs/{dry_run.run_id}/")

    assert (confirmation.status_code, execute.status_code) == (403, 403)
    assert "Execute live…" not in run_page.content.decode()
    assert "needs the <code>execute_retry</code> permission" in run_page.content.decode()
    assert closure_counts() == before
    assert receiver.log == []


def test_console_get_of_an_action_url_changes_nothing(operator, failed_delivery):
    client = client_for(operator)
    before = closure_counts()

    waive = client.get(f"/console/deliveries/{failed_delivery.delivery_id}/waive/")
    retry = client.get(f"/console/deliveries/{failed_delivery.delivery_id}/retry/")

    assert (
        waive["Location"]
        == retry["Location"]
        == (f"/console/deliveries/{failed_delivery.delivery_id}/")
    )
    assert closure_counts() == before


def test_console_send_alert_from_the_flow_page_uses_the_latest_report(operator, webhook, receiver):
    # given two reports; the flow page's Send alert form names the latest one
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    make_health_report(actor=operator, generated_at=timezone.now() - timedelta(hours=2))
    latest = make_health_report(actor=operator)
    client = client_for(operator)
    flow = client.get("/console/").content.decode()
    assert f'name="health_id" value="{latest.health_id}"' in flow

    # when that form is posted as the page has it
    response = client.post(
        reverse("console:alert-list"),
        {"health_id": latest.health_id, "suppression_window_minutes": "60"},
    )

    # then the alert belongs to the latest report
    assert response.status_code == 302
    assert HealthAlert.objects.get().health == latest


def test_console_dry_run_with_nothing_due_offers_no_live_run(operator, failed_delivery):
    # given a plan whose one decision waits (the backoff has two hours to go)
    client = client_for(operator)
    client.post("/console/retry-plans/", {**POLICY, "retry_delay_minutes": "180"}, follow=True)
    plan = RetryPlan.objects.get()
    assert plan.waiting_count == 1

    # when the operator dry-runs it
    response = client.post(
        "/console/worker-runs/",
        {
            "retry_plan_id": plan.retry_plan_id,
            "max_retry_deliveries": "25",
            "timeout_seconds": "10",
        },
        follow=True,
    )

    # then the page says nothing was due and offers no live run, here or on the flow page
    assert messages_of(response) == [
        "Dry run: 0 alerts would be sent; 0 sent, 0 failed, 0 skipped. Nothing was changed."
    ]
    page = response.content.decode()
    assert "nothing was due: a live run now would send nothing" in page
    assert "Execute live…" not in page
    assert "Execute live…" not in client.get("/console/").content.decode()
