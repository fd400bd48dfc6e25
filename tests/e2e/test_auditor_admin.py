"""An auditor filters execution records in the admin and exports exactly the filtered rows."""

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from closure.choices import MetadataKind
from closure.models import Evidence
from closure.roles import AUDITORS
from tests.e2e.conftest import follow, log_in
from tests.factories import (
    make_alert,
    make_connector,
    make_delivery,
    make_execution,
    make_health_report,
    make_user,
)


def _attempts(actor):
    """Three deliveries: two failed first attempts (one then delivered), one delivered."""
    now = timezone.now()
    report = make_health_report(actor=actor)
    alert = make_alert(report=report, actor=actor, created_at=now - timedelta(hours=2))
    records = {}
    for name, outcomes in (
        ("exec-webhook", ["failed", "delivered"]),
        ("backup-webhook", ["delivered"]),
        ("pager", ["failed"]),
    ):
        connector = make_connector(name, "https://hooks.example.invalid/x")
        delivery = make_delivery(
            alert=alert,
            connector=connector,
            status=outcomes[-1],
            attempt_count=len(outcomes),
            created_at=now - timedelta(hours=2),
        )
        for number, outcome in enumerate(outcomes, start=1):
            record = make_execution(
                delivery=delivery,
                actor=actor,
                execution_status=outcome,
                attempt_number=number,
                executed_at=now - timedelta(hours=2, minutes=-number),
            )
            records.setdefault(outcome, []).append(record.execution_id)
    return records


def test_auditor_filters_execution_records_and_exports_them(roles, open_session):
    # given execution records and an auditor with admin access
    auditor = make_user("arthur", AUDITORS, is_staff=True)
    records = _attempts(auditor)
    session = open_session("auditor-admin")
    page = session.page

    # when the auditor signs in to the admin and opens the execution records
    log_in(session, "/admin/", "arthur")
    session.shot("admin-index")
    follow(page.get_by_role("link", name="Execution records").first)
    session.shot("execution-records")
    # and keeps only the failed ones
    follow(page.locator("#changelist-filter").get_by_role("link", name="Failed", exact=True))
    assert "execution_status__exact=failed" in page.url
    listed = page.locator("#result_list tbody th a").all_inner_texts()
    assert sorted(listed) == sorted(records["failed"])
    session.shot("execution-records-failed")

    # and exports them as CSV and as JSON Lines
    with page.expect_download() as csv_download:
        page.get_by_role("button", name="CSV").click()
    with page.expect_download() as jsonl_download:
        page.get_by_role("button", name="JSON Lines").click()

    # then both files hold exactly the failed records
    csv_rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text())))
    assert sorted(row["execution_id"] for row in csv_rows) == sorted(records["failed"])
    assert {row["execution_status"] for row in csv_rows} == {"failed"}
    lines = Path(jsonl_download.value.path()).read_text().splitlines()
    assert sorted(json.loads(line)["execution_id"] for line in lines) == sorted(records["failed"])
    assert csv_download.value.suggested_filename.endswith(".csv")
    assert jsonl_download.value.suggested_filename.endswith(".jsonl")

    # and each export is on record as evidence, with its filter and row count
    exports = list(
        Evidence.objects.filter(metadata_kind=MetadataKind.ADMIN_EXPORT).order_by("sequence")
    )
    assert [e.payload["subject"]["format"] for e in exports] == ["csv", "jsonl"]
    assert {e.signer for e in exports} == {"arthur"}
    for export in exports:
        subject = export.payload["subject"]
        assert subject["model"] == "closure.executionrecord"
        assert subject["query"] == {"execution_status__exact": ["failed"]}
        assert subject["row_count"] == len(records["failed"])

    # and the record itself is read-only, with its related records linked
    follow(page.locator("#result_list tbody th a").first)
    assert page.locator("input[type=submit][name=_save]").count() == 0
    assert page.get_by_role("link", name="Evidence rows of this record").count() == 1
    session.shot("execution-record")
    page.goto("/admin/closure/evidence/")
    session.shot("evidence-changelist")
    assert session.problems == []
