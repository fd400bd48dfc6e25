"""Clients written against the reference implementation: its request bodies are understood or
refused with a stable code, its response fields are here (docs/migrating-from-reference.md,
checked row by row), and its client's scenario replays against this API."""

import json
import re
from pathlib import Path

import pytest

from closure.choices import MetadataKind
from closure.evidence.ledger import evidence_envelope
from closure.inputs import serializers as inputs
from closure.models import AlertDelivery, Evidence, ExecutionRecord, RetryPlan, WorkerRun
from tests.conftest import A, B, assert_invalid, assert_problem, client_for, closure_counts

pytestmark = pytest.mark.django_db

TABLE = Path(__file__).resolve().parent.parent / "docs" / "migrating-from-reference.md"
ENDPOINTS = {"A": A, "B": B}
INPUT_SERIALIZERS = {
    "POST A/retry-plan": inputs.RetryPlanInputSerializer,
    "POST A/retry-worker-run": inputs.WorkerRunInputSerializer,
    "POST B/final-reporting-operator-runbook-export": inputs.RunbookExportInputSerializer,
}
REQUEST_KINDS = {"accepted", "alias", "refused"}
RESPONSE_KINDS = {"same", "added", "renamed", "absent"}
MISSING = object()
# The reference's policy, spelled as its clients send it.
REFERENCE_POLICY = {"max_retries": 3, "delay_minutes": 15, "multiplier": 2.0}


def _cell(text: str) -> str:
    return text.strip().strip("`")


def migration_rows() -> list[dict]:
    """Every row of every endpoint table: endpoint, field, kind, here, example, reason."""
    rows, endpoint = [], None
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"## ((?:GET|POST) [AB]/[a-z-]+)", line)
        if heading:
            endpoint = heading.group(1)
            continue
        if endpoint and line.startswith("| `"):
            cells = [_cell(cell) for cell in line.strip().strip("|").split("|")]
            assert len(cells) == 5, line
            field, kind, here, example, reason = cells
            rows.append(
                {
                    "endpoint": endpoint,
                    "field": field,
                    "kind": kind,
                    "here": here,
                    "example": json.loads(example) if example else MISSING,
                    "reason": reason,
                }
            )
    return rows


ROWS = migration_rows()
REQUEST_ROWS = [row for row in ROWS if row["kind"] in REQUEST_KINDS]
RESPONSE_ROWS = [row for row in ROWS if row["kind"] in RESPONSE_KINDS]


def url_of(endpoint: str) -> str:
    method, path = endpoint.split(" ")
    base, _, name = path.partition("/")
    return f"{ENDPOINTS[base]}/{name}"


def nested(path: str, value) -> dict:
    """{"a": {"b": value}} for "a.b"."""
    for name in reversed(path.split(".")):
        value = {name: value}
    return value


def resolve(body, path: str):
    """The value at a dotted path; `name[]` steps into the first item of a list."""
    current = body
    for step in path.split("."):
        is_list = step.endswith("[]")
        name = step.removesuffix("[]")
        if not isinstance(current, dict) or name not in current:
            return MISSING
        current = current[name]
        if is_list:
            assert isinstance(current, list), f"{path}: {name} is not a list"
            assert current, f"{path}: {name} is empty in the scenario's response"
            current = current[0]
    return current


def test_migration_table_lists_every_endpoint_with_known_kinds():
    # given the migration table
    # then it has the five endpoints, and every row a known kind and what its kind needs
    assert sorted({row["endpoint"] for row in ROWS}) == [
        "GET B/final-reporting-closure-dashboard",
        "GET B/final-reporting-release-readiness",
        "POST A/retry-plan",
        "POST A/retry-worker-run",
        "POST B/final-reporting-operator-runbook-export",
    ]
    for row in ROWS:
        assert row["kind"] in REQUEST_KINDS | RESPONSE_KINDS, row
        assert bool(row["here"]) == (row["kind"] in {"alias", "renamed"}), row
        assert (row["example"] is not MISSING) == (row["kind"] in REQUEST_KINDS), row
        if row["kind"] in {"refused", "renamed", "absent"}:
            assert row["reason"], row


