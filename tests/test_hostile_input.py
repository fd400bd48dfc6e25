"""Hostile input on every write: a 4xx problem with a stable code, never a 500, nothing written.

Deep nesting, lone surrogates, repeated keys, numbers past a float, bodies over the size limit,
times outside the accepted window, form bodies in exotic charsets, and the admin's date
hierarchy at the calendar's end. The corpus test at the end sends every hostile body to every
POST endpoint of openapi.yaml, with DEBUG on and off.
"""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
import yaml
from django.contrib import admin
from rest_framework.test import APIClient

from closure.api.parsers import MAX_JSON_DEPTH
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    ApiToken,
    DeliveryEvent,
    IdempotencyRecord,
    RetryPlan,
)
from closure.roles import AUDITORS, OPERATORS, PLATFORM_OWNERS
from tests.conftest import A, R, assert_invalid, assert_problem, client_for, closure_counts
from tests.factories import event_body, make_user

pytestmark = pytest.mark.django_db

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
EIGHT_MIB = 8 * 1024 * 1024
TOO_DEEP = f"JSON nested more than {MAX_JSON_DEPTH} levels deep."


def surrogate_detail(place: str) -> str:
    return (
        "A lone surrogate (\\ud800-\\udfff) is not Unicode text; escape a character beyond "
        f"U+FFFF as a surrogate pair. Found in {place}."
    )


def post_raw(client, url: str, text: str, **headers):
    return client.post(url, data=text.encode(), content_type="application/json", **headers)


def _event(**fields) -> dict:
    return event_body(kind="report_delivery", status="failed", provider="slack-exec", **fields)


def _nested_arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [f"{R}/delivery-events", f"{A}/retry-plan", f"{A}/retry-worker-run", f"{A}/deliver"],
)
def test_post_thousand_deep_json_is_400_too_deeply_nested_and_writes_nothing(api, url):
    # given the records every endpoint could touch
    before = closure_counts()

    # when the body nests a thousand arrays (Python's own parser fails near this depth)
    response = post_raw(api, url, '{"x": ' + _nested_arrays(1000) + "}")

    # then a problem with its own code, and nothing was written
    assert_problem(
        response,
        status=400,
        code="too_deeply_nested",
        title="Request body nested too deeply",
        detail=TOO_DEEP,
    )
    assert closure_counts() == before


def test_post_nesting_at_the_limit_is_parsed_and_one_more_level_is_refused(api):
    # given a body exactly MAX_JSON_DEPTH deep (the object, then 63 arrays), and one deeper
    at_limit = '{"provider": ' + _nested_arrays(MAX_JSON_DEPTH - 1) + "}"
    beyond = '{"provider": ' + _nested_arrays(MAX_JSON_DEPTH) + "}"
    before = closure_counts()

    # when each is posted
    parsed = post_raw(api, f"{A}/retry-plan", at_limit)
    refused = post_raw(api, f"{A}/retry-plan", beyond)

    # then the first reaches validation, the second is refused as too deep; nothing written
    assert_invalid(parsed, {"provider": ["Must be a string."]})
    assert refused.json()["code"] == "too_deeply_nested"
    assert closure_counts() == before


def test_brackets_inside_strings_do_not_count_as_nesting(api):
    # given a reason made of a thousand brackets and escaped quotes
    before = closure_counts()
    reason = "[{" * 1000 + '\\"' * 10

    # when it is posted as a string value
    response = post_raw(api, f"{A}/retry-plan", '{"bogus": "' + reason + '"}')

    # then the body is parsed (the field is unknown), not refused as nested
    assert_invalid(response, {"bogus": ["Unknown field."]})
    assert closure_counts() == before


def test_ingest_details_nested_600_deep_under_4_kib_is_400(api):
    # given one event whose details nest 600 levels deep in about 1.2 KB
    before = closure_counts()
    event = json.dumps(_event())[:-1] + ', "details": {"x": ' + _nested_arrays(600) + "}}"

    # when the batch is posted
    response = post_raw(api, f"{R}/delivery-events", '{"events": [' + event + "]}")

    # then it is refused before validation, and no event was stored
    assert response.status_code == 400
    assert response.json()["code"] == "too_deeply_nested"
    assert closure_counts() == before


