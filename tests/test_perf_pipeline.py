"""Query counts of retry planning and event ingest: they grow with batches, never with rows."""

from datetime import timedelta

import pytest
from django.utils import timezone

from closure.choices import MetadataKind
from closure.models import AlertDelivery, DeliveryEvent, Evidence, RetryDecision, RetryPlan
from closure.services import retries
from closure.services.events import delivery_events_ingest
from closure.services.retries import RetryPolicy, retry_plan_create
from tests.conftest import using_postgres
from tests.factories import (
    make_acknowledgement,
    make_alert,
    make_connector,
    make_decision,
    make_delivery,
    make_execution,
    make_health_report,
    make_retry_plan,
)

pytestmark = pytest.mark.django_db

# The evidence row: PostgreSQL first takes the ledger's advisory lock (closure/evidence/ledger.py).
EVIDENCE_QUERIES = 3 if using_postgres() else 2
# PostgreSQL serialises plan writers with an advisory lock (closure/services/retries.py).
PLANNING_LOCK_QUERIES = 1 if using_postgres() else 0
# The service's durable transaction is a savepoint inside the test's transaction.
SAVEPOINT_QUERIES = 2


def _failed_deliveries(actor, copies: int) -> None:
    """`copies` times the same five failed deliveries, one per outcome: retry (with an
    earlier pending decision to supersede), wait, exhausted, acknowledged, connector disabled.
    Each has its failed attempts on record."""
    now = timezone.now()
    enabled = [make_connector(f"exec-hook-{n}", "https://hooks.example.invalid/x") for n in (1, 2)]
    disabled = make_connector("exec-hook-off", "https://hooks.example.invalid/y", enabled=False)
    older_plan = make_retry_plan(actor=actor)
    for _ in range(copies):
        alert, other_alert = (
            make_alert(
                report=make_health_report(actor=actor),
                actor=actor,
                created_at=now - timedelta(hours=2),
            )
            for _ in range(2)
        )
        an_hour_ago, a_minute_ago = now - timedelta(hours=1), now - timedelta(minutes=1)
        due = make_delivery(alert=alert, connector=enabled[0], created_at=an_hour_ago)
        make_decision(plan=older_plan, delivery=due)
        waiting = make_delivery(alert=alert, connector=enabled[1], created_at=a_minute_ago)
        exhausted = make_delivery(
            alert=other_alert, connector=enabled[0], attempt_count=3, created_at=an_hour_ago
        )
        acknowledged = make_delivery(alert=other_alert, connector=enabled[1])
        make_acknowledgement(alert=other_alert, connector=enabled[1], actor=actor)
        off = make_delivery(alert=alert, connector=disabled, created_at=an_hour_ago)
        for delivery in (due, waiting, exhausted, acknowledged, off):
            for attempt in range(1, delivery.attempt_count + 1):
                make_execution(
                    delivery=delivery,
                    actor=actor,
                    attempt_number=attempt,
                    executed_at=delivery.last_attempt_at,
                    http_status=503,
                )


# Queries of a plan whose candidates fit in one batch:
#   candidates of the batch, their attempts, the (empty) next batch         3
#   the plan writers' lock                                                  PLANNING_LOCK_QUERIES
#   lock pending decisions, lock deliveries, in-flight decisions            3
#   the plan, supersede older pending decisions                             2
#   exhaust, suppress acknowledged, suppress connector disabled             3
#   decision rows (one INSERT per batch)                                     1
#   evidence row                                                             EVIDENCE_QUERIES
ONE_BATCH_QUERIES = 12 + PLANNING_LOCK_QUERIES + EVIDENCE_QUERIES + SAVEPOINT_QUERIES


