"""Retry planning (POST A/retry-plan, closure.services.retries) against a real local receiver."""

from datetime import timedelta

import pytest
import time_machine
from django.db import IntegrityError, transaction
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.canonical import isoformat
from closure.models import (
    AlertDelivery,
    Evidence,
    ExecutionRecord,
    HealthReport,
    RetryDecision,
    RetryPlan,
)
from closure.services.connectors import connector_save
from closure.services.retries import RetryPolicy
from tests.conftest import A, R
from tests.factories import make_connector

pytestmark = pytest.mark.django_db

PLAN = f"{A}/retry-plan"
DEFAULT_POLICY = {
    "max_retry_attempts": 3,
    "retry_delay_minutes": 15,
    "backoff_multiplier": 2.0,
    "allow_immediate_retry": False,
    "max_delay_minutes": 1440,
}


def _build_health(api) -> str:
    """A critical report: no upstream worker run or plan has been reported."""
    response = api.post(f"{R}/delivery-retry-health", {}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["health"]["alert_level"] == "critical"
    return response.json()["health"]["health_id"]


def _deliver(api, receiver, *, status=500, headers=None, path="/hook", body=None) -> dict:
    """Send the latest report's alert; the receiver answers `status` once on `path`."""
    receiver.expect_oneshot_request(path, method="POST").respond_with_data(
        "ok" if status < 300 else "boom", status=status, headers=headers
    )
    response = api.post(f"{A}/deliver", body or {"provider": "ops-webhook"}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _failed_delivery(api, receiver, **kwargs) -> AlertDelivery:
    _build_health(api)
    [sent] = _deliver(api, receiver, **kwargs)["deliveries"]
    delivery = AlertDelivery.objects.get(delivery_id=sent["delivery_id"])
    assert delivery.status == "failed"
    return delivery


def _retry_by_hand(api, receiver, delivery: AlertDelivery, *, status=500) -> AlertDelivery:
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data(
        "ok" if status < 300 else "boom", status=status
    )
    response = api.post(f"{A}/deliveries/{delivery.delivery_id}/retry", {}, format="json")
    assert response.status_code == 201, response.json()
    delivery.refresh_from_db()
    return delivery


def _plan(api, body: dict | None = None) -> dict:
    response = api.post(PLAN, body or {}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["plan"]


def _open_decisions(delivery: AlertDelivery):
    return RetryDecision.objects.filter(delivery=delivery, status__in=["pending", "in_flight"])


@pytest.mark.parametrize(
    ("policy", "attempts", "expected"),
    [
        (RetryPolicy(), 1, 15),
        (RetryPolicy(), 2, 30),
        (RetryPolicy(), 3, 60),
        (RetryPolicy(max_delay_minutes=40), 3, 40),
        (RetryPolicy(backoff_multiplier=1.0), 4, 15),
        (RetryPolicy(retry_delay_minutes=0.25), 1, 1.0),
        (RetryPolicy(retry_delay_minutes=0.25, allow_immediate_retry=True), 1, 0.25),
        (RetryPolicy(retry_delay_minutes=0, allow_immediate_retry=True), 2, 0),
        # thousands of attempts overflow a float power: the cap still holds
        (RetryPolicy(), 3519, 1440),
        (RetryPolicy(backoff_multiplier=10.0), 400, 1440),
        (RetryPolicy(retry_delay_minutes=0, allow_immediate_retry=True), 3519, 0),
    ],
)
def test_retry_policy_delay_minutes_backs_off_and_is_capped(policy, attempts, expected):
    # given a policy, when the delay after `attempts` attempts is computed, then it is exact
    assert policy.delay_minutes(attempts) == expected


def test_retry_plan_waits_for_the_backoff_after_the_first_attempt(api, receiver, webhook):
    # given a delivery whose first attempt failed with a 500
    delivery = _failed_delivery(api, receiver)
    record = ExecutionRecord.objects.get(delivery=delivery)
    assert delivery.last_attempt_at == record.executed_at

    # when a plan is made right away
    response = api.post(PLAN, {}, format="json")

    # then the delivery waits until 15 minutes after that attempt
    assert response.status_code == 201, response.json()
    body = response.json()
    plan = body["plan"]
    stored = RetryPlan.objects.get()
    next_retry_at = delivery.last_attempt_at + timedelta(minutes=15)
    assert plan["retry_decisions"] == [
        {
            "delivery_id": delivery.delivery_id,
            "health_id": delivery.alert.health.health_id,
            "alert_id": delivery.alert.alert_id,
            "provider": "ops-webhook",
            "action": "wait",
            "reason": "backoff_pending",
            "retry_count": 1,
            "max_retry_attempts": 3,
            "retry_delay_minutes": 15,
            "latest_execution_id": record.execution_id,
            "latest_attempt_at": isoformat(record.executed_at),
            "next_retry_at": isoformat(next_retry_at),
            "failed_status_codes": [500],
        }
    ]
    assert {k: v for k, v in plan.items() if k not in ("retry_decisions", "controls")} == {
        "retry_plan_id": stored.retry_plan_id,
        "generated_at": isoformat(stored.generated_at),
        "generated_by": "olivia",
        "alert_level": "warning",
        "decision_count": 1,
        "retryable_count": 0,
        "waiting_count": 1,
        "suppressed_count": 0,
        "retry_policy": DEFAULT_POLICY,
        "provider": [],
        "health_id": None,
        "schema_version": (
            "cavra.go-backend-pilot.rollback-drill-executive-health-alert-delivery-retry-plan.v1"
        ),
    }
    # and the decision is stored pending, the delivery is untouched
    decision = RetryDecision.objects.get()
    assert (decision.plan_id, decision.action, decision.reason) == (
        stored.pk,
        "wait",
        "backoff_pending",
    )
    assert (decision.status, decision.closed_at) == ("pending", None)
    assert decision.next_retry_at == next_retry_at
    assert decision.latest_execution_id == record.pk
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == ("failed", 1)
    # and the plan is recorded as evidence with its counts
    evidence = Evidence.objects.get(metadata_kind=MetadataKind.RETRY_PLAN)
    assert evidence.session_id == stored.retry_plan_id
    assert (evidence.decision_count, evidence.blocked_count, evidence.approval_required_count) == (
        1,
        0,
        0,
    )
    # (the answer adds the reference implementation's schema_version and controls)
    assert evidence.payload["subject"] == {
        k: v for k, v in plan.items() if k not in ("schema_version", "controls")
    }
    assert body["metadata"]["sequence"] == evidence.sequence
    assert body["actor"]["username"] == "olivia"


def test_retry_plan_retries_once_the_backoff_has_passed(api, receiver, webhook):
    # given a delivery whose first attempt failed
    delivery = _failed_delivery(api, receiver)

    # when a plan is made 16 minutes later
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=True):
        plan = _plan(api)

    # then the delivery is retryable and the plan is critical
    [decision] = plan["retry_decisions"]
    assert (decision["action"], decision["reason"]) == ("retry", "retry_due")
    assert decision["next_retry_at"] == isoformat(delivery.last_attempt_at + timedelta(minutes=15))
    assert (plan["alert_level"], plan["retryable_count"], plan["waiting_count"]) == (
        "critical",
        1,
        0,
    )
    stored = RetryDecision.objects.get()
    assert (stored.action, stored.status) == ("retry", "pending")
    evidence = Evidence.objects.get(metadata_kind=MetadataKind.RETRY_PLAN)
    assert evidence.approval_required_count == 1


def test_retry_plan_backoff_doubles_per_attempt_and_is_capped(api, receiver, webhook):
    # given a delivery that failed its first attempt and, by hand, its second
    delivery = _failed_delivery(api, receiver)
    delivery = _retry_by_hand(api, receiver, delivery)
    assert delivery.attempt_count == 2
    second = ExecutionRecord.objects.get(delivery=delivery, attempt_number=2)
    assert delivery.last_attempt_at == second.executed_at

    # when a plan is made with the defaults (15 minutes, multiplier 2)
    [decision] = _plan(api)["retry_decisions"]

    # then it waits 15 × 2 = 30 minutes after the last attempt
    assert decision["retry_count"] == 2
    assert decision["retry_delay_minutes"] == 30
    assert decision["next_retry_at"] == isoformat(second.executed_at + timedelta(minutes=30))
    assert decision["latest_execution_id"] == second.execution_id
    assert decision["failed_status_codes"] == [500, 500]

    # when the delay is capped at 20 minutes
    plan = _plan(api, {"retry_policy": {"max_delay_minutes": 20}})
    [decision] = plan["retry_decisions"]

    # then it waits 20 minutes, and the stored decision says so
    assert decision["retry_delay_minutes"] == 20
    assert decision["next_retry_at"] == isoformat(second.executed_at + timedelta(minutes=20))
    assert plan["retry_policy"] == {**DEFAULT_POLICY, "max_delay_minutes": 20}
    stored = RetryDecision.objects.get(status="pending")
    assert stored.next_retry_at == second.executed_at + timedelta(minutes=20)
    assert stored.retry_delay_minutes == 20


def test_retry_plan_honours_a_stored_retry_after(api, receiver, webhook):
    # given a delivery the receiver rate-limited with Retry-After: 3600
    delivery = _failed_delivery(api, receiver, status=429, headers={"Retry-After": "3600"})
    record = ExecutionRecord.objects.get(delivery=delivery)
    assert (record.http_status, record.error_class, record.retry_after_seconds) == (
        429,
        "rate_limited",
        3600,
    )
    attempt_at = record.executed_at
    assert delivery.retry_not_before == attempt_at + timedelta(seconds=3600)

    # when a plan is made 30 minutes later (the 15-minute backoff has passed)
    with time_machine.travel(attempt_at + timedelta(minutes=30), tick=True):
        plan = _plan(api)

    # then it still waits, until the attempt time plus 3600 seconds
    [decision] = plan["retry_decisions"]
    assert (decision["action"], decision["reason"]) == ("wait", "retry_after_pending")
    assert decision["next_retry_at"] == isoformat(attempt_at + timedelta(seconds=3600))
    assert decision["failed_status_codes"] == [429]
    assert plan["alert_level"] == "warning"
    stored = RetryDecision.objects.get()
    assert stored.next_retry_at == attempt_at + timedelta(seconds=3600)

    # when a plan is made after the Retry-After has passed, then the retry is due
    with time_machine.travel(attempt_at + timedelta(seconds=3601), tick=True):
        [decision] = _plan(api)["retry_decisions"]
    assert (decision["action"], decision["reason"]) == ("retry", "retry_due")
    assert decision["next_retry_at"] == isoformat(attempt_at + timedelta(seconds=3600))


def test_retry_plan_uses_the_backoff_when_it_is_later_than_retry_after(api, receiver, webhook):
    # given a delivery the receiver answered 503 with Retry-After: 60
    delivery = _failed_delivery(api, receiver, status=503, headers={"Retry-After": "60"})
    assert delivery.retry_not_before == delivery.last_attempt_at + timedelta(seconds=60)

    # when a plan is made
    [decision] = _plan(api)["retry_decisions"]

    # then the longer 15-minute backoff decides
    assert (decision["action"], decision["reason"]) == ("wait", "backoff_pending")
    assert decision["next_retry_at"] == isoformat(delivery.last_attempt_at + timedelta(minutes=15))


def test_retry_plan_suppresses_after_max_attempts_and_exhausts_the_delivery(api, receiver, webhook):
    # given a delivery that failed three attempts (the original and two by hand)
    delivery = _failed_delivery(api, receiver)
    delivery = _retry_by_hand(api, receiver, delivery)
    delivery = _retry_by_hand(api, receiver, delivery)
    assert delivery.attempt_count == 3
    third = ExecutionRecord.objects.get(delivery=delivery, attempt_number=3)
    requests_before = len(receiver.log)

    # when a plan is made with the default of 3 attempts
    plan = _plan(api)

    # then the delivery is suppressed for max attempts and becomes exhausted
    [decision] = plan["retry_decisions"]
    assert (decision["action"], decision["reason"]) == ("suppress", "max_attempts_reached")
    assert decision["retry_count"] == 3
    assert decision["next_retry_at"] is None
    assert decision["latest_execution_id"] == third.execution_id
    assert decision["failed_status_codes"] == [500, 500, 500]
    assert (plan["alert_level"], plan["suppressed_count"], plan["decision_count"]) == (
        "healthy",
        1,
        1,
    )
    stored_plan = RetryPlan.objects.get()
    stored = RetryDecision.objects.get()
    assert (stored.status, stored.closed_at) == ("applied", stored_plan.generated_at)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.suppression_reason) == ("exhausted", "")
    assert delivery.updated_at == stored_plan.generated_at
    assert Evidence.objects.get(metadata_kind=MetadataKind.RETRY_PLAN).blocked_count == 1

    # when another plan is made later, then the exhausted delivery is not planned again
    with time_machine.travel(timezone.now() + timedelta(hours=2), tick=True):
        plan = _plan(api)
    assert plan["retry_decisions"] == []
    assert plan["decision_count"] == 0
    assert RetryDecision.objects.count() == 1
    delivery.refresh_from_db()
    assert delivery.status == "exhausted"
    assert len(receiver.log) == requests_before


def test_retry_plan_with_one_attempt_allowed_exhausts_after_the_first_failure(
    api, receiver, webhook
):
    # given a delivery whose first attempt failed
    delivery = _failed_delivery(api, receiver)

    # when a plan allows a single attempt
    plan = _plan(api, {"retry_policy": {"max_retry_attempts": 1}})

    # then it is suppressed and the delivery exhausted
    [decision] = plan["retry_decisions"]
    assert (decision["action"], decision["reason"], decision["max_retry_attempts"]) == (
        "suppress",
        "max_attempts_reached",
        1,
    )
    delivery.refresh_from_db()
    assert delivery.status == "exhausted"


def test_retry_plan_suppresses_when_the_alert_is_acknowledged(api, receiver, webhook):
    # given an alert delivered and acknowledged on the connector
    health_id = _build_health(api)
    assert _deliver(api, receiver, status=200)["success"] is True
    response = api.post(
        f"{A}/{health_id}/acknowledgements", {"provider": "ops-webhook"}, format="json"
    )
    assert response.status_code == 201, response.json()
    # and a forced resend of the same report that failed
    [sent] = _deliver(api, receiver, status=500, body={"provider": "ops-webhook", "force": True})[
        "deliveries"
    ]
    delivery = AlertDelivery.objects.get(delivery_id=sent["delivery_id"])
    assert delivery.status == "failed"
    requests_before = len(receiver.log)

    # when a plan is made after the backoff
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=True):
        plan = _plan(api)

    # then the delivery is suppressed because the alert is acknowledged there
    [decision] = plan["retry_decisions"]
    assert decision["delivery_id"] == delivery.delivery_id
    assert (decision["action"], decision["reason"]) == ("suppress", "alert_acknowledged")
    assert (plan["alert_level"], plan["suppressed_count"]) == ("healthy", 1)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.suppression_reason) == ("suppressed", "acknowledged")
    assert RetryDecision.objects.get().status == "applied"
    assert _open_decisions(delivery).count() == 0
    assert len(receiver.log) == requests_before