def test_ingest_details_as_deep_as_allowed_are_stored_as_sent(api):
    # given details at the deepest level the limit leaves them (body, events, event, details
    # and 60 more objects)
    details: dict = {"leaf": "\U0001f600 done"}
    for _ in range(MAX_JSON_DEPTH - 4):
        details = {"next": details}

    # when the event is posted
    response = api.post(
        f"{R}/delivery-events", {"events": [_event(details=details)]}, format="json"
    )

    # then it is stored with exactly those details
    assert response.status_code == 201, response.content
    assert DeliveryEvent.objects.get().details == details


# -- Unicode ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "text", "place"),
    [
        (f"{A}/retry-plan", r'{"\ud800": 1}', "a key of the body"),
        (f"{A}/retry-plan", r'{"provider": "exec-\ud800"}', "provider"),
        (f"{A}/retry-plan", r'{"retry_policy": {"\udfff": 1}}', "a key of retry_policy"),
        (f"{A}/retry-plan", r'"\ud800"', "the body"),
        (f"{A}/deliver", r'{"provider": "\ude00\ud83d"}', "provider"),
        (
            f"{R}/delivery-events",
            '{"events": [{"kind": "report_delivery", "details": {"note": ["ok", "\\ud83d"]}}]}',
            "events.0.details.note.1",
        ),
        (
            f"{R}/delivery-events",
            '{"events": [{"kind": "\\udbff"}]}',
            "events.0.kind",
        ),
    ],
)
def test_lone_surrogate_anywhere_is_400_invalid_unicode_naming_where(api, url, text, place):
    # given the records every endpoint could touch
    before = closure_counts()

    # when a key or a string of the body holds a lone surrogate escape
    response = post_raw(api, url, text)

    # then a problem naming where it is, and nothing was written
    assert_problem(
        response,
        status=400,
        code="invalid_unicode",
        title="Request body is not valid Unicode",
        detail=surrogate_detail(place),
    )
    assert closure_counts() == before


def test_lone_surrogate_in_a_choice_value_is_400(api, report, offline_webhook):
    # given a report and its connector
    before = closure_counts()

    # when the acknowledgement's state (a choice) is a lone surrogate
    response = post_raw(
        api,
        f"{A}/{report.health_id}/acknowledgements",
        r'{"provider": "exec-webhook", "acknowledgement_state": "\ud800"}',
    )

    # then it is refused by the parser, and nothing was written
    assert response.json()["detail"] == surrogate_detail("acknowledgement_state")
    assert closure_counts() == before


def test_surrogate_pair_is_one_astral_character_and_accepted(api, report, failed_delivery):
    # given notes with an escaped surrogate pair (U+1F600) and a raw astral character
    text = r'{"provider": "exec-webhook", "notes": "\ud83d\ude00 and ' + "\U0001f680" + '"}'

    # when the acknowledgement is posted
    response = post_raw(api, f"{A}/{report.health_id}/acknowledgements", text)

    # then it is stored with both characters
    assert response.status_code == 201, response.content
    assert Acknowledgement.objects.get().notes == "\U0001f600 and \U0001f680"


def test_lone_surrogate_with_idempotency_key_is_400_and_leaves_the_key_free(api, report):
    # given the records every endpoint could touch
    before = closure_counts()

    # when a body with a lone surrogate comes with an Idempotency-Key
    refused = post_raw(
        api, f"{A}/retry-plan", r'{"health_id": "\ud800"}', HTTP_IDEMPOTENCY_KEY="plan-1"
    )

    # then it is refused before the key is reserved
    assert refused.json()["code"] == "invalid_unicode"
    assert closure_counts() == before
    assert IdempotencyRecord.objects.count() == 0

    # and the corrected request with the same key runs
    corrected = post_raw(api, f"{A}/retry-plan", "{}", HTTP_IDEMPOTENCY_KEY="plan-1")
    assert corrected.status_code == 201, corrected.content
    assert RetryPlan.objects.count() == 1


