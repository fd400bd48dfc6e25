"""Unknown query parameters are refused on every API list and read, never silently ignored.

A misspelt filter (`?stauts=failed`) used to be dropped and the list answered every row. Now
it is a 400 `unknown_query_parameter` naming the parameter and listing those the endpoint
reads: its filters, `page`, `page_size` and `format` on a list, the declared parameters on a
read such as the health report or release readiness.
"""

import pytest

from closure.inputs.filtersets import (
    AcknowledgementFilterSet,
    AlertDeliveryFilterSet,
    ClosureReviewFilterSet,
    ConnectorFilterSet,
    DeliveryEventFilterSet,
    EvidenceCheckpointFilterSet,
    EvidenceFilterSet,
    ExecutionRecordFilterSet,
    HealthAlertFilterSet,
    HealthReportFilterSet,
    RetryPlanFilterSet,
    WorkerRunFilterSet,
)
from closure.roles import AUDITORS, OPERATORS, PLATFORM_OWNERS
from tests.conftest import A, B, assert_problem, client_for
from tests.factories import make_event, make_user

pytestmark = pytest.mark.django_db

PAGING = {"format", "page", "page_size"}

LISTS = {
    "/api/v1/delivery-events/": DeliveryEventFilterSet,
    "/api/v1/health-reports/": HealthReportFilterSet,
    "/api/v1/connectors/": ConnectorFilterSet,
    "/api/v1/alerts/": HealthAlertFilterSet,
    A: HealthAlertFilterSet,
    "/api/v1/deliveries/": AlertDeliveryFilterSet,
    "/api/v1/acknowledgements/": AcknowledgementFilterSet,
    "/api/v1/retry-plans/": RetryPlanFilterSet,
    "/api/v1/worker-runs/": WorkerRunFilterSet,
    "/api/v1/execution-records/": ExecutionRecordFilterSet,
    "/api/v1/evidence/": EvidenceFilterSet,
    "/api/v1/evidence/checkpoints/": EvidenceCheckpointFilterSet,
    f"{B}/final-reporting-closure-reviews": ClosureReviewFilterSet,
}


def assert_unknown(response, names: list[str], allowed: set[str]) -> None:
    message = f"Unknown query parameter. Allowed: {', '.join(sorted(allowed))}."
    assert_problem(
        response,
        status=400,
        code="unknown_query_parameter",
        title="Unknown query parameter",
        detail="; ".join(f"{name}: {message}" for name in names),
        errors={name: [message] for name in names},
    )


@pytest.fixture
def everyone(roles):
    """A user in every role, so that no read is refused for a missing permission."""
    return make_user("everyone", OPERATORS, AUDITORS, PLATFORM_OWNERS)


def test_misspelt_filter_is_400_naming_it_and_the_allowed_ones(api, operator):
    # given two events, one failed
    make_event(actor=operator, kind="report_delivery", status="failed")
    make_event(actor=operator, kind="report_delivery", status="delivered")

    # when the status filter is misspelt
    response = api.get("/api/v1/delivery-events/", {"stauts": "failed"})

    # then it is named, with every parameter the list reads, and no rows come back
    assert_problem(
        response,
        status=400,
        code="unknown_query_parameter",
        title="Unknown query parameter",
        detail=(
            "stauts: Unknown query parameter. Allowed: format, kind, occurred_after, "
            "occurred_before, page, page_size, provider, run_id, status."
        ),
        errors={
            "stauts": [
                "Unknown query parameter. Allowed: format, kind, occurred_after, "
                "occurred_before, page, page_size, provider, run_id, status."
            ]
        },
    )


def test_filter_of_another_list_is_400(api):
    # when the execution records are filtered by `run_id` (theirs is `worker_run_id`)
    response = api.get("/api/v1/execution-records/", {"run_id": "gordackexecworkerrun-1"})

    # then the parameter is refused, not ignored
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["run_id"]