@pytest.mark.parametrize(
    "row",
    [row for row in REQUEST_ROWS if row["kind"] != "refused"],
    ids=lambda row: f"{row['endpoint']}:{row['field']}",
)
def test_migration_table_accepted_request_field_is_accepted(row):
    # given a field the table says is accepted, or an alias of one
    serializer = INPUT_SERIALIZERS[row["endpoint"]](data=nested(row["field"], row["example"]))

    # when the input serializer validates a body with it
    valid = serializer.is_valid()

    # then it is valid; an alias lands on this product's field with the same value
    assert valid, serializer.errors
    if row["kind"] == "alias":
        assert resolve(serializer.validated_data, row["here"]) == row["example"]
        assert resolve(serializer.validated_data, row["field"]) is MISSING


@pytest.mark.parametrize(
    "row",
    [row for row in REQUEST_ROWS if row["kind"] == "refused"],
    ids=lambda row: f"{row['endpoint']}:{row['field']}",
)
def test_migration_table_refused_request_field_is_400(superuser, due_retry, row):
    # given a field the table says is refused, and a user allowed to call every endpoint
    client = client_for(superuser)
    before = closure_counts()
    field = row["field"].partition("=")[0]

    # when a reference client sends it
    if row["endpoint"].startswith("GET "):
        response = client.get(url_of(row["endpoint"]), {field: row["example"]})
        code = "unknown_query_parameter"
    else:
        response = client.post(url_of(row["endpoint"]), {field: row["example"]}, format="json")
        code = "reference_field_unsupported"

    # then it is a 400 with the table's code, naming the field, and nothing was written
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert field in response.json()["detail"]
    assert closure_counts() == before


@pytest.fixture
def scenario(api, superuser, receiver, due_retry):
    """The reference client's calls, in order, with the bodies it sends (refused fields
    left out): plan, live run, closure; then readiness and the runbook export."""
    receiver.expect_request("/hook", method="POST").respond_with_data("ok", status=200)
    auditor_client = client_for(superuser)
    responses = {
        "POST A/retry-plan": api.post(
            f"{A}/retry-plan", {"retry_policy": REFERENCE_POLICY}, format="json"
        ),
        "POST A/retry-worker-run": api.post(
            f"{A}/retry-worker-run",
            {
                "execute": True,
                "retry_policy": REFERENCE_POLICY,
                "schedule": {"schedule_interval_minutes": 30, "enabled": True},
                "max_retry_deliveries": 5,
                "timeout_seconds": 10.0,
            },
            format="json",
        ),
        "GET B/final-reporting-closure-dashboard": api.get(
            f"{B}/final-reporting-closure-dashboard"
        ),
        "GET B/final-reporting-release-readiness": auditor_client.get(
            f"{B}/final-reporting-release-readiness"
        ),
        "POST B/final-reporting-operator-runbook-export": auditor_client.post(
            f"{B}/final-reporting-operator-runbook-export", {}, format="json"
        ),
    }
    for endpoint, response in responses.items():
        assert response.status_code in (200, 201), (endpoint, response.content)
    return {endpoint: response.json() for endpoint, response in responses.items()}


def test_migration_table_response_fields_match_real_responses(scenario):
    # given the real responses of the reference client's scenario
    # when every response row of the table is looked up in its endpoint's response
    wrong = []
    for row in RESPONSE_ROWS:
        body = scenario[row["endpoint"]]
        reference = resolve(body, row["field"])
        if row["kind"] in {"same", "added"} and reference is MISSING:
            wrong.append(f"{row['endpoint']} {row['field']}: missing")
        if row["kind"] in {"renamed", "absent"} and reference is not MISSING:
            wrong.append(f"{row['endpoint']} {row['field']}: present, table says {row['kind']}")
        if row["kind"] == "renamed" and resolve(body, row["here"]) is MISSING:
            wrong.append(f"{row['endpoint']} {row['here']}: missing")

    # then each is where the table says
    assert wrong == []