def test_invalid_utf8_bytes_are_malformed(api):
    # given the UTF-8 encoding of a surrogate, which is not valid UTF-8
    before = closure_counts()

    # when it is posted
    response = api.post(
        f"{A}/retry-plan", data=b'{"provider": "\xed\xa0\x80"}', content_type="application/json"
    )

    # then the body is malformed, and nothing was written
    assert_problem(
        response,
        status=400,
        code="malformed_request",
        title="Malformed request body",
        detail=(
            "JSON parse error - 'utf-8' codec can't decode byte 0xed in position 14: "
            "invalid continuation byte"
        ),
    )
    assert closure_counts() == before


def test_utf7_json_that_decodes_to_a_lone_surrogate_is_refused(api):
    # given a body in UTF-7 whose "+2AA-" decodes to U+D800
    before = closure_counts()

    # when it is posted with that charset
    response = api.post(
        f"{A}/retry-plan",
        data=b'{"provider": "+2AA-"}',
        content_type="application/json; charset=utf-7",
    )

    # then the decoded text is checked like any other
    assert response.json()["detail"] == surrogate_detail("provider")
    assert closure_counts() == before


def test_nul_echoed_in_a_message_is_written_out_and_the_refusal_replays(api, report):
    # given the records every endpoint could touch
    before = closure_counts()
    url = f"{A}/{report.health_id}/acknowledgements"
    body = {"provider": "exec-webhook", "acknowledgement_state": "\x00"}

    # when a choice is a NUL, which the choice's message echoes, with an Idempotency-Key, twice
    first = api.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="ack-nul")
    repeat = api.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="ack-nul")

    # then the NUL is written out as \u0000 (a database can store the refusal for replay), the
    # repeat replays it, and only the key was stored
    assert_invalid(first, {"acknowledgement_state": ['"\\u0000" is not a valid choice.']})
    assert repeat.json() == first.json()
    assert repeat["Idempotent-Replayed"] == "true"
    assert closure_counts() == {**before, "IdempotencyRecord": 1}


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/v1/deliveries/%00/"),
        ("get", "/api/v1/evidence/%00/"),
        (
            "get",
            "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
            "/final-reporting-closure-reviews/%00",
        ),
        ("post", f"{A}/deliveries/%00/waive"),
        ("post", f"{A}/%00/acknowledgements"),
    ],
)
def test_nul_in_an_api_path_is_404(api, method, url):
    # given the records every endpoint could touch
    before = closure_counts()

    # when a path parameter holds a NUL (no ID can: PostgreSQL text cannot hold it)
    response = getattr(api, method)(url, {}, format="json")

    # then the path names nothing, and nothing was written
    assert_problem(
        response, status=404, code="not_found", title="Not found", detail="No such resource."
    )
    assert closure_counts() == before


def test_nul_in_a_console_path_is_404(operator):
    response = client_for(operator).get("/console/deliveries/%00/")

    assert response.status_code == 404


# -- keys and numbers -------------------------------------------------------------------------


def test_repeated_key_is_400_duplicate_key(api):
    # given the records every endpoint could touch
    before = closure_counts()

    # when an object repeats a key (parsers disagree on which value counts)
    response = post_raw(
        api,
        f"{A}/retry-plan",
        '{"retry_policy": {"max_retry_attempts": 3, "max_retry_attempts": 50}}',
    )

    # then it is refused, naming the key, and nothing was written
    assert_problem(
        response,
        status=400,
        code="duplicate_key",
        title="Request body repeats a key",
        detail='An object repeats the key "max_retry_attempts".',
    )
    assert closure_counts() == before