def test_retry_plan_does_not_suppress_for_a_dismissed_acknowledgement(api, receiver, webhook):
    # given an alert delivered and merely dismissed on the connector, then resent and failed
    health_id = _build_health(api)
    _deliver(api, receiver, status=200)
    response = api.post(
        f"{A}/{health_id}/acknowledgements",
        {"provider": "ops-webhook", "acknowledgement_state": "dismissed"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    [sent] = _deliver(api, receiver, status=500, body={"provider": "ops-webhook", "force": True})[
        "deliveries"
    ]

    # when a plan is made, then the failed resend is planned, not suppressed
    [decision] = _plan(api)["retry_decisions"]
    assert decision["delivery_id"] == sent["delivery_id"]
    assert (decision["action"], decision["reason"]) == ("wait", "backoff_pending")
    assert AlertDelivery.objects.get(delivery_id=sent["delivery_id"]).status == "failed"


def test_retry_plan_suppresses_when_the_connector_is_disabled(
    api, receiver, webhook, platform_owner
):
    # given a failed delivery whose connector a platform owner then disabled
    delivery = _failed_delivery(api, receiver)
    connector_save(actor=platform_owner, name="ops-webhook", kind="webhook", enabled=False)
    requests_before = len(receiver.log)

    # when a plan is made after the backoff
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=True):
        plan = _plan(api)

    # then the delivery is suppressed for its disabled connector
    [decision] = plan["retry_decisions"]
    assert (decision["action"], decision["reason"]) == ("suppress", "connector_disabled")
    assert (plan["retryable_count"], plan["suppressed_count"]) == (0, 1)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.suppression_reason) == ("suppressed", "connector_disabled")
    assert RetryDecision.objects.get().status == "applied"
    assert len(receiver.log) == requests_before


