"""Bad input on every POST endpoint: an exact RFC 9457 problem, and nothing written.

Each test compares the row counts of every closure model (Evidence included) before and after
the refused request, so a validation that runs after a write would fail here.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from closure.models import AlertDelivery, DeliveryEvent, Evidence
from tests.conftest import A, R, assert_invalid, assert_problem, closure_counts
from tests.factories import (
    event_body,
    make_alert,
    make_delivery,
)

pytestmark = pytest.mark.django_db

UNKNOWN_HEALTH_ID = "gordackexecdeliveryhealth-ffffffffffffffff"
UNKNOWN_PLAN_ID = "gordackexechealthalertretry-ffffffffffffffff"
UNKNOWN_DELIVERY_ID = "gordackexechealthalertdelivery-ffffffffffffffff"

POST_ENDPOINTS = [
    "delivery-events",
    "delivery-retry-health",
    "deliver",
    "acknowledgements",
    "waive",
    "retry",
    "retry-plan",
    "retry-worker-run",
]


def post_url(endpoint: str, *, health_id: str = "", delivery_id: str = "") -> str:
    return {
        "delivery-events": f"{R}/delivery-events",
        "delivery-retry-health": f"{R}/delivery-retry-health",
        "deliver": f"{A}/deliver",
        "acknowledgements": f"{A}/{health_id}/acknowledgements",
        "waive": f"{A}/deliveries/{delivery_id}/waive",
        "retry": f"{A}/deliveries/{delivery_id}/retry",
        "retry-plan": f"{A}/retry-plan",
        "retry-worker-run": f"{A}/retry-worker-run",
    }[endpoint]


@pytest.fixture
def urls(report, failed_delivery):
    """Every POST endpoint, with real IDs in its path (a failed delivery of a critical report)."""
    return {
        endpoint: post_url(
            endpoint, health_id=report.health_id, delivery_id=failed_delivery.delivery_id
        )
        for endpoint in POST_ENDPOINTS
    }


def _event(*, status: str = "failed", **fields) -> dict:
    return event_body(kind="report_delivery", status=status, provider="slack-exec", **fields)


# -- the body itself --------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", POST_ENDPOINTS)
def test_post_endpoints_malformed_json_is_400_and_writes_nothing(api, urls, endpoint):
    # given the records every endpoint could touch
    before = closure_counts()

    # when the body is not valid JSON
    response = api.post(urls[endpoint], data='{"x": ', content_type="application/json")

    # then a malformed-request problem, and nothing was written
    assert_problem(
        response,
        status=400,
        code="malformed_request",
        title="Malformed request body",
        detail="JSON parse error - Expecting value: line 1 column 7 (char 6)",
    )
    assert closure_counts() == before


@pytest.mark.parametrize("endpoint", POST_ENDPOINTS)
def test_post_endpoints_nan_is_malformed_json(api, urls, endpoint):
    # given the records every endpoint could touch
    before = closure_counts()

    # when the body carries NaN, which JSON does not allow
    response = api.post(urls[endpoint], data='{"x": NaN}', content_type="application/json")

    # then it is refused as malformed, not parsed as a float
    assert_problem(
        response,
        status=400,
        code="malformed_request",
        title="Malformed request body",
        detail="JSON parse error - Out of range float values are not JSON compliant: 'NaN'",
    )
    assert closure_counts() == before


@pytest.mark.parametrize("endpoint", POST_ENDPOINTS)
@pytest.mark.parametrize(
    ("raw_body", "message"),
    [
        ("[]", "Expected a JSON object."),
        ('[{"reason": "x"}]', "Expected a JSON object."),
        ('"retry"', "Expected a JSON object."),
        ("42", "Expected a JSON object."),
        ("true", "Expected a JSON object."),
        ("null", "No data provided"),
    ],
)
def test_post_endpoints_body_not_an_object_is_400(api, urls, endpoint, raw_body, message):
    # given the records every endpoint could touch
    before = closure_counts()

    # when the JSON body is not an object
    response = api.post(urls[endpoint], data=raw_body, content_type="application/json")

    # then the whole body is named as the bad field, and nothing was written
    assert_invalid(response, {"body": [message]})
    assert closure_counts() == before


@pytest.mark.parametrize("endpoint", POST_ENDPOINTS)
def test_post_endpoints_unknown_field_is_400(api, urls, endpoint):
    # given the records every endpoint could touch
    before = closure_counts()

    # when the body carries a field the endpoint does not know
    response = api.post(urls[endpoint], {"bogus": 1, "also_bogus": "x"}, format="json")

    # then each unknown field is named, and nothing was written
    assert_invalid(response, {"also_bogus": ["Unknown field."], "bogus": ["Unknown field."]})
    assert closure_counts() == before


@pytest.mark.parametrize(
    ("endpoint", "body", "path"),
    [
        ("retry-plan", {"retry_policy": {"bogus": 1}}, "retry_policy.bogus"),
        ("retry-worker-run", {"retry_policy": {"bogus": 1}}, "retry_policy.bogus"),
        ("retry-worker-run", {"schedule": {"cron": "*/5 * * * *"}}, "schedule.cron"),
        ("delivery-events", {"events": [_event(bogus=1)]}, "events.0.bogus"),
    ],
)
def test_post_endpoints_nested_unknown_field_is_400_with_dotted_path(
    api, urls, endpoint, body, path
):
    # given the records every endpoint could touch
    before = closure_counts()

    # when a nested object carries an unknown field
    response = api.post(urls[endpoint], body, format="json")

    # then the field is named by its dotted path, and nothing was written
    assert_invalid(response, {path: ["Unknown field."]})
    assert closure_counts() == before


# -- types and ranges -------------------------------------------------------------------------

INTEGER = "A valid integer is required."
NUMBER = "A valid number is required."
BOOLEAN = "Must be true or false."
STRING = "Must be a string."


@pytest.mark.parametrize(
    ("endpoint", "body", "path", "message"),
    [
        (
            "retry-plan",
            {"retry_policy": {"max_retry_attempts": "3"}},
            "retry_policy.max_retry_attempts",
            INTEGER,
        ),
        (
            "retry-plan",
            {"retry_policy": {"max_retry_attempts": 2.5}},
            "retry_policy.max_retry_attempts",
            INTEGER,
        ),
        (
            "retry-plan",
            {"retry_policy": {"max_retry_attempts": True}},
            "retry_policy.max_retry_attempts",
            INTEGER,
        ),
        (
            "retry-plan",
            {"retry_policy": {"retry_delay_minutes": "15"}},
            "retry_policy.retry_delay_minutes",
            NUMBER,
        ),
        (
            "retry-plan",
            {"retry_policy": {"backoff_multiplier": "2.0"}},
            "retry_policy.backoff_multiplier",
            NUMBER,
        ),
        (
            "retry-plan",
            {"retry_policy": {"allow_immediate_retry": "true"}},
            "retry_policy.allow_immediate_retry",
            BOOLEAN,
        ),
        (
            "retry-plan",
            {"retry_policy": {"allow_immediate_retry": 1}},
            "retry_policy.allow_immediate_retry",
            BOOLEAN,
        ),
        ("retry-plan", {"retry_policy": "defaults"}, "retry_policy", "Expected a JSON object."),
        ("retry-plan", {"provider": ["exec-webhook"]}, "provider", STRING),
        ("retry-plan", {"health_id": 7}, "health_id", STRING),
        ("retry-worker-run", {"execute": "true"}, "execute", BOOLEAN),
        ("retry-worker-run", {"dry_run": 0}, "dry_run", BOOLEAN),
        ("retry-worker-run", {"max_retry_deliveries": "3"}, "max_retry_deliveries", INTEGER),
        ("retry-worker-run", {"timeout_seconds": "10"}, "timeout_seconds", INTEGER),
        ("retry-worker-run", {"retry_plan_id": 5}, "retry_plan_id", STRING),
        ("retry-worker-run", {"schedule": {"enabled": "yes"}}, "schedule.enabled", BOOLEAN),
        (
            "retry-worker-run",
            {"schedule": {"interval_minutes": "60"}},
            "schedule.interval_minutes",
            INTEGER,
        ),
        ("deliver", {"force": "true"}, "force", BOOLEAN),
        ("deliver", {"provider": ["exec-webhook"]}, "provider", STRING),
        ("deliver", {"suppression_window_minutes": "60"}, "suppression_window_minutes", INTEGER),
        (
            "delivery-retry-health",
            {"expected_interval_minutes": "60"},
            "expected_interval_minutes",
            INTEGER,
        ),
        (
            "delivery-retry-health",
            {"stale_metadata_minutes": 180.5},
            "stale_metadata_minutes",
            INTEGER,
        ),
        ("acknowledgements", {"provider": 1}, "provider", STRING),
        ("acknowledgements", {"provider": "exec-webhook", "notes": 5}, "notes", STRING),
        (
            "acknowledgements",
            {"provider": "exec-webhook", "acknowledgement_state": "ack"},
            "acknowledgement_state",
            '"ack" is not a valid choice.',
        ),
        ("waive", {"reason": 5}, "reason", STRING),
        ("retry", {"timeout_seconds": "5"}, "timeout_seconds", INTEGER),
        (
            "delivery-events",
            {"events": {"event_id": "e-1"}},
            "events",
            'Expected a list of items but got type "dict".',
        ),
        (
            "delivery-events",
            {"events": [_event(schedule_enabled="true")]},
            "events.0.schedule_enabled",
            BOOLEAN,
        ),
        ("delivery-events", {"events": [_event(event_id=12)]}, "events.0.event_id", STRING),
        (
            "delivery-events",
            {"events": [_event(details=["not", "an", "object"])]},
            "events.0.details",
            'Expected a dictionary of items but got type "list".',
        ),
        (
            "delivery-events",
            {"events": [{**_event(), "occurred_at": 1700000000}]},
            "events.0.occurred_at",
            "Datetime has wrong format. Use one of these formats instead: ISO 8601.",
        ),
    ],
)
def test_post_endpoints_wrong_json_type_is_400_and_not_coerced(
    api, urls, endpoint, body, path, message
):
    # given the records every endpoint could touch
    before = closure_counts()

    # when a field has the wrong JSON type ("3" for an integer, "true" for a boolean, …)
    response = api.post(urls[endpoint], body, format="json")

    # then the field is named with its message, and nothing was written
    assert_invalid(response, {path: [message]})
    assert closure_counts() == before


def at_least(limit) -> str:
    return f"Ensure this value is greater than or equal to {limit}."


def at_most(limit) -> str:
    return f"Ensure this value is less than or equal to {limit}."


IMMEDIATE = "Must be at least 1 unless allow_immediate_retry is true."


@pytest.mark.parametrize(
    ("endpoint", "body", "path", "message"),
    [
        (
            "retry-plan",
            {"retry_policy": {"max_retry_attempts": 0}},
            "retry_policy.max_retry_attempts",
            at_least(1),
        ),
        (
            "retry-plan",
            {"retry_policy": {"max_retry_attempts": 51}},
            "retry_policy.max_retry_attempts",
            at_most(50),
        ),
        (
            "retry-plan",
            {"retry_policy": {"backoff_multiplier": 0.5}},
            "retry_policy.backoff_multiplier",
            at_least(1.0),
        ),
        (
            "retry-plan",
            {"retry_policy": {"retry_delay_minutes": -1}},
            "retry_policy.retry_delay_minutes",
            at_least(0),
        ),
        (
            "retry-plan",
            {"retry_policy": {"retry_delay_minutes": 0}},
            "retry_policy.retry_delay_minutes",
            IMMEDIATE,
        ),
        (
            "retry-plan",
            {"retry_policy": {"retry_delay_minutes": 0.5, "allow_immediate_retry": False}},
            "retry_policy.retry_delay_minutes",
            IMMEDIATE,
        ),
        (
            "retry-plan",
            {"retry_policy": {"retry_delay_minutes": 30, "max_delay_minutes": 10}},
            "retry_policy.max_delay_minutes",
            "Must not be less than retry_delay_minutes.",
        ),
        (
            "retry-worker-run",
            {"retry_policy": {"max_retry_attempts": 0}},
            "retry_policy.max_retry_attempts",
            at_least(1),
        ),
        (
            "retry-worker-run",
            {"retry_policy": {"retry_delay_minutes": 0}},
            "retry_policy.retry_delay_minutes",
            IMMEDIATE,
        ),
        ("retry-worker-run", {"max_retry_deliveries": 0}, "max_retry_deliveries", at_least(1)),
        ("retry-worker-run", {"max_retry_deliveries": 501}, "max_retry_deliveries", at_most(500)),
        ("retry-worker-run", {"timeout_seconds": 0}, "timeout_seconds", at_least(1)),
        ("retry-worker-run", {"timeout_seconds": 31}, "timeout_seconds", at_most(30)),
        (
            "retry-worker-run",
            {"schedule": {"interval_minutes": 0}},
            "schedule.interval_minutes",
            at_least(1),
        ),
        ("retry", {"timeout_seconds": 31}, "timeout_seconds", at_most(30)),
        ("deliver", {"suppression_window_minutes": -1}, "suppression_window_minutes", at_least(0)),
        (
            "delivery-retry-health",
            {"expected_interval_minutes": 0},
            "expected_interval_minutes",
            at_least(1),
        ),
        (
            "delivery-retry-health",
            {"stale_metadata_minutes": 43201},
            "stale_metadata_minutes",
            at_most(43200),
        ),
    ],
)
def test_post_endpoints_out_of_range_number_is_400(api, urls, endpoint, body, path, message):
    # given the records every endpoint could touch
    before = closure_counts()

    # when a number is outside its range
    response = api.post(urls[endpoint], body, format="json")

    # then the field is named by its dotted path, and nothing was written
    assert_invalid(response, {path: [message]})
    assert closure_counts() == before


def test_retry_plan_several_bad_fields_are_all_named(api, urls):
    # given the records the planner could touch
    before = closure_counts()

    # when two policy fields are wrong at once
    response = api.post(
        urls["retry-plan"],
        {"retry_policy": {"max_retry_attempts": 0, "backoff_multiplier": "x"}},
        format="json",
    )

    # then both are named
    assert_invalid(
        response,
        {
            "retry_policy.max_retry_attempts": [at_least(1)],
            "retry_policy.backoff_multiplier": [NUMBER],
        },
    )
    assert closure_counts() == before


def test_retry_plan_zero_delay_is_accepted_with_allow_immediate_retry(api, urls, failed_delivery):
    # given a failed delivery
    # when the policy asks for immediate retries explicitly
    response = api.post(
        urls["retry-plan"],
        {"retry_policy": {"retry_delay_minutes": 0, "allow_immediate_retry": True}},
        format="json",
    )

    # then the same zero delay that is refused without the flag is planned
    assert response.status_code == 201, response.json()
    plan = response.json()["plan"]
    assert plan["retry_policy"]["retry_delay_minutes"] == 0
    assert plan["retry_policy"]["allow_immediate_retry"] is True
    [decision] = plan["retry_decisions"]
    assert decision["delivery_id"] == failed_delivery.delivery_id
    assert decision["action"] == "retry"
    assert decision["retry_delay_minutes"] == 0


# -- references to records that do not exist --------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body", "detail"),
    [
        ("deliver", {"provider": "nope"}, "unknown provider: nope"),
        ("deliver", {"provider": "exec-webhook,nope,gone"}, "unknown provider: nope, gone"),
        ("acknowledgements", {"provider": "nope"}, "unknown provider: nope"),
        ("retry-plan", {"provider": "nope"}, "unknown provider: nope"),
        ("retry-plan", {"provider": "exec-webhook,nope"}, "unknown provider: nope"),
        ("retry-worker-run", {"provider": "nope"}, "unknown provider: nope"),
        ("retry-worker-run", {"provider": "nope", "execute": True}, "unknown provider: nope"),
    ],
)
def test_post_endpoints_unknown_provider_is_400_naming_provider(api, urls, endpoint, body, detail):
    # given one connector, exec-webhook, with a failed delivery
    before = closure_counts()

    # when a request names connectors that do not exist
    response = api.post(urls[endpoint], body, format="json")

    # then each unknown name is listed under `provider`, and nothing was written
    unknown = detail.removeprefix("unknown provider: ").split(", ")
    assert_problem(
        response,
        status=400,
        code="unknown_provider",
        title="Invalid input",
        detail=detail,
        errors={"provider": [f"Unknown connector: {name}." for name in unknown]},
    )
    assert closure_counts() == before


@pytest.mark.parametrize(
    ("endpoint", "body", "detail"),
    [
        (
            "deliver",
            {"health_id": UNKNOWN_HEALTH_ID},
            f"health report {UNKNOWN_HEALTH_ID!r} does not exist",
        ),
        (
            "acknowledgements",
            {"provider": "exec-webhook"},
            f"health report {UNKNOWN_HEALTH_ID!r} does not exist",
        ),
        (
            "retry-plan",
            {"health_id": UNKNOWN_HEALTH_ID},
            f"health report {UNKNOWN_HEALTH_ID!r} does not exist",
        ),
        (
            "retry-worker-run",
            {"retry_plan_id": UNKNOWN_PLAN_ID},
            f"retry plan {UNKNOWN_PLAN_ID!r} does not exist",
        ),
        (
            "retry-worker-run",
            {"retry_plan_id": UNKNOWN_PLAN_ID, "execute": True},
            f"retry plan {UNKNOWN_PLAN_ID!r} does not exist",
        ),
        (
            "waive",
            {"reason": "covered by phone"},
            f"delivery {UNKNOWN_DELIVERY_ID!r} does not exist",
        ),
        ("retry", {}, f"delivery {UNKNOWN_DELIVERY_ID!r} does not exist"),
    ],
)
def test_post_endpoints_unknown_id_is_404(api, failed_delivery, endpoint, body, detail):
    # given a report, a connector and a failed delivery that the IDs below do not name
    before = closure_counts()
    url = post_url(endpoint, health_id=UNKNOWN_HEALTH_ID, delivery_id=UNKNOWN_DELIVERY_ID)

    # when the request names a record that does not exist
    response = api.post(url, body, format="json")

    # then a not-found problem, and nothing was written
    assert_problem(response, status=404, code="not_found", title="Not found", detail=detail)
    assert closure_counts() == before


def test_deliver_without_any_health_report_is_404(api, offline_webhook):
    # given no health report at all
    before = closure_counts()

    # when the alert of "the latest report" is sent
    response = api.post(f"{A}/deliver", {}, format="json")

    # then a not-found problem with its own code
    assert_problem(
        response,
        status=404,
        code="no_health_report",
        title="Not found",
        detail="no health report has been built yet",
    )
    assert closure_counts() == before


# -- the delivery-event batch -----------------------------------------------------------------


def test_delivery_events_batch_of_1001_is_400_on_events(api):
    # given an empty event store
    before = closure_counts()
    events = [_event(event_id=f"big-{n:04d}") for n in range(1001)]

    # when one more event than a batch may hold is sent
    response = api.post(f"{R}/delivery-events", {"events": events}, format="json")

    # then the batch is refused as a whole
    assert_invalid(response, {"events": ["Ensure this field has no more than 1000 elements."]})
    assert closure_counts() == before


def test_delivery_events_batch_of_1000_is_accepted(api):
    # given an empty event store
    events = [_event(event_id=f"big-{n:04d}") for n in range(1000)]

    # when exactly the largest batch is sent
    response = api.post(f"{R}/delivery-events", {"events": events}, format="json")

    # then every event is stored, with one evidence row for the batch
    assert response.status_code == 201, response.json()
    assert (response.json()["created"], response.json()["duplicates"]) == (1000, 0)
    assert DeliveryEvent.objects.count() == 1000
    assert Evidence.objects.count() == 1


def test_delivery_events_empty_batch_is_400(api):
    before = closure_counts()

    response = api.post(f"{R}/delivery-events", {"events": []}, format="json")

    assert_invalid(response, {"events": ["This list may not be empty."]})
    assert closure_counts() == before


def test_delivery_events_one_naive_timestamp_rejects_the_whole_batch(api):
    # given a batch whose fourth event has a timestamp without a zone
    events = [_event(event_id=f"batch-{n}") for n in range(5)]
    events[3]["occurred_at"] = "2026-01-15T10:00:00"
    before = closure_counts()

    # when it is sent
    response = api.post(f"{R}/delivery-events", {"events": events}, format="json")

    # then the bad event is named by its index, and not even the valid ones are stored
    assert_invalid(response, {"events.3.occurred_at": ["Give a time zone (Z or +hh:mm)."]})
    assert closure_counts() == before
    assert not DeliveryEvent.objects.filter(event_id__startswith="batch-").exists()


def test_delivery_events_each_bad_event_is_named_by_its_index(api):
    # given a batch with three different mistakes in two events
    events = [_event(event_id=f"batch-{n}") for n in range(5)]
    events[1]["kind"] = "report_sent"
    del events[4]["event_id"]
    events[4]["occurred_at"] = "2026-01-15 10:00:00"
    before = closure_counts()

    # when it is sent
    response = api.post(f"{R}/delivery-events", {"events": events}, format="json")

    # then every bad field of every bad event is listed under its index
    assert_invalid(
        response,
        {
            "events.1.kind": ['"report_sent" is not a valid choice.'],
            "events.4.event_id": ["This field is required."],
            "events.4.occurred_at": ["Give a time zone (Z or +hh:mm)."],
        },
    )
    assert closure_counts() == before


def test_delivery_events_status_not_allowed_for_kind_is_400(api):
    before = closure_counts()

    response = api.post(
        f"{R}/delivery-events",
        {"events": [_event(event_id="ok-1"), _event(event_id="bad-1", status="succeeded")]},
        format="json",
    )

    assert_invalid(
        response,
        {"events.1.status": ["A report_delivery event is one of: delivered, failed, skipped."]},
    )
    assert closure_counts() == before


def test_delivery_events_oversized_details_is_400(api):
    before = closure_counts()

    response = api.post(
        f"{R}/delivery-events",
        {"events": [_event(event_id="big-details", details={"note": "x" * 4100})]},
        format="json",
    )

    assert_invalid(response, {"events.0.details": ["At most 4096 bytes of JSON."]})
    assert closure_counts() == before


def test_delivery_events_same_id_with_other_body_is_409(api):
    # given a stored event
    first = _event(event_id="evt-conflict", run_id="drill-1")
    assert api.post(f"{R}/delivery-events", {"events": [first]}, format="json").status_code == 201
    before = closure_counts()

    # when the same event_id comes back with another status, next to a new event
    changed = {**first, "status": "delivered"}
    response = api.post(
        f"{R}/delivery-events",
        {"events": [_event(event_id="evt-new"), changed]},
        format="json",
    )

    # then a conflict naming the event by its index; the new event is not stored either
    assert_problem(
        response,
        status=409,
        code="event_conflict",
        title="Conflict",
        detail="some events repeat a stored event_id with a different body",
        errors={
            "events.1.event_id": ["event 'evt-conflict' was already given with a different body"]
        },
    )
    assert closure_counts() == before
    assert DeliveryEvent.objects.get(event_id="evt-conflict").status == "failed"


def test_delivery_events_same_id_with_other_body_inside_one_batch_is_409(api):
    before = closure_counts()
    event = _event(event_id="evt-twice")

    response = api.post(
        f"{R}/delivery-events",
        {"events": [event, {**event, "provider": "teams-exec"}]},
        format="json",
    )

    assert_problem(
        response,
        status=409,
        code="event_conflict",
        title="Conflict",
        detail="some events repeat a stored event_id with a different body",
        errors={"events.1.event_id": ["event 'evt-twice' was already given with a different body"]},
    )
    assert closure_counts() == before


def test_delivery_events_same_body_repeat_is_a_duplicate_not_stored_twice(api, operator):
    # given a stored event
    event = _event(event_id="evt-repeat", run_id="drill-2")
    assert api.post(f"{R}/delivery-events", {"events": [event]}, format="json").status_code == 201
    before = closure_counts()

    # when the very same event is sent again, its time written with another zone notation
    repeat = {**event, "occurred_at": event["occurred_at"].replace("Z", "+00:00")}
    response = api.post(f"{R}/delivery-events", {"events": [repeat]}, format="json")

    # then it is accepted as a duplicate and nothing is written, not even evidence
    assert response.status_code == 200
    assert response.json() == {
        "created": 0,
        "duplicates": 1,
        "actor": {"username": "olivia", "user_id": operator.pk, "authentication": "session"},
    }
    assert closure_counts() == before


def test_delivery_events_repeat_next_to_new_event_stores_only_the_new_one(api):
    # given a stored event
    event = _event(event_id="evt-old")
    api.post(f"{R}/delivery-events", {"events": [event]}, format="json")

    # when it is repeated in a batch with a new event (and the new one twice)
    new = _event(event_id="evt-fresh")
    response = api.post(f"{R}/delivery-events", {"events": [event, new, new]}, format="json")

    # then only the new event is stored, once
    assert response.status_code == 201
    assert (response.json()["created"], response.json()["duplicates"]) == (1, 2)
    assert sorted(DeliveryEvent.objects.values_list("event_id", flat=True)) == [
        "evt-fresh",
        "evt-old",
    ]
    assert Evidence.objects.count() == 2


# -- waivers and manual retries ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "This field is required."),
        ({"reason": ""}, "This field may not be blank."),
        ({"reason": "   "}, "This field may not be blank."),
        ({"reason": None}, "This field may not be null."),
    ],
)
def test_waive_without_reason_is_400(api, urls, failed_delivery, body, message):
    # given a failed delivery
    before = closure_counts()

    # when it is waived without a reason
    response = api.post(urls["waive"], body, format="json")

    # then the reason is required, and the delivery stays failed
    assert_invalid(response, {"reason": [message]})
    assert closure_counts() == before
    failed_delivery.refresh_from_db()
    assert (failed_delivery.status, failed_delivery.suppression_reason) == ("failed", "")


@pytest.mark.parametrize(("action", "verb"), [("waive", "waived"), ("retry", "retried")])
@pytest.mark.parametrize("status", ["delivered", "suppressed", "pending"])
def test_waive_or_retry_of_unrecoverable_delivery_is_409(
    api, operator, report, offline_webhook, action, verb, status
):
    # given a delivery that is not failed or exhausted
    alert = make_alert(report=report, actor=operator)
    delivery = make_delivery(alert=alert, connector=offline_webhook, status=status)
    before = closure_counts()

    # when an operator waives or retries it
    body = {"reason": "covered by phone"} if action == "waive" else {}
    response = api.post(post_url(action, delivery_id=delivery.delivery_id), body, format="json")

    # then a conflict, and the delivery is unchanged
    assert_problem(
        response,
        status=409,
        code="delivery_not_recoverable",
        title="Conflict",
        detail=(
            f"only failed, exhausted or accepted deliveries can be {verb}; "
            f"{delivery.delivery_id} is {status}"
        ),
    )
    assert closure_counts() == before
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, delivery.lease_version) == (status, 1, 0)


@pytest.mark.parametrize("action", ["waive", "retry"])
def test_waive_or_manual_retry_while_attempt_in_flight_is_409(api, urls, failed_delivery, action):
    # given a failed delivery whose retry a worker has just claimed (lease held)
    leased_until = timezone.now() + timedelta(minutes=2)
    AlertDelivery.objects.filter(pk=failed_delivery.pk).update(
        lease_owner="gordackexechealthalertworker-0123456789abcdef",
        leased_until=leased_until,
        lease_version=1,
    )
    before = closure_counts()

    # when an operator retries or waives it by hand
    body = {"reason": "covered by phone"} if action == "waive" else {}
    response = api.post(urls[action], body, format="json")

    # then a conflict: the attempt in flight records its own outcome
    assert_problem(
        response,
        status=409,
        code="attempt_in_flight",
        title="Conflict",
        detail=f"an attempt of {failed_delivery.delivery_id} is in flight",
    )
    assert closure_counts() == before
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == "failed"
    assert failed_delivery.attempt_count == 1
    assert failed_delivery.lease_owner == "gordackexechealthalertworker-0123456789abcdef"
    assert failed_delivery.leased_until == leased_until
    assert failed_delivery.lease_version == 1


def test_manual_retry_to_disabled_connector_is_409(api, urls, failed_delivery, offline_webhook):
    # given the failed delivery's connector has been disabled
    offline_webhook.enabled = False
    offline_webhook.save(update_fields=["enabled"])
    before = closure_counts()

    # when an operator retries it by hand
    response = api.post(urls["retry"], {}, format="json")

    # then a conflict, and nothing is attempted
    assert_problem(
        response,
        status=409,
        code="connector_disabled",
        title="Conflict",
        detail="connector exec-webhook is disabled",
    )
    assert closure_counts() == before
    failed_delivery.refresh_from_db()
    assert (failed_delivery.attempt_count, failed_delivery.lease_version) == (1, 0)