@pytest.mark.parametrize(
    ("number", "detail"),
    [
        ("1e999", "JSON parse error - Number out of range: 1e999"),
        ("-1E400", "JSON parse error - Number out of range: -1E400"),
        (
            "Infinity",
            "JSON parse error - Out of range float values are not JSON compliant: 'Infinity'",
        ),
    ],
)
def test_number_beyond_a_float_is_malformed(api, number, detail):
    # given the records every endpoint could touch
    before = closure_counts()

    # when a number does not fit a float
    response = post_raw(
        api, f"{A}/retry-plan", '{"retry_policy": {"retry_delay_minutes": ' + number + "}}"
    )

    # then the body is malformed, and nothing was written
    assert_problem(
        response,
        status=400,
        code="malformed_request",
        title="Malformed request body",
        detail=detail,
    )
    assert closure_counts() == before


def test_integer_past_2_to_the_64_is_a_validation_error(api):
    # given the records every endpoint could touch
    before = closure_counts()

    # when an integer field gets 2**64
    response = post_raw(
        api, f"{A}/retry-plan", '{"retry_policy": {"max_retry_attempts": 18446744073709551616}}'
    )

    # then the field's range names it, and nothing was written
    assert_invalid(
        response,
        {"retry_policy.max_retry_attempts": ["Ensure this value is less than or equal to 50."]},
    )
    assert closure_counts() == before


# -- body size --------------------------------------------------------------------------------


def test_request_body_limit_is_8_mib_by_default(settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == EIGHT_MIB


def test_body_over_the_limit_is_413_naming_the_limit_and_writes_nothing(api):
    # given the records every endpoint could touch
    before = closure_counts()
    body = '{"events": [], "padding": "' + "x" * EIGHT_MIB + '"}'

    # when a body one past the limit is posted, with an Idempotency-Key
    response = post_raw(api, f"{R}/delivery-events", body, HTTP_IDEMPOTENCY_KEY="big-1")

    # then 413 naming the limit, and nothing was written (no key reserved either)
    assert_problem(
        response,
        status=413,
        code="request_too_large",
        title="Request body too large",
        detail=f"The request body is larger than {EIGHT_MIB} bytes, the most this server reads.",
    )
    assert closure_counts() == before


def test_largest_documented_batch_fits_the_limit_and_is_stored(api):
    # given 1,000 events, each with every text field at its longest and 4 KiB of details,
    # written by an ordinary JSON encoder (spaces after separators, non-ASCII escaped)
    events = [
        {
            "event_id": f"{number:06d}" + "e" * 74,
            "kind": "retry_worker_run",
            "status": "succeeded",
            "occurred_at": "2026-01-15T10:00:00.123456+00:00",
            "provider": "p" * 64,
            "run_id": "r" * 128,
            "executive_report_id": "x" * 128,
            "schedule_enabled": True,
            # {"blob":"…"} in canonical JSON is exactly 4,096 bytes
            "details": {"blob": "d" * 4085},
        }
        for number in range(1000)
    ]
    body = json.dumps({"events": events})
    # (about 4.7 MB: Django's default limit of 2.5 MiB refused it with a bare 400)
    assert 2.5 * 1024 * 1024 < len(body) < EIGHT_MIB

    # when the batch is posted
    response = post_raw(api, f"{R}/delivery-events", body)

    # then every event is stored
    assert response.status_code == 201, response.content[:300]
    assert response.json()["created"] == 1000
    assert DeliveryEvent.objects.count() == 1000


# -- times ------------------------------------------------------------------------------------

OUT_OF_RANGE = "Must be from 2000-01-01T00:00:00Z up to, not including, 2100-01-01T00:00:00Z."


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "1999-12-31T23:59:59.999999Z",
        "2000-01-01T00:59:59+01:00",
        "2100-01-01T00:00:00Z",
    ],
)
def test_ingest_time_outside_the_window_is_400_naming_the_field(api, occurred_at):
    # given the records every endpoint could touch
    before = closure_counts()

    # when an event's time lies outside 2000 … 2100
    response = api.post(
        f"{R}/delivery-events",
        {"events": [_event(), {**_event(), "occurred_at": occurred_at}]},
        format="json",
    )

    # then the field is named, and nothing of the batch was stored
    assert_invalid(response, {"events.1.occurred_at": [OUT_OF_RANGE]})
    assert closure_counts() == before


