"""The retry worker through the API: dry runs by default, live runs only with `execute: true`
and the execute_retry permission."""

import pytest

from closure.models import AlertDelivery, RetryDecision
from tests.conftest import A, assert_invalid, assert_problem, client_for, closure_counts

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "body",
    [
        {"execute": True, "dry_run": True},
    ],
)
def test_worker_run_dry_run_contradicting_execute_is_400_and_sends_nothing(
    api, receiver, due_retry, body
):
    # given a retry that is due, to a live receiver
    before = closure_counts()

    # when dry_run contradicts execute ({"dry_run": false} alone is covered by
    # tests/test_reference_compat.py: refused as reference_field_unsupported)
    response = api.post(f"{A}/retry-worker-run", body, format="json")

    # then the request is refused, no connector is called and nothing changes
    assert_invalid(
        response,
        {
            "dry_run": [
                "Contradicts execute: a live run needs execute=true (and dry_run false or "
                "absent); a dry run needs execute false or absent."
            ]
        },
    )
    assert receiver.log == []
    assert closure_counts() == before
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempt_count, delivery.lease_owner) == ("failed", 1, "")
    assert RetryDecision.objects.get().status == "pending"


def test_worker_run_dry_run_with_plan_and_policy_is_400(api, due_retry):
    # given a stored plan
    before = closure_counts()

    # when the run names both a plan and a policy for a fresh one
    response = api.post(
        f"{A}/retry-worker-run",
        {"retry_plan_id": due_retry.retry_plan_id, "retry_policy": {"max_retry_attempts": 5}},
        format="json",
    )

    # then the ambiguity is refused
    assert_invalid(
        response, {"retry_policy": ["Give either retry_plan_id or retry_policy, not both."]}
    )
    assert closure_counts() == before


def test_planner_without_execute_retry_can_dry_run(planner_only, due_retry, receiver):
    # given a user who may plan but not execute, and a retry that is due
    client = client_for(planner_only)

    # when they ask for a dry run
    response = client.post(
        f"{A}/retry-worker-run", {"retry_plan_id": due_retry.retry_plan_id}, format="json"
    )

    # then the run is recorded as theirs and selects the retry, but calls nothing
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["run"]["dry_run"] is True
    assert body["run"]["started_by"] == "paula"
    assert body["run"]["summary"]["selected_retry_count"] == 1
    assert body["metadata"]["signer"] == "paula"
    assert body["actor"]["username"] == "paula"
    assert receiver.log == []
    assert AlertDelivery.objects.get().attempt_count == 1


@pytest.mark.parametrize(
    ("body", "of_stored_plan"),
    [
        ({"execute": True}, False),
        ({"execute": True, "dry_run": False}, False),
        ({"execute": True}, True),
    ],
)
def test_planner_without_execute_retry_gets_403_for_a_live_run(
    planner_only, due_retry, receiver, body, of_stored_plan
):
    # given a user who may plan but not execute, and a retry that is due
    client = client_for(planner_only)
    if of_stored_plan:
        body = {**body, "retry_plan_id": due_retry.retry_plan_id}
    before = closure_counts()

    # when they ask for a live run
    response = client.post(f"{A}/retry-worker-run", body, format="json")

    # then it is refused before anything runs: no run, no plan, no call, no evidence
    assert_problem(
        response,
        status=403,
        code="permission_denied",
        title="Permission denied",
        detail="A live run needs the execute_retry permission.",
    )
    assert closure_counts() == before
    assert receiver.log == []
    assert RetryDecision.objects.get().status == "pending"
    assert AlertDelivery.objects.get().lease_owner == ""