def test_retry_plan_never_plans_a_delivered_delivery(api, receiver, webhook):
    # given a failed delivery with a pending decision
    delivery = _failed_delivery(api, receiver)
    [first] = _plan(api)["retry_decisions"]
    assert first["action"] == "wait"

    # when a manual retry delivers it
    delivery = _retry_by_hand(api, receiver, delivery, status=200)
    assert delivery.status == "delivered"

    # then its pending decision is closed
    decision = RetryDecision.objects.get()
    assert decision.status == "superseded"
    assert decision.closed_at is not None

    # and no later plan decides on it again, however much time passes
    for minutes in (0, 16, 24 * 60):
        with time_machine.travel(timezone.now() + timedelta(minutes=minutes), tick=True):
            plan = _plan(api)
        assert plan["retry_decisions"] == []
        assert (plan["decision_count"], plan["alert_level"]) == (0, "healthy")
    assert RetryDecision.objects.count() == 1
    assert RetryPlan.objects.count() == 4
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == ("delivered", 2)


def test_retry_plan_ignores_deliveries_delivered_on_the_first_attempt(api, receiver, webhook):
    # given an alert delivered on its first attempt
    _build_health(api)
    assert _deliver(api, receiver, status=200)["success"] is True

    # when a plan is made, then there is nothing to decide
    plan = _plan(api)
    assert (plan["decision_count"], plan["retry_decisions"]) == (0, [])
    assert RetryDecision.objects.count() == 0