def test_reference_scenario_replays_plan_live_run_and_closure(api, receiver, due_retry):
    # given a failed delivery to a live receiver whose retry is due
    receiver.expect_request("/hook", method="POST").respond_with_data("ok", status=200)
    delivery = AlertDelivery.objects.get()

    # when the reference client plans with its policy spelling
    plan_response = api.post(f"{A}/retry-plan", {"retry_policy": REFERENCE_POLICY}, format="json")

    # then it reads the plan it knows
    assert plan_response.status_code == 201, plan_response.content
    plan = plan_response.json()["plan"]
    assert plan["retry_plan_id"].startswith("gordackexechealthalertretry-")
    assert plan["schema_version"] == (
        "cavra.go-backend-pilot.rollback-drill-executive-health-alert-delivery-retry-plan.v1"
    )
    assert (plan["alert_level"], plan["retryable_count"], plan["decision_count"]) == (
        "critical",
        1,
        1,
    )
    assert plan["retry_policy"] == {
        "max_retry_attempts": 3,
        "retry_delay_minutes": 15,
        "backoff_multiplier": 2.0,
        "allow_immediate_retry": False,
        "max_delay_minutes": 1440,
    }
    assert plan["controls"]
    assert plan_response.json()["metadata"]["metadata_kind"] == MetadataKind.RETRY_PLAN
    assert [d["delivery_id"] for d in plan["retry_decisions"]] == [delivery.delivery_id]

    # when it starts a live run with its body (schedule alias, float timeout)
    run_response = api.post(
        f"{A}/retry-worker-run",
        {
            "execute": True,
            "retry_policy": REFERENCE_POLICY,
            "schedule": {"schedule_interval_minutes": 30, "enabled": True},
            "max_retry_deliveries": 5,
            "timeout_seconds": 10.0,
        },
        format="json",
    )

    # then the receiver got the retry once, and the client reads the run and its result
    assert run_response.status_code == 201, run_response.content
    body = run_response.json()
    assert len(receiver.log) == 1
    run = body["run"]
    assert run["dry_run"] is False
    assert run["schema_version"] == (
        "cavra.go-backend-pilot.rollback-drill-executive-health-alert-delivery-retry-worker-run.v1"
    )
    assert run["schedule"] == {"interval_minutes": 30, "enabled": True}
    assert run["parameters"]["timeout_seconds"] == 10
    assert run["summary"]["retry_plan_count"] == 1
    assert run["summary"]["selected_retry_count"] == 1
    assert run["summary"]["delivered_count"] == 1
    assert run["controls"]
    record = ExecutionRecord.objects.get(worker_run__run_id=run["run_id"])
    assert run["follow_up_actions"] == [
        {
            "action": "retry",
            "provider": "ops-webhook",
            "health_id": delivery.alert.health.health_id,
            "alert_id": delivery.alert.alert_id,
            "delivery_id": delivery.delivery_id,
            "reason": "retry_due",
            "execution_state": "delivered",
        }
    ]
    [result] = body["retry_results"]
    assert result["execution_record"]["execution_id"] == record.execution_id
    assert result["execution_record"]["execution_status"] == "delivered"
    assert result["execution_metadata"]["metadata_kind"] == MetadataKind.EXECUTION_RECORD
    stored = Evidence.objects.get(
        metadata_kind=MetadataKind.EXECUTION_RECORD, session_id=record.execution_id
    )
    assert result["execution_metadata"] == json.loads(json.dumps(evidence_envelope(stored)))
    assert result["skipped"] is None
    assert body["retry_metadata"]["session_id"] == run["retry_plan_id"]
    assert WorkerRun.objects.get().run_id == run["run_id"]
    delivery.refresh_from_db()
    assert delivery.status == "delivered"

    # when it reads the closure dashboard
    closure = api.get(f"{B}/final-reporting-closure-dashboard")

    # then it reads the product, the state and the open items it knows
    assert closure.status_code == 200
    dashboard = closure.json()
    assert dashboard["schema_version"] == (
        "cavra.go-backend-pilot.rollback-drill-final-reporting-closure-dashboard.v1"
    )
    assert dashboard["product"] == "CAVRA"
    assert dashboard["closure_state"] == "open"
    assert dashboard["open_items"] == ["executive_retry_health_alert_acknowledgement_outstanding"]
    assert dashboard["open_item_count"] == 1


def test_dry_run_without_a_plan_counts_no_plan_and_would_send(api, receiver, due_retry):
    # given a due retry
    before = closure_counts()

    # when a dry run previews it without naming a plan
    response = api.post(f"{A}/retry-worker-run", {}, format="json")

    # then no plan is stored or counted, nothing is sent, the follow-up says what would happen
    assert response.status_code == 201, response.content
    run = response.json()["run"]
    assert run["summary"]["retry_plan_count"] == 0
    assert [a["execution_state"] for a in run["follow_up_actions"]] == ["would_send"]
    assert response.json()["retry_results"][0]["execution_metadata"] is None
    assert RetryPlan.objects.count() == before["RetryPlan"]
    assert receiver.log == []


