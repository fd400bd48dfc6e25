"""The whole five-step closure flow through the HTTP API, against a real local receiver."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from werkzeug import Response

from closure.choices import MetadataKind
from closure.evidence.ledger import evidence_verify
from closure.models import AlertDelivery, Evidence, ExecutionRecord, RetryDecision, WorkerRun
from tests.conftest import A, B, R
from tests.factories import event_body

pytestmark = pytest.mark.django_db(transaction=True)


def _ingest_degraded_pipeline(api):
    now = timezone.now()
    body = {
        "events": [
            event_body(
                kind="retry_worker_run",
                status="succeeded",
                schedule_enabled=True,
                occurred_at=now - timedelta(minutes=5),
                event_id="run-1",
            ),
            event_body(
                kind="retry_plan",
                status="succeeded",
                occurred_at=now - timedelta(minutes=5),
                event_id="plan-1",
            ),
            event_body(
                kind="report_delivery",
                status="failed",
                provider="slack-exec",
                run_id="drill-7",
                occurred_at=now - timedelta(minutes=3),
                event_id="delivery-1",
            ),
        ]
    }
    response = api.post(f"{R}/delivery-events", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["created"] == 3
    assert response.json()["duplicates"] == 0


def test_flow_from_failed_delivery_to_closed_closure(api, receiver, webhook):
    # given a degraded upstream pipeline
    _ingest_degraded_pipeline(api)

    # when health is built, then it is critical because a report delivery failed
    response = api.post(f"{R}/delivery-retry-health", {}, format="json")
    assert response.status_code == 201
    health = response.json()["health"]
    assert health["alert_level"] == "critical"
    assert [f["category"] for f in health["findings"]] == ["failed_executive_report_delivery"]
    assert health["findings"][0]["refs"] == ["delivery-1"]
    assert response.json()["metadata"]["metadata_kind"] == MetadataKind.HEALTH

    # when the alert is sent and the receiver fails it
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data("boom", status=500)
    response = api.post(f"{A}/deliver", {}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["success"] is False
    assert body["alert"]["selected_providers"] == ["ops-webhook"]
    [delivery] = body["deliveries"]
    assert delivery["status"] == "failed"
    assert delivery["execution_record"]["http_status"] == 500, delivery
    assert delivery["execution_record"]["error_class"] == "http_5xx"
    assert delivery["execution_record"]["trigger"] == "initial"
    first_request = receiver.log[0][0]
    assert first_request.headers["webhook-id"] == delivery["delivery_id"]

    # the closure dashboard now reports the failed delivery as an open critical risk
    closure = api.get(f"{B}/final-reporting-closure-dashboard").json()
    assert closure["closure_state"] == "open"
    assert "executive_retry_health_alert_delivery_failed" in closure["open_items"]

    # when planning right away, then the delivery waits for the 15-minute backoff
    response = api.post(f"{A}/retry-plan", {}, format="json")
    assert response.status_code == 201
    plan = response.json()["plan"]
    [decision] = plan["retry_decisions"]
    assert decision["action"] == "wait"
    assert decision["retry_count"] == 1

    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=True):
        # when planning after the backoff, then the delivery is retryable
        response = api.post(f"{A}/retry-plan", {}, format="json")
        plan = response.json()["plan"]
        assert plan["retryable_count"] == 1
        assert plan["alert_level"] == "critical"
        assert RetryDecision.objects.filter(status="pending").count() == 1
        assert RetryDecision.objects.filter(status="superseded").count() == 1

        # a dry run selects it, calls nothing and writes no execution record
        requests_before = len(receiver.log)
        executions_before = ExecutionRecord.objects.count()
        response = api.post(
            f"{A}/retry-worker-run", {"retry_plan_id": plan["retry_plan_id"]}, format="json"
        )
        assert response.status_code == 201, response.json()
        run = response.json()["run"]
        assert run["dry_run"] is True
        assert run["summary"]["selected_retry_count"] == 1
        assert len(receiver.log) == requests_before
        assert ExecutionRecord.objects.count() == executions_before
        assert AlertDelivery.objects.get().status == "failed"

        # a live run delivers it
        receiver.expect_oneshot_request("/hook", method="POST").respond_with_response(
            Response("ok", status=200)
        )
        response = api.post(
            f"{A}/retry-worker-run",
            {"execute": True, "retry_plan_id": plan["retry_plan_id"]},
            format="json",
        )
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["run"]["status"] == "succeeded"
        assert body["run"]["summary"]["delivered_count"] == 1
        [result] = body["retry_results"]
        assert result["execution_record"]["execution_status"] == "delivered"
        assert result["execution_record"]["attempt_number"] == 2
        assert result["execution_record"]["trigger"] == "retry"
        assert receiver.log[-1][0].headers["webhook-id"] == delivery["delivery_id"]
        assert AlertDelivery.objects.get().status == "delivered"

        # closure: only the acknowledgement is outstanding
        closure = api.get(f"{B}/final-reporting-closure-dashboard").json()
        assert closure["open_items"] == ["executive_retry_health_alert_acknowledgement_outstanding"]
        assert closure["alert_level"] == "warning"

        # when the recipient acknowledges, then the loop is closed
        response = api.post(
            f"{A}/{health['health_id']}/acknowledgements",
            {"provider": "ops-webhook", "external_ref": "INC-7"},
            format="json",
        )
        assert response.status_code == 201, response.json()
        closure = api.get(f"{B}/final-reporting-closure-dashboard").json()
        assert closure["closure_state"] == "closed"
        assert closure["alert_level"] == "healthy"
        assert closure["risks"] == []
        assert closure["recommended_actions"] == []
        assert closure["summary"]["deliveries"]["delivered"] == 1
        assert closure["summary"]["executions"] == {
            "delivered": 1,
            "failed": 1,
            "skipped": 0,
            "accepted": 0,
            "superseded": 0,
        }

    kinds = list(Evidence.objects.order_by("sequence").values_list("metadata_kind", flat=True))
    assert kinds == [
        MetadataKind.EVENT_INGEST,
        MetadataKind.HEALTH,
        MetadataKind.ALERT_PLAN,
        MetadataKind.ALERT_DELIVERY,
        MetadataKind.RETRY_PLAN,
        MetadataKind.RETRY_PLAN,
        MetadataKind.WORKER_RUN,
        MetadataKind.EXECUTION_RECORD,
        MetadataKind.WORKER_RUN,
        MetadataKind.ALERT_ACK,
    ]
    assert WorkerRun.objects.filter(dry_run=True).count() == 1
    assert evidence_verify().ok is True