def test_retry_plan_supersedes_pending_decisions_of_older_plans(api, receiver, webhook):
    # given a failed delivery and a first plan with a pending decision
    delivery = _failed_delivery(api, receiver)
    first_plan = _plan(api)
    first = RetryDecision.objects.get()
    assert first.status == "pending"

    # when a second plan is made after the backoff
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=True):
        second_plan = _plan(api)

    # then the first decision is superseded when the second plan was made
    first.refresh_from_db()
    second_stored = RetryPlan.objects.get(retry_plan_id=second_plan["retry_plan_id"])
    assert (first.status, first.closed_at) == ("superseded", second_stored.generated_at)
    assert first.plan.retry_plan_id == first_plan["retry_plan_id"]
    # and exactly one decision of this delivery is open: the second plan's retry
    [open_decision] = _open_decisions(delivery)
    assert open_decision.plan_id == second_stored.pk
    assert (open_decision.action, open_decision.status) == ("retry", "pending")
    assert RetryDecision.objects.count() == 2


def test_retry_decision_constraint_rejects_a_second_open_decision(api, receiver, webhook):
    # given a failed delivery with one pending decision
    delivery = _failed_delivery(api, receiver)
    _plan(api)
    existing = RetryDecision.objects.get()
    fields = {
        "plan": existing.plan,
        "delivery": delivery,
        "action": "retry",
        "reason": "retry_due",
        "retry_count": 1,
        "max_retry_attempts": 3,
        "retry_delay_minutes": 15,
    }

    # when a second pending, or an in-flight, decision is written for the same delivery
    for status in ("pending", "in_flight"):
        with pytest.raises(IntegrityError), transaction.atomic():
            RetryDecision.objects.create(status=status, **fields)

    # then the database refused both; a closed decision is still allowed
    assert RetryDecision.objects.count() == 1
    with transaction.atomic():
        RetryDecision.objects.create(status="superseded", **fields)
    assert _open_decisions(delivery).count() == 1
    assert RetryDecision.objects.count() == 2


