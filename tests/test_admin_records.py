"""The auditors' admin: read-only for everyone, bounded changelists, search, filters, links and
the recorded CSV / JSON Lines export of the filtered changelist."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.contrib import admin
from django.utils import timezone

from closure.admin_records import ReadOnlyAdmin
from closure.choices import MetadataKind
from closure.evidence.canonical import isoformat
from closure.models import (
    Acknowledgement,
    AlertDelivery,
    ApiToken,
    ClosureReview,
    Connector,
    DeliveryEvent,
    Evidence,
    EvidenceCheckpoint,
    ExecutionRecord,
    HealthAlert,
    HealthReport,
    RetryDecision,
    RetryPlan,
    WorkerRun,
)
from closure.paginators import BoundedCountPaginator
from closure.roles import AUDITORS, OPERATORS, PLATFORM_OWNERS
from closure.services.evidence import evidence_checkpoint_create
from tests.conftest import client_for, closure_counts
from tests.factories import (
    make_alert,
    make_connector,
    make_delivery,
    make_event,
    make_execution,
    make_health_report,
    make_user,
)
from tests.test_console_queries import populate

pytestmark = pytest.mark.django_db

# model → (date hierarchy, the search field that finds a record by its public ID)
RECORD_ADMINS = {
    DeliveryEvent: ("occurred_at", "=event_id"),
    HealthReport: ("generated_at", "=health_id"),
    HealthAlert: ("created_at", "=alert_id"),
    AlertDelivery: ("created_at", "=delivery_id"),
    Acknowledgement: ("acknowledged_at", "=ack_id"),
    RetryPlan: ("generated_at", "=retry_plan_id"),
    RetryDecision: ("plan__generated_at", "=plan__retry_plan_id"),
    WorkerRun: ("started_at", "=run_id"),
    ExecutionRecord: ("executed_at", "=execution_id"),
    Evidence: ("created_at", "=session_id"),
    EvidenceCheckpoint: ("checkpointed_at", "=chain_head"),
    ClosureReview: ("reviewed_at", "=review_id"),
}


@pytest.fixture
def staff_auditor(roles):
    return make_user("arthur", AUDITORS, is_staff=True)


def test_every_evidence_bearing_model_has_a_read_only_admin_built_for_a_million_rows():
    # given the admin registry
    registry = admin.site._registry

    # then every record model is registered read-only, with a bounded count, a date hierarchy
    # and a search by public ID
    for model, (date_hierarchy, search) in RECORD_ADMINS.items():
        model_admin = registry[model]
        assert isinstance(model_admin, ReadOnlyAdmin), model
        assert model_admin.show_full_result_count is False, model
        assert model_admin.paginator is BoundedCountPaginator, model
        assert model_admin.date_hierarchy == date_hierarchy, model
        assert search in model_admin.search_fields, model
        assert model_admin.export_columns, model
    # and the only other closure models in the admin are the platform owners' connectors and
    # API tokens
    closure_models = {m for m in registry if m._meta.app_label == "closure"}
    assert closure_models - set(RECORD_ADMINS) == {Connector, ApiToken}
    assert registry[Connector].show_full_result_count is False


def test_records_are_read_only_even_for_a_superuser(superuser, failed_delivery):
    # given a superuser and one record of each kind the flow has made so far
    client = client_for(superuser)
    records = {
        HealthReport: failed_delivery.alert.health,
        HealthAlert: failed_delivery.alert,
        AlertDelivery: failed_delivery,
        ExecutionRecord: failed_delivery.executions.get(),
    }
    before = closure_counts()

    for model, record in records.items():
        base = f"/admin/closure/{model._meta.model_name}/"
        # when they try to add, change or delete one
        add = client.get(f"{base}add/")
        change = client.post(f"{base}{record.pk}/change/", {"provider": "mallory"})
        delete = client.post(f"{base}{record.pk}/delete/", {"post": "yes"})
        bulk = client.post(
            base, {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"}
        )
        page = client.get(f"{base}{record.pk}/change/")

        # then every write is refused, the page has no save button and no delete action
        assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
        assert bulk.status_code == 200  # the changelist again: the action does not exist
        assert page.status_code == 200
        assert 'name="_save"' not in page.content.decode()
        assert "delete_selected" not in page.content.decode()
    assert closure_counts() == before


@pytest.mark.parametrize("who", ["operator", "auditor"])
def test_only_platform_owners_may_add_connectors_and_nobody_deletes_one(request, who, roles):
    # given a viewer and a platform owner, both staff, and a stored connector
    viewer = make_user(f"viewer-{who}", {"operator": OPERATORS, "auditor": AUDITORS}[who])
    viewer.is_staff = True
    viewer.save()
    owner = make_user("petra-staff", PLATFORM_OWNERS, is_staff=True)
    connector = make_connector("exec-webhook", "https://hooks.example.invalid/secret-path")

    # when each opens the add page and tries to delete the connector
    viewer_add = client_for(viewer).get("/admin/closure/connector/add/")
    owner_add = client_for(owner).get("/admin/closure/connector/add/")
    owner_delete = client_for(owner).post(
        f"/admin/closure/connector/{connector.pk}/delete/", {"post": "yes"}
    )
    owner_change = client_for(owner).get(f"/admin/closure/connector/{connector.pk}/change/")

    # then only the platform owner may add, nobody deletes, and the secret is never shown
    assert (viewer_add.status_code, owner_add.status_code) == (403, 200)
    assert owner_delete.status_code == 403
    assert Connector.objects.filter(pk=connector.pk).exists()
    page = owner_change.content.decode()
    assert 'name="url"' in page  # write-only: an empty input to type a new one
    assert "secret-path" not in page
    assert 'value="https://' not in page


# -- changelists: bounded queries, search, filters ----------------------------------------------

# 3 auth (session, user, permissions in one query); the bounded count; the page (related
# columns joined); the date hierarchy's first and last date (one MIN/MAX aggregate). A provider
# filter adds one query: the connector names (at most 200), or for upstream events the
# providers of the newest 1,000 events. No DISTINCT over the table, no full COUNT(*).
CHANGELIST_QUERIES = {
    DeliveryEvent: 7,  # + the providers of the newest events
    HealthReport: 6,
    HealthAlert: 6,
    AlertDelivery: 7,  # + connector names
    Acknowledgement: 7,  # + connector names
    RetryPlan: 6,
    RetryDecision: 7,  # + connector names; the date hierarchy reads the plans' times
    WorkerRun: 6,
    ExecutionRecord: 7,  # + connector names
    Evidence: 7,  # + connector names
    EvidenceCheckpoint: 6,
    ClosureReview: 6,
}


@pytest.mark.parametrize("rows", [2, 26])
@pytest.mark.parametrize("model", list(CHANGELIST_QUERIES), ids=lambda m: m.__name__)
def test_admin_changelist_query_count_does_not_grow(
    staff_auditor, operator, offline_webhook, evidence_key, django_assert_num_queries, model, rows
):
    # given `rows` records of every kind
    populate(operator, offline_webhook, rows, reviews=model is ClosureReview)
    for number in range(rows):
        make_event(actor=operator, kind="retry_plan", status="succeeded", provider=f"p{number}")
    evidence_checkpoint_create()
    client = client_for(staff_auditor)
    path = f"/admin/closure/{model._meta.model_name}/"

    # when the auditor opens the changelist
    with django_assert_num_queries(CHANGELIST_QUERIES[model], exact=True):
        response = client.get(path)

    # then it lists them in the same number of queries either way
    assert response.status_code == 200
    assert response.context["cl"].result_count == model.objects.count()
    assert response.context["cl"].full_result_count is None


def test_admin_changelist_count_is_bounded(staff_auditor, operator, monkeypatch):
    # given more reports than the paginator counts
    monkeypatch.setattr(BoundedCountPaginator, "count_limit", 3)
    for _ in range(5):
        make_health_report(actor=operator)
    client = client_for(staff_auditor)

    response = client.get("/admin/closure/healthreport/")

    assert response.context["cl"].result_count == 3
    assert "More than 3 health reports: filter to narrow them down" in response.content.decode()


@pytest.fixture
def attempts(operator):
    """Three executions on two connectors, on two days: failed, failed, delivered."""
    now = timezone.now()
    report = make_health_report(actor=operator)
    alert = make_alert(report=report, actor=operator)
    hook = make_connector("exec-webhook", "https://hooks.example.invalid/a")
    pager = make_connector("pager", "https://hooks.example.invalid/b")
    first = make_delivery(alert=alert, connector=hook, attempt_count=2, status="delivered")
    second = make_delivery(alert=alert, connector=pager)
    return [
        make_execution(delivery=first, actor=operator, executed_at=now - timedelta(days=40)),
        make_execution(delivery=second, actor=operator, executed_at=now),
        make_execution(
            delivery=first,
            actor=operator,
            execution_status="delivered",
            attempt_number=2,
            executed_at=now,
        ),
    ]


def _listed(response) -> list[str]:
    return sorted(str(row.execution_id) for row in response.context["cl"].result_list)


def test_admin_search_by_public_id_finds_exactly_that_record(staff_auditor, attempts):
    client = client_for(staff_auditor)
    target = attempts[1]

    exact = client.get("/admin/closure/executionrecord/", {"q": target.execution_id})
    prefix = client.get("/admin/closure/executionrecord/", {"q": target.execution_id[:-2]})

    assert _listed(exact) == [target.execution_id]
    assert _listed(prefix) == []  # an exact match: no LIKE scan over the table


def test_admin_filters_by_status_provider_and_date(staff_auditor, attempts):
    client = client_for(staff_auditor)
    url = "/admin/closure/executionrecord/"
    today = timezone.now()

    failed = client.get(url, {"execution_status__exact": "failed"})
    pager = client.get(url, {"provider": "pager"})
    month = {"executed_at__year": today.year, "executed_at__month": today.month}
    this_month = client.get(url, month)

    assert _listed(failed) == sorted([attempts[0].execution_id, attempts[1].execution_id])
    assert _listed(pager) == [attempts[1].execution_id]
    assert _listed(this_month) == sorted([attempts[1].execution_id, attempts[2].execution_id])


def test_admin_record_page_links_its_related_records(staff_auditor, attempts):
    client = client_for(staff_auditor)
    record = attempts[1]

    page = client.get(f"/admin/closure/executionrecord/{record.pk}/change/").content.decode()
    delivery = client.get(
        f"/admin/closure/alertdelivery/{record.delivery.pk}/change/"
    ).content.decode()

    assert f'href="/admin/closure/evidence/?session_id={record.execution_id}"' in page
    assert (
        f'href="/admin/closure/executionrecord/?delivery__id__exact={record.delivery.pk}"'
        in delivery
    )
    assert f'href="/admin/closure/retrydecision/?delivery__id__exact={record.delivery.pk}"' in (
        delivery
    )


# -- export -------------------------------------------------------------------------------------


def _export(client, export_format: str, **filters):
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    return client.post(f"/admin/closure/executionrecord/export/?{query}", {"format": export_format})


def _body(response) -> str:
    return b"".join(response.streaming_content).decode()


def test_admin_export_streams_exactly_the_filtered_rows_as_csv_and_records_it(
    staff_auditor, attempts
):
    # given an auditor looking at the failed execution records
    client = client_for(staff_auditor)
    before = Evidence.objects.count()

    # when they export them as CSV
    response = _export(client, "csv", execution_status__exact="failed")

    # then the streamed file holds exactly those rows, in primary-key order
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    assert [row["execution_id"] for row in rows] == [a.execution_id for a in attempts[:2]]
    assert rows[1] == {
        **rows[1],
        "execution_status": "failed",
        "provider": "pager",
        "attempt_number": "1",
        "http_status": "500",
        "error_class": "http_5xx",
        "executed_by": "olivia",
        "executed_at": isoformat(attempts[1].executed_at),
    }
    # and the export is on record first, with its filter, columns and row count
    export = Evidence.objects.get(metadata_kind=MetadataKind.ADMIN_EXPORT)
    assert Evidence.objects.count() == before + 1
    subject = export.payload["subject"]
    assert export.session_id == response["X-Admin-Export-Id"] == subject["export_id"]
    assert (export.signer, export.decision_count) == ("arthur", 2)
    assert (subject["model"], subject["format"], subject["row_count"]) == (
        "closure.executionrecord",
        "csv",
        2,
    )
    assert subject["query"] == {"execution_status__exact": ["failed"]}
    assert subject["columns"][:2] == ["execution_id", "execution_status"]
    assert response["Content-Disposition"] == (
        f'attachment; filename="executionrecord-{subject["export_id"]}.csv"'
    )


def test_admin_export_as_json_lines_writes_one_object_per_row(staff_auditor, attempts):
    client = client_for(staff_auditor)

    response = _export(client, "jsonl", provider="pager")

    assert response["Content-Type"] == "application/jsonl"
    lines = [json.loads(line) for line in _body(response).splitlines()]
    assert [line["execution_id"] for line in lines] == [attempts[1].execution_id]
    assert (lines[0]["http_status"], lines[0]["latency_ms"]) == (500, None)
    assert response["X-Admin-Export-Rows"] == "1"


def test_admin_export_writes_csv_formulas_as_text(staff_auditor, operator):
    # a value a spreadsheet would run as a formula is written with a leading apostrophe
    make_event(actor=operator, kind="retry_plan", status="succeeded", run_id="=HYPERLINK(1)")
    client = client_for(staff_auditor)

    response = client.post("/admin/closure/deliveryevent/export/", {"format": "csv"})

    [row] = list(csv.DictReader(io.StringIO(_body(response))))
    assert row["run_id"] == "'=HYPERLINK(1)"


@pytest.mark.parametrize(
    ("who", "method", "body", "status"),
    [
        ("operator", "post", {"format": "csv"}, 403),  # no export_evidence
        ("auditor", "get", {}, 405),  # an export is recorded: POST only
        ("auditor", "post", {"format": "xlsx"}, 400),
    ],
)
def test_admin_export_refusals_write_nothing(roles, attempts, who, method, body, status):
    user = make_user(f"staff-{who}", {"operator": OPERATORS, "auditor": AUDITORS}[who])
    user.is_staff = True
    user.save()
    client = client_for(user)
    before = closure_counts()

    response = getattr(client, method)("/admin/closure/executionrecord/export/", body)

    assert response.status_code == status
    assert closure_counts() == before


def test_admin_changelist_offers_export_only_to_exporters(roles, staff_auditor, attempts):
    operator = make_user("staff-operator", OPERATORS, is_staff=True)

    auditor_page = client_for(staff_auditor).get("/admin/closure/executionrecord/")
    operator_page = client_for(operator).get("/admin/closure/executionrecord/")

    assert 'value="jsonl"' in auditor_page.content.decode()
    assert 'value="jsonl"' not in operator_page.content.decode()