def test_ingest_time_window_bounds(api):
    # given a clock at 2026-11-27T09:00:00Z
    with time_machine.travel(datetime(2026, 11, 27, 9, tzinfo=UTC), tick=False):
        # when events at the earliest time and one day ahead are posted, then one second later
        accepted = api.post(
            f"{R}/delivery-events",
            {
                "events": [
                    _event(event_id="earliest", occurred_at=datetime(2000, 1, 1, tzinfo=UTC)),
                    _event(event_id="ahead", occurred_at=datetime(2026, 11, 28, 9, tzinfo=UTC)),
                ]
            },
            format="json",
        )
        refused = api.post(
            f"{R}/delivery-events",
            {"events": [{**_event(), "occurred_at": "2026-11-28T09:00:01Z"}]},
            format="json",
        )

    # then the bounds are accepted and stored, and a time past now + 1 day is refused
    assert accepted.status_code == 201, accepted.content
    assert sorted(DeliveryEvent.objects.values_list("event_id", flat=True)) == [
        "ahead",
        "earliest",
    ]
    assert_invalid(
        refused, {"events.0.occurred_at": ["Must not be more than 1 day after the current time."]}
    )
    assert DeliveryEvent.objects.count() == 2


@pytest.fixture
def everyone(roles):
    """A user in every role, so that no POST is refused for a missing permission."""
    return make_user("everyone", OPERATORS, AUDITORS, PLATFORM_OWNERS)


def test_export_filter_time_outside_the_window_is_400(everyone, evidence_key):
    # given the records every endpoint could touch
    before = closure_counts()

    # when an evidence export is asked from year 1
    response = client_for(everyone).post(
        "/api/v1/evidence/export/", {"created_after": "0001-01-01T00:00:00Z"}, format="json"
    )

    # then the field is named, and nothing (not even the export's evidence) was written
    assert_invalid(response, {"created_after": [OUT_OF_RANGE]})
    assert closure_counts() == before


# -- forms outside the API --------------------------------------------------------------------


def test_console_multipart_form_in_utf7_is_400_and_writes_nothing(operator, failed_delivery):
    # given a delivery that can be waived
    before = closure_counts()
    body = b'--BB\r\nContent-Disposition: form-data; name="reason"\r\n\r\n+2AA-\r\n--BB--\r\n'

    # when the waive form comes as multipart in UTF-7 ("+2AA-" decodes to U+D800)
    response = client_for(operator).generic(
        "POST",
        f"/console/deliveries/{failed_delivery.delivery_id}/waive/",
        data=body,
        content_type="multipart/form-data; boundary=BB; charset=utf-7",
    )

    # then it is refused before the form reads it, and the delivery is untouched
    assert response.status_code == 400
    assert closure_counts() == before
    assert AlertDelivery.objects.get(pk=failed_delivery.pk).status == "failed"


def test_console_form_with_encoded_surrogate_bytes_reads_them_as_replacement_characters(
    operator, failed_delivery
):
    # given a delivery that can be waived
    url = f"/console/deliveries/{failed_delivery.delivery_id}/waive/"

    # when the form's reason is the UTF-8 encoding of a surrogate (not valid UTF-8)
    response = client_for(operator).post(
        url, data=b"reason=%ED%A0%80", content_type="application/x-www-form-urlencoded"
    )

    # then Django reads each byte as U+FFFD: the text stored is valid, never a lone surrogate
    assert response.status_code == 302
    delivery = AlertDelivery.objects.get(pk=failed_delivery.pk)
    assert delivery.status == "suppressed"
    assert delivery.suppression_note == "\ufffd\ufffd\ufffd"


# -- the admin's date hierarchy ---------------------------------------------------------------

# (changelist URL, date hierarchy field) of every admin that has one, django-axes' included.
DATE_HIERARCHY_ADMINS = sorted(
    (f"/admin/{model._meta.app_label}/{model._meta.model_name}/", model_admin.date_hierarchy)
    for model, model_admin in admin.site._registry.items()
    if model_admin.date_hierarchy
)