def test_retry_plan_alert_level_follows_the_most_urgent_action(api, receiver, webhook):
    # given nothing has failed, then a plan is healthy and empty
    plan = _plan(api)
    assert (plan["alert_level"], plan["decision_count"]) == ("healthy", 0)

    # given a first delivery failed now, then the plan waits: warning
    first = _failed_delivery(api, receiver)
    plan = _plan(api)
    assert (plan["alert_level"], plan["waiting_count"], plan["retryable_count"]) == (
        "warning",
        1,
        0,
    )

    # given a second connector's delivery failed ten minutes later
    make_connector("backup-webhook", receiver.url_for("/backup"))
    with time_machine.travel(timezone.now() + timedelta(minutes=10), tick=True):
        _build_health(api)
        [second] = _deliver(api, receiver, path="/backup", body={"provider": "backup-webhook"})[
            "deliveries"
        ]
        assert second["status"] == "failed"

    # when a plan is made 16 minutes after the first failure
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=True):
        plan = _plan(api)

    # then one retry and one wait make it critical
    assert (plan["alert_level"], plan["retryable_count"], plan["waiting_count"]) == (
        "critical",
        1,
        1,
    )
    actions = {d["delivery_id"]: d["action"] for d in plan["retry_decisions"]}
    assert actions == {first.delivery_id: "retry", second["delivery_id"]: "wait"}
    assert RetryPlan.objects.order_by("-generated_at", "-id").first().alert_level == "critical"