@pytest.mark.parametrize(
    ("policy", "field", "name"),
    [
        ({"max_retries": 4, "max_retry_attempts": 5}, "max_retries", "max_retry_attempts"),
        ({"delay_minutes": 5, "retry_delay_minutes": 6}, "delay_minutes", "retry_delay_minutes"),
        ({"multiplier": 2.0, "backoff_multiplier": 3.0}, "multiplier", "backoff_multiplier"),
    ],
)
def test_retry_plan_both_spellings_with_different_values_is_400_naming_both(
    api, due_retry, policy, field, name
):
    # given both spellings of one policy field, with different values
    before = closure_counts()

    # when a plan is asked for
    response = api.post(f"{A}/retry-plan", {"retry_policy": policy}, format="json")

    # then it is refused naming both, and nothing is written
    message = f"{field} and {name} are the same field with different values: send {name}."
    assert_invalid(
        response, {f"retry_policy.{field}": [message], f"retry_policy.{name}": [message]}
    )
    assert closure_counts() == before


def test_retry_plan_both_spellings_with_the_same_value_is_one_field(api, due_retry):
    # when both spellings carry the same value
    response = api.post(
        f"{A}/retry-plan",
        {"retry_policy": {"max_retries": 4, "max_retry_attempts": 4}},
        format="json",
    )

    # then it is that value
    assert response.status_code == 201, response.content
    assert response.json()["plan"]["retry_policy"]["max_retry_attempts"] == 4
    assert RetryPlan.objects.latest("id").policy["max_retry_attempts"] == 4


@pytest.mark.parametrize(
    ("timeout", "seconds"), [(0.1, 1), (10.0, 10), (1, 1), (29.01, 30), (30, 30)]
)
def test_worker_run_float_timeout_is_rounded_up_to_whole_seconds(timeout, seconds):
    # when a timeout is sent as a reference client sends it
    serializer = inputs.WorkerRunInputSerializer(data={"timeout_seconds": timeout})

    # then it is whole seconds, rounded up
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["timeout_seconds"] == seconds


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        (30.5, "Ensure this value is less than or equal to 30."),
        (0, "Ensure this value is greater than or equal to 1."),
        (-0.5, "Ensure this value is greater than or equal to 1."),
        ("10", "A valid integer is required."),
    ],
)
def test_worker_run_timeout_outside_the_range_once_rounded_is_400(
    api, due_retry, receiver, timeout, message
):
    # given a timeout that is out of range once rounded up (or not a number)
    before = closure_counts()

    # when a run is asked for with it
    response = api.post(f"{A}/retry-worker-run", {"timeout_seconds": timeout}, format="json")

    # then it is refused and nothing runs
    assert_invalid(response, {"timeout_seconds": [message]})
    assert closure_counts() == before
    assert receiver.log == []


def test_worker_run_infinite_timeout_is_invalid():
    # when a timeout is infinite (a JSON number too large for a float)
    serializer = inputs.WorkerRunInputSerializer(data={"timeout_seconds": float("inf")})

    # then it is refused
    assert not serializer.is_valid()
    assert serializer.errors == {"timeout_seconds": ["Must be a finite number."]}


def test_retry_plan_generated_by_is_refused_with_what_to_send_instead(api, due_retry):
    # given a reference body naming its actor
    before = closure_counts()

    # when it is sent
    response = api.post(
        f"{A}/retry-plan", {"generated_by": "console", "retry_policy": {}}, format="json"
    )

    # then the refusal says the actor is the authenticated user, and nothing is written
    message = (
        "The actor is the authenticated user: send no generated_by; authenticate with your "
        "own token (Authorization: Bearer …) instead."
    )
    assert_problem(
        response,
        status=400,
        code="reference_field_unsupported",
        title="Reference field not supported",
        detail=f"generated_by: {message}",
        errors={"generated_by": [message]},
    )
    assert closure_counts() == before


@pytest.mark.parametrize(
    "body",
    [
        {"dry_run": False},
        {"dry_run": False, "execute": False},
        {"dry_run": False, "max_retry_deliveries": 5},
    ],
)
def test_worker_run_dry_run_false_alone_is_refused_and_sends_nothing(
    api, receiver, due_retry, body
):
    # given the reference's live switch without execute
    before = closure_counts()

    # when it is sent
    response = api.post(f"{A}/retry-worker-run", body, format="json")

    # then it is refused with the reference code, the field error kept, and nothing runs
    assert_problem(
        response,
        status=400,
        code="reference_field_unsupported",
        title="Reference field not supported",
        detail=inputs.LIVE_RUN_NEEDS_EXECUTE,
        errors={
            "dry_run": [
                "Contradicts execute: a live run needs execute=true (and dry_run false or "
                "absent); a dry run needs execute false or absent."
            ]
        },
    )
    assert receiver.log == []
    assert closure_counts() == before