@pytest.mark.parametrize("copies", [1, 3])
def test_retry_plan_queries_do_not_grow_with_deliveries(
    operator, django_assert_num_queries, copies
):
    # given 5 or 15 failed deliveries, all in one batch
    _failed_deliveries(operator, copies)

    # when a plan is made
    with django_assert_num_queries(ONE_BATCH_QUERIES, exact=True):
        plan, public = retry_plan_create(actor=operator, policy=RetryPolicy())

    # then every delivery has its decision, the suppressions are applied and one evidence row
    # records the plan
    assert (plan.decision_count, plan.retryable_count, plan.waiting_count) == (
        5 * copies,
        copies,
        copies,
    )
    assert plan.suppressed_count == 3 * copies
    assert RetryDecision.objects.filter(plan=plan).count() == 5 * copies
    assert RetryDecision.objects.filter(status="superseded").count() == copies
    assert len(public["retry_decisions"]) == 5 * copies
    assert sorted(AlertDelivery.objects.values_list("status", flat=True)) == sorted(
        ["failed"] * 2 * copies + ["exhausted"] * copies + ["suppressed"] * 2 * copies
    )
    assert AlertDelivery.objects.filter(suppression_reason="acknowledged").count() == copies
    assert AlertDelivery.objects.filter(suppression_reason="connector_disabled").count() == copies
    assert Evidence.objects.filter(metadata_kind=MetadataKind.RETRY_PLAN).count() == 1


@pytest.mark.parametrize(("copies", "batches"), [(2, 3), (4, 5)])
def test_retry_plan_queries_grow_only_with_batches(
    operator, django_assert_num_queries, monkeypatch, copies, batches
):
    # given 10 or 20 failed deliveries and batches of 4
    monkeypatch.setattr(retries, "BATCH_SIZE", 4)
    _failed_deliveries(operator, copies)

    # when a plan is made, then each further batch adds three queries: its candidates, their
    # attempts, and its INSERT of decision rows
    with django_assert_num_queries(ONE_BATCH_QUERIES + 3 * (batches - 1), exact=True):
        plan, _ = retry_plan_create(actor=operator, policy=RetryPolicy())

    assert plan.decision_count == 5 * copies
    assert RetryDecision.objects.filter(plan=plan).count() == 5 * copies
    assert RetryPlan.objects.count() == 2  # the older plan and this one


def _events(count: int, prefix: str = "evt") -> list[dict]:
    """Validated events, as the input serializer hands them to the service."""
    start = timezone.now() - timedelta(hours=1)
    return [
        {
            "event_id": f"{prefix}-{n:05d}",
            "kind": "report_delivery",
            "status": "failed" if n % 4 == 0 else "delivered",
            "occurred_at": start + timedelta(seconds=n),
            "provider": f"exec-hook-{n % 20}",
            "run_id": f"run-{n % 50}",
            "executive_report_id": f"report-{n % 7}",
            "schedule_enabled": None,
            "details": {"attempt": n % 3 + 1},
        }
        for n in range(count)
    ]


# Queries of a batch: the stored digests of its event_ids, one INSERT, the evidence row.
INGEST_QUERIES = 2 + EVIDENCE_QUERIES + SAVEPOINT_QUERIES


def test_event_ingest_of_a_full_batch_is_a_fixed_number_of_queries(
    operator, django_assert_num_queries
):
    # given a batch of 1,000 new events
    events = _events(1000)

    # when it is ingested
    with django_assert_num_queries(INGEST_QUERIES, exact=True):
        result = delivery_events_ingest(actor=operator, events=events)

    # then every event is stored once, with one evidence row for the batch
    assert result == {"created": 1000, "duplicates": 0}
    assert DeliveryEvent.objects.count() == 1000
    assert DeliveryEvent.objects.filter(status="failed").count() == 250
    evidence = Evidence.objects.get(metadata_kind=MetadataKind.EVENT_INGEST)
    assert (evidence.session_id, evidence.decision_count) == ("evt-00000", 1000)


def test_event_ingest_of_a_repeated_batch_is_one_query(operator, django_assert_num_queries):
    # given a batch already stored
    events = _events(1000)
    delivery_events_ingest(actor=operator, events=events)

    # when it is sent again, half of it with 500 new events
    with django_assert_num_queries(1 + SAVEPOINT_QUERIES, exact=True):
        repeat = delivery_events_ingest(actor=operator, events=events)
    with django_assert_num_queries(INGEST_QUERIES, exact=True):
        mixed = delivery_events_ingest(
            actor=operator, events=events[:500] + _events(500, prefix="new")
        )

    # then only the new events are stored, and only they get evidence
    assert repeat == {"created": 0, "duplicates": 1000}
    assert mixed == {"created": 500, "duplicates": 500}
    assert DeliveryEvent.objects.count() == 1500
    assert Evidence.objects.filter(metadata_kind=MetadataKind.EVENT_INGEST).count() == 2