def test_every_admin_with_a_date_hierarchy_is_under_test():
    # the twelve record admins and django-axes' three login record admins
    assert len(DATE_HIERARCHY_ADMINS) == 15


@pytest.mark.parametrize(("changelist", "field"), DATE_HIERARCHY_ADMINS)
@pytest.mark.parametrize(
    "parts",
    [
        {"year": "9999"},
        {"year": "9999", "month": "12"},
        {"year": "9999", "month": "12", "day": "31"},
        {"year": "0"},
        {"year": "99999999999999999999"},
        {"year": "2026", "month": "13"},
        {"year": "2026", "month": "2", "day": "30"},
        {"year": "twenty"},
    ],
    ids=lambda parts: "-".join(parts.values()),
)
def test_admin_date_hierarchy_past_the_calendar_is_an_invalid_filter(
    superuser, changelist, field, parts
):
    # given a superuser in the admin
    client = client_for(superuser)
    query = {f"{field}__{part}": value for part, value in parts.items()}

    # when the changelist is asked for a date Python's calendar cannot end
    response = client.get(changelist, query)

    # then the admin's answer to an invalid filter: back to the list with ?e=1, which renders
    assert response.status_code == 302
    assert response["Location"] == f"{changelist}?e=1"
    assert client.get(response["Location"]).status_code == 200


@pytest.mark.parametrize(("changelist", "field"), DATE_HIERARCHY_ADMINS)
def test_admin_date_hierarchy_at_year_1_and_9998_renders(superuser, changelist, field):
    # given a superuser in the admin
    client = client_for(superuser)

    # when the changelist is asked for the first year and for the last one that can end
    first = client.get(changelist, {f"{field}__year": "1"})
    last = client.get(
        changelist,
        {f"{field}__year": "9998", f"{field}__month": "12", f"{field}__day": "31"},
    )

    # then both are ordinary (empty) pages
    assert first.status_code == 200
    assert last.status_code == 200
    assert first.context["cl"].result_count == 0
    assert last.context["cl"].result_count == 0


# -- the corpus: every hostile body on every POST endpoint ------------------------------------

# (name, body bytes, content type) — each must be refused with a 4xx.
HOSTILE_BODIES = [
    ("empty-json-array-nesting", _nested_arrays(100_000).encode(), "application/json"),
    ("deep-objects", ('{"a":' * 5000 + "1" + "}" * 5000).encode(), "application/json"),
    ("deep-unclosed", b"[" * 200_000, "application/json"),
    ("deep-in-string-unterminated", b'"' + b'\\"' * 100_000, "application/json"),
    ("lone-high-surrogate-key", rb'{"\ud800": 1}', "application/json"),
    ("lone-low-surrogate-value", rb'{"provider": "\udfff"}', "application/json"),
    ("lone-surrogate-in-array", rb'{"events": ["\ud800"]}', "application/json"),
    ("reversed-pair", rb'{"reason": "\ude00\ud83d"}', "application/json"),
    ("encoded-surrogate-bytes", b'{"reason": "\xed\xa0\x80"}', "application/json"),
    ("utf7-surrogate", b'{"reason": "+2AA-"}', "application/json; charset=utf-7"),
    (
        "unicode-escape-charset",
        rb'{"reason": "\ud800"}',
        "application/json; charset=unicode_escape",
    ),
    ("bz2-charset", b'{"bogus": 1}', "application/json; charset=bz2_codec"),
    ("unknown-charset", b'{"bogus": 1}', "application/json; charset=no-such-charset"),
    ("utf16-bom", '{"bogus": 1}'.encode("utf-16"), "application/json"),
    ("utf8-bom", b'\xef\xbb\xbf{"bogus": 1}', "application/json"),
    ("nan", b'{"bogus": NaN}', "application/json"),
    ("infinity", b'{"bogus": -Infinity}', "application/json"),
    ("float-overflow", b'{"bogus": 1e999}', "application/json"),
    ("int-2-64", b'{"bogus": 18446744073709551616}', "application/json"),
    ("int-5000-digits", b'{"bogus": ' + b"9" * 5000 + b"}", "application/json"),
    ("duplicate-keys", b'{"bogus": 1, "bogus": 2}', "application/json"),
    ("nul-in-key", b'{"\\u0000": 1}', "application/json"),
    ("nul-in-value", b'{"reason": "\\u0000", "bogus": 1}', "application/json"),
    ("truncated", b'{"reason": "x', "application/json"),
    ("trailing-garbage", b"{} {}", "application/json"),
    ("control-character", b'{"reason": "\x01"}', "application/json"),
    ("top-level-array", b"[]", "application/json"),
    ("top-level-string", b'"x"', "application/json"),
    ("null", b"null", "application/json"),
    ("whitespace", b" \n\t ", "application/json"),
    ("many-keys", json.dumps({f"k{n}": n for n in range(5_000)}).encode(), "application/json"),
    ("long-string", json.dumps({"bogus": "x" * 1_000_000}).encode(), "application/json"),
    ("form-urlencoded", b"reason=x", "application/x-www-form-urlencoded"),
    (
        "multipart",
        b'--BB\r\nContent-Disposition: form-data; name="reason"\r\n\r\nx\r\n--BB--\r\n',
        "multipart/form-data; boundary=BB",
    ),
    ("text-plain", b'{"bogus": 1}', "text/plain"),
    ("xml", b"<reason>x</reason>", "application/xml"),
    ("too-large", b" " * (EIGHT_MIB + 1), "application/json"),
]