def test_retry_plan_filters_by_provider_and_health_id(api, receiver, webhook):
    # given report 1 failed on two connectors and report 2 failed on one of them
    make_connector("backup-webhook", receiver.url_for("/backup"))
    receiver.expect_request("/hook", method="POST").respond_with_data("boom", status=500)
    receiver.expect_request("/backup", method="POST").respond_with_data("boom", status=500)
    first_health = _build_health(api)
    response = api.post(f"{A}/deliver", {"provider": "all"}, format="json")
    assert [d["status"] for d in response.json()["deliveries"]] == ["failed", "failed"]
    second_health = _build_health(api)
    response = api.post(f"{A}/deliver", {"provider": "ops-webhook"}, format="json")
    assert [d["status"] for d in response.json()["deliveries"]] == ["failed"]
    delivery_ids = {
        (d.alert.health.health_id, d.provider): d.delivery_id
        for d in AlertDelivery.objects.select_related("alert__health")
    }

    def decided(plan):
        return sorted(d["delivery_id"] for d in plan["retry_decisions"])

    # when planning for one provider, then only its deliveries are decided
    plan = _plan(api, {"provider": "ops-webhook"})
    assert decided(plan) == sorted(
        [delivery_ids[first_health, "ops-webhook"], delivery_ids[second_health, "ops-webhook"]]
    )
    assert (plan["provider"], plan["health_id"]) == (["ops-webhook"], None)

    # when planning for one report, then only its deliveries are decided
    plan = _plan(api, {"health_id": second_health})
    assert decided(plan) == [delivery_ids[second_health, "ops-webhook"]]
    assert (plan["provider"], plan["health_id"]) == ([], second_health)

    # when planning for both filters, then only the intersection is decided
    plan = _plan(api, {"provider": "backup-webhook", "health_id": first_health})
    assert decided(plan) == [delivery_ids[first_health, "backup-webhook"]]
    stored = RetryPlan.objects.get(retry_plan_id=plan["retry_plan_id"])
    assert (stored.provider_filter, stored.health_filter) == (["backup-webhook"], first_health)
    evidence = Evidence.objects.get(session_id=plan["retry_plan_id"])
    assert (evidence.health_id, evidence.provider) == (first_health, "backup-webhook")

    # and every delivery has exactly one open decision, from the latest plan that covered it
    for delivery in AlertDelivery.objects.all():
        assert _open_decisions(delivery).count() == 1
    assert HealthReport.objects.count() == 2


def test_retry_plan_rejects_unknown_fields_and_wrong_types(api, receiver, webhook):
    # given a failed delivery
    _failed_delivery(api, receiver)
    evidence_before = Evidence.objects.count()

    # when the policy has a string for an integer, or an unknown field
    wrong_type = api.post(PLAN, {"retry_policy": {"max_retry_attempts": "3"}}, format="json")
    unknown = api.post(PLAN, {"retry_policy": {"jitter": True}}, format="json")

    # then each is a 400 problem naming the dotted path, and nothing was planned
    for response, path in (
        (wrong_type, "retry_policy.max_retry_attempts"),
        (unknown, "retry_policy.jitter"),
    ):
        assert response.status_code == 400
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["code"] == "validation_error"
        assert list(response.json()["errors"]) == [path]
    assert RetryPlan.objects.count() == 0
    assert RetryDecision.objects.count() == 0
    assert Evidence.objects.count() == evidence_before


def test_retry_plan_records_a_long_provider_filter_in_evidence(api, receiver):
    # given 25 connectors whose names, joined, are far longer than 200 characters
    names = [f"executive-webhook-{number:02d}" for number in range(25)]
    for name in names:
        make_connector(name, receiver.url_for(f"/{name}"))
    provider = ",".join(names)
    assert len(provider) == 524

    # when a plan is filtered on all of them
    plan = _plan(api, {"provider": provider})

    # then it is stored, and its evidence keeps the whole filter for auditors
    assert plan["provider"] == names
    assert RetryPlan.objects.get().provider_filter == names
    evidence = Evidence.objects.get(metadata_kind=MetadataKind.RETRY_PLAN)
    assert evidence.provider == provider
    assert evidence.payload["provider"] == provider