@pytest.mark.parametrize("path", list(LISTS))
def test_every_list_refuses_unknown_parameters_and_lists_its_own(everyone, path):
    # given a user who may read every list
    client = client_for(everyone)

    # when two unknown parameters come with a known one
    response = client.get(path, {"zzz": "1", "bogus": "x", "page": "1"})

    # then both are named, with that list's filters and the paging parameters as allowed
    assert_unknown(response, ["bogus", "zzz"], {*LISTS[path].base_filters, *PAGING})


@pytest.mark.parametrize("path", list(LISTS))
def test_every_list_accepts_its_filters_and_paging(everyone, path):
    # given a user who may read every list
    client = client_for(everyone)

    # when it is asked with paging and the JSON format
    response = client.get(path, {"page": "1", "page_size": "5", "format": "json"})

    # then an ordinary (empty) page
    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


def test_known_filter_with_unknown_parameter_is_refused_whole(api, operator):
    # given a failed event
    make_event(actor=operator, kind="report_delivery", status="failed")

    # when a known filter comes with a misspelt one
    response = api.get("/api/v1/delivery-events/", {"status": "failed", "providr": "x"})

    # then nothing is listed: the request is refused
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["providr"]


def test_record_detail_refuses_unknown_parameters(api, operator):
    # given an event
    event = make_event(actor=operator, kind="report_delivery", status="failed")

    # when its detail is asked with a parameter the detail does not read
    response = api.get(f"/api/v1/delivery-events/{event.event_id}/", {"expand": "all"})

    # then it is refused like on the list
    assert_unknown(response, ["expand"], {*DeliveryEventFilterSet.base_filters, *PAGING})


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (
            "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
            "/recovery-executive-report/delivery-retry-health",
            {"format", "preview"},
        ),
        (
            "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
            "/recovery-executive-report/delivery-retry-health-alert-dashboard",
            {"format"},
        ),
        (f"{B}/final-reporting-closure-dashboard", {"format"}),
        (f"{B}/final-reporting-release-readiness", {"format", "full"}),
        (f"{B}/final-reporting-closure-reviews/gordackexecreview-0", {"format"}),
    ],
)
def test_reads_refuse_parameters_they_do_not_declare(everyone, path, allowed):
    # when a read is asked with a misspelt parameter
    response = client_for(everyone).get(path, {"ful": "true"})

    # then it is refused, listing the parameters it reads
    assert_unknown(response, ["ful"], allowed)


def test_declared_parameter_of_a_read_is_accepted(everyone):
    # when the health preview and the full readiness are asked
    client = client_for(everyone)
    preview = client.get(
        "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
        "/recovery-executive-report/delivery-retry-health",
        {"preview": "true"},
    )
    readiness = client.get(f"{B}/final-reporting-release-readiness", {"full": "true"})

    # then both answer
    assert preview.status_code == 200, preview.content
    assert preview.json()["preview"] is True
    assert readiness.status_code == 200, readiness.content


def test_unknown_parameter_is_refused_only_after_authentication(client):
    # when an anonymous client sends an unknown parameter
    response = client.get("/api/v1/delivery-events/", {"stauts": "failed"})

    # then authentication comes first
    assert response.status_code == 401


@pytest.mark.parametrize(
    "path", ["/api/v1/delivery-events/", f"{B}/final-reporting-closure-dashboard"]
)
def test_empty_format_is_404_like_an_unknown_one(everyone, path):
    # when the format parameter is given empty, then with a format no renderer has
    client = client_for(everyone)
    empty = client.get(path, {"format": ""})
    unknown = client.get(path, {"format": "xml"})

    # then both are refused the same way, never answered in the default format
    for response in (empty, unknown):
        assert_problem(
            response, status=404, code="not_found", title="Not found", detail="Not found."
        )


@pytest.mark.parametrize("page", ["", "x", "0"])
def test_empty_or_malformed_page_is_404_never_the_first_page(api, operator, page):
    # given one event, which the first page would show
    make_event(actor=operator, kind="report_delivery", status="failed")

    # when the page parameter is empty or not a page number
    response = api.get("/api/v1/delivery-events/", {"page": page})

    # then an invalid page, not the first page
    assert_problem(
        response, status=404, code="not_found", title="Not found", detail="Invalid page."
    )