def post_operations() -> list[str]:
    schema = yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))
    return sorted(path for path, operations in schema["paths"].items() if "post" in operations)


def test_the_corpus_covers_the_eleven_post_endpoints():
    assert len(post_operations()) == 11


# The refusals that happen before a view runs: no Idempotency-Key is reserved for them.
PARSE_LEVEL_CODES = {
    "malformed_request",
    "too_deeply_nested",
    "invalid_unicode",
    "duplicate_key",
    "unsupported_media_type",
    "request_too_large",
    "bad_request",
}


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
def test_hostile_corpus_on_every_post_endpoint_is_4xx_and_writes_nothing(
    settings, everyone, failed_delivery, evidence_key, debug
):
    # given a user in every role with a bearer token, and real IDs for the paths
    settings.DEBUG = debug
    _, raw = ApiToken.issue(user=everyone, name="corpus")
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.raise_request_exception = False
    ids = {
        "health_id": failed_delivery.alert.health.health_id,
        "delivery_id": failed_delivery.delivery_id,
    }
    answers = []
    before = without_idempotency(closure_counts())

    # when every hostile body is posted to every POST endpoint, with and without a key
    for number, path in enumerate(post_operations()):
        for name, body, content_type in HOSTILE_BODIES:
            for key in (None, f"corpus-{number}-{name}"):
                response = client.generic(
                    "POST",
                    path.format_map(ids),
                    data=body,
                    content_type=content_type,
                    **({"HTTP_IDEMPOTENCY_KEY": key} if key else {}),
                )
                is_problem = response["Content-Type"] == "application/problem+json"
                problem = response.json() if is_problem else {}
                answers.append(
                    (
                        path,
                        name,
                        key,
                        response.status_code,
                        response["Content-Type"],
                        problem.get("code"),
                    )
                )

    # then every answer is a 4xx problem, and nothing was written
    assert len(answers) == 11 * len(HOSTILE_BODIES) * 2
    unexpected = [
        answer
        for answer in answers
        if not 400 <= answer[3] < 500 or answer[4] != "application/problem+json"
    ]
    assert unexpected == []
    assert without_idempotency(closure_counts()) == before
    # and no key was reserved by a request refused before its view ran
    reserved = set(IdempotencyRecord.objects.values_list("key", flat=True))
    refused_early = {key for _, _, key, _, _, code in answers if code in PARSE_LEVEL_CODES}
    assert reserved & refused_early == set()


def without_idempotency(counts: dict[str, int]) -> dict[str, int]:
    """A body that parses but fails validation stores its 400 for replay under its key."""
    return {model: count for model, count in counts.items() if model != "IdempotencyRecord"}
