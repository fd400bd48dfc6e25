"""Release readiness (a read, check by check) and the operator runbook export (recorded)."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from closure.chain import canonical_json, sha256_hex
from closure.choices import MetadataKind
from closure.evidence import evidence_envelope
from closure.models import Evidence
from closure.ops.lockout import login_lockout_record
from closure.readiness import release_readiness, runbook_build, runbook_markdown
from tests.conftest import A, B, assert_invalid, client_for, closure_counts
from tests.factories import (
    make_alert,
    make_closure_review,
    make_delivery,
    make_evidence,
    make_execution,
)
from tests.test_evidence import SET_PAYLOAD, _tamper

pytestmark = pytest.mark.django_db

READINESS = f"{B}/final-reporting-release-readiness"
RUNBOOK = f"{B}/final-reporting-operator-runbook-export"
FAILED = "executive_retry_health_alert_delivery_failed"
CHECK_IDS = [
    "closure_closed",
    "alert_delivery_failures_resolved",
    "retry_execution_failures_resolved",
    "acknowledgements_complete",
    "evidence_chain_verifies",
    "closure_review_recorded",
]


def _checks(body: dict) -> dict[str, dict]:
    return {check["id"]: check for check in body["checks"]}


def _readiness(client) -> dict:
    response = client.get(READINESS)
    assert response.status_code == 200, response.json()
    return response.json()


def test_readiness_is_ready_when_closed_reviewed_and_the_chain_verifies(
    operator, auditor, closed_loop, evidence_key
):
    # given a closed loop, confirmed by a review
    review = make_closure_review(actor=operator)
    head = Evidence.objects.get()

    # when an auditor reads release readiness
    body = _readiness(client_for(auditor))

    # then every check passes and the release closure is approved
    assert body["schema_version"] == (
        "cavra.go-backend-pilot.rollback-drill-final-reporting-release-readiness.v1"
    )
    assert (body["readiness_state"], body["release_decision"]) == (
        "ready",
        "approve_release_closure",
    )
    assert body["release_decision_reason"] == (
        f"All 6 readiness checks pass: closure is closed, confirmed by {review.review_id}, and "
        f"the evidence chain verifies through sequence 1."
    )
    assert [c["id"] for c in body["checks"]] == CHECK_IDS
    assert {c["status"] for c in body["checks"]} == {"pass"}
    assert {c["operator_action"] for c in body["checks"]} == {None}
    assert (body["passed_count"], body["failed_count"]) == (6, 0)
    assert _checks(body)["closure_review_recorded"]["evidence"] == [
        f"latest_review={review.review_id}",
        "decision=confirm_closed",
        f"reviewed_at={body['latest_closure_review']['reviewed_at']}",
        "reviewed_closure_state=closed",
        "review_evidence_sequence=1",
        "changes_since_review=0",
    ]
    assert _checks(body)["evidence_chain_verifies"]["evidence"] == [
        "evidence_ok=true",
        "evidence_count=1",
        f"evidence_head={head.chain_hash}",
        "first_broken_sequence=",
        "checkpoint_head_sequence=",
    ]


def test_readiness_is_blocked_with_each_failing_check_and_its_action(
    operator, auditor, report, failed_delivery, evidence_key
):
    # given a failed delivery whose manual retry failed too, and no review
    make_execution(
        delivery=failed_delivery,
        actor=operator,
        attempt_number=2,
        trigger="manual",
    )
    failed_execution = failed_delivery.executions.get(attempt_number=2)

    body = _readiness(client_for(auditor))

    checks = _checks(body)
    assert (body["readiness_state"], body["release_decision"]) == (
        "blocked",
        "hold_release_closure",
    )
    assert body["release_decision_reason"] == (
        "4 of 6 readiness checks fail: closure_closed, alert_delivery_failures_resolved, "
        "retry_execution_failures_resolved, closure_review_recorded."
    )
    assert checks["closure_closed"]["evidence"] == [
        "closure_state=open",
        "open_item_count=1",
        f"open_items={FAILED}",
    ]
    assert checks["alert_delivery_failures_resolved"] == {
        "id": "alert_delivery_failures_resolved",
        "title": "No unresolved alert delivery failures",
        "status": "fail",
        "evidence": ["failed_deliveries=1", "exhausted_deliveries=0"],
        "operator_action": f"Plan and run retries (POST {A}/retry-plan, then POST "
        f"{A}/retry-worker-run with execute=true), retry by hand, or waive with a reason.",
    }
    assert checks["retry_execution_failures_resolved"]["evidence"] == [
        "unresolved_failed_retry_executions=1",
        f"refs={failed_execution.execution_id}",
        "latest_live_worker_run_failed=false",
    ]
    assert checks["acknowledgements_complete"]["status"] == "pass"
    assert checks["evidence_chain_verifies"]["status"] == "pass"
    assert checks["closure_review_recorded"]["evidence"] == ["latest_review=none"]
    assert checks["closure_review_recorded"]["operator_action"] == (
        f"Record a closure review: POST {B}/final-reporting-closure-reviews."
    )
    assert body["latest_closure_review"] is None


def test_readiness_counts_a_failed_retry_as_resolved_once_the_delivery_is_delivered(
    operator, report, offline_webhook, evidence_key
):
    alert = make_alert(report=report, actor=operator)
    delivery = make_delivery(alert=alert, connector=offline_webhook, status="delivered")
    make_execution(delivery=delivery, actor=operator, trigger="retry")

    checks = _checks(release_readiness())

    assert checks["retry_execution_failures_resolved"]["evidence"][0] == (
        "unresolved_failed_retry_executions=0"
    )


def test_readiness_wants_a_new_review_after_the_loop_changed(operator, closed_loop, evidence_key):
    # given a confirmed review, then a change to the loop recorded after it
    make_closure_review(actor=operator)
    make_evidence(kind=MetadataKind.HEALTH, session_id="later-report", signer="olivia")
    # (reading the ledger or a locked-out sign-in is no change: neither invalidates the review)
    make_evidence(kind=MetadataKind.EVIDENCE_EXPORT, session_id="an-export", signer="arthur")
    login_lockout_record(username="mallory", ip_address="192.0.2.7")

    body = release_readiness()

    check = _checks(body)["closure_review_recorded"]
    assert check["status"] == "fail"
    assert "changes_since_review=1" in check["evidence"]
    assert check["operator_action"].startswith("The reporting loop changed since the latest review")
    assert body["release_decision"] == "hold_release_closure"


def test_readiness_fails_the_chain_check_naming_the_broken_sequence(
    operator, closed_loop, evidence_key
):
    make_closure_review(actor=operator)
    make_evidence(kind=MetadataKind.EVIDENCE_EXPORT, session_id="x", signer="arthur")
    row = Evidence.objects.get(sequence=2)
    _tamper(SET_PAYLOAD, [json.dumps({**row.payload, "signer": "mallory"}), 2])

    check = _checks(release_readiness())["evidence_chain_verifies"]

    assert check["status"] == "fail"
    assert "first_broken_sequence=2" in check["evidence"]
    assert check["operator_action"] == (
        "Stop and escalate: the ledger was changed outside the application (first broken "
        "sequence 2: payload does not match payload_sha256). Do not release."
    )


def test_readiness_reads_only_and_in_a_fixed_number_of_queries(
    operator, auditor, report, failed_delivery, evidence_key
):
    reader = client_for(auditor)
    make_closure_review(actor=operator, decision="accept_open_risks", **{FAILED: "vendor"})
    before = closure_counts()

    with CaptureQueriesContext(connection) as few:
        _readiness(reader)
    for number in range(30):
        make_evidence(kind=MetadataKind.HEALTH, session_id=f"s{number}", signer="olivia")
        make_execution(
            delivery=failed_delivery, actor=operator, attempt_number=number + 2, trigger="retry"
        )
    with CaptureQueriesContext(connection) as many:
        body = _readiness(reader)

    assert closure_counts() == {**before, "Evidence": before["Evidence"] + 30,
                                "ExecutionRecord": before["ExecutionRecord"] + 30}  # fmt: skip
    assert len(many.captured_queries) == len(few.captured_queries)
    assert _checks(body)["retry_execution_failures_resolved"]["evidence"][0] == (
        "unresolved_failed_retry_executions=30"
    )


def test_readiness_needs_view_permissions(outsider, platform_owner, closed_loop):
    assert client_for(None).get(READINESS).status_code == 401
    assert client_for(outsider).get(READINESS).status_code == 403
    assert client_for(platform_owner).get(READINESS).status_code == 200


# -- the runbook export -------------------------------------------------------------------------


def test_runbook_export_records_readiness_and_runbook_and_returns_the_sections(
    api, operator, closed_loop, evidence_key
):
    make_closure_review(actor=operator)

    response = api.post(RUNBOOK, {}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    summary, export = Evidence.objects.filter(sequence__gte=2).order_by("sequence")
    assert summary.metadata_kind == MetadataKind.READINESS_SUMMARY
    assert export.metadata_kind == MetadataKind.RUNBOOK_EXPORT
    assert body["readiness_metadata"] == evidence_envelope(summary)
    assert body["metadata"] == evidence_envelope(export)
    runbook = body["runbook"]
    assert runbook["runbook_id"] == export.session_id
    assert runbook["runbook_id"].startswith("gordackfinaloperatorrunbook-")
    assert summary.session_id.startswith("gordackfinalreleasereadiness-")
    assert [s["id"] for s in runbook["sections"]] == [
        "purpose",
        "readiness_gate",
        "operator_steps",
        "evidence_to_attach",
        "private_boundary",
        "checks",
    ]
    assert (runbook["readiness_state"], runbook["release_decision"]) == (
        "ready",
        "approve_release_closure",
    )
    assert runbook["sections"][5]["checks"] == body["readiness"]["checks"]
    attach = runbook["sections"][3]["items"]
    assert attach[0] == (
        f"Release readiness summary: evidence sequence 2, chain hash {summary.chain_hash}."
    )
    subject = export.payload["subject"]
    assert subject["runbook_sha256"] == sha256_hex(canonical_json(runbook))
    assert subject["markdown_sha256"] == body["markdown_sha256"]
    assert subject["markdown_sha256"] == sha256_hex(runbook_markdown(runbook))
    assert subject["readiness_evidence_sequence"] == 2
    assert summary.payload["subject"]["checks"][0] == {
        "id": "closure_closed",
        "status": "pass",
        "evidence": ["closure_state=closed", "open_item_count=0", "open_items="],
    }


@pytest.mark.parametrize(
    ("query", "headers"),
    [("?format=markdown", {}), ("", {"HTTP_ACCEPT": "text/markdown"})],
)
def test_runbook_export_offers_markdown_as_an_attachment(
    api, report, failed_delivery, evidence_key, query, headers
):
    response = api.post(RUNBOOK + query, {}, format="json", **headers)

    assert response.status_code == 201
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    export = Evidence.objects.get(metadata_kind=MetadataKind.RUNBOOK_EXPORT)
    assert response["Content-Disposition"] == f'attachment; filename="{export.session_id}.md"'
    text = response.content.decode()
    assert text.startswith("# CAVRA final reporting closure: operator runbook\n")
    assert "- Release decision: **hold_release_closure**" in text
    assert "## Private boundary" in text
    assert (
        "| No unresolved alert delivery failures (`alert_delivery_failures_resolved`) | FAIL |"
        in text
    )
    assert sha256_hex(response.content) == export.payload["subject"]["markdown_sha256"]


def test_runbook_export_permissions_and_strict_input(
    auditor, platform_owner, outsider, closed_loop, evidence_key
):
    before = closure_counts()

    denied_owner = client_for(platform_owner).post(RUNBOOK, {}, format="json")
    denied_outsider = client_for(outsider).post(RUNBOOK, {}, format="json")
    unknown = client_for(auditor).post(RUNBOOK, {"format": "pdf"}, format="json")

    assert (denied_owner.status_code, denied_outsider.status_code) == (403, 403)
    assert_invalid(unknown, {"format": ["Unknown field."]})
    assert closure_counts() == before
    allowed = client_for(auditor).post(RUNBOOK, {}, format="json")
    assert allowed.status_code == 201
    assert Evidence.objects.count() == before["Evidence"] + 2


def test_runbook_functions_render_the_same_document_for_the_same_readiness(closed_loop):
    readiness = release_readiness()

    first = runbook_build(
        readiness=readiness, runbook_id="rb-1", generated_by="olivia", readiness_evidence=None
    )
    second = runbook_build(
        readiness=readiness, runbook_id="rb-1", generated_by="olivia", readiness_evidence=None
    )

    assert runbook_markdown(first) == runbook_markdown(second)
    assert first["sections"][2]["ordered"] is True
    assert first["sections"][2]["items"][0] == (
        f"The latest closure review covers the current state: Record a closure review: POST "
        f"{B}/final-reporting-closure-reviews."
    )


# -- the console pages ----------------------------------------------------------------------------

CONSOLE_READINESS = "/console/readiness/"
CONSOLE_RUNBOOK = "/console/readiness/runbook/"
SECTION_TITLES = [
    "Purpose",
    "Readiness gate",
    "Operator steps",
    "Evidence to attach",
    "Private boundary",
    "Checks",
]


def _assert_csp_clean(html: str) -> None:
    """The strict CSP allows no inline script or style: none is written."""
    assert "<script>" not in html
    assert " style=" not in html
    assert "<style" not in html


def test_console_readiness_page_shows_each_check_and_writes_nothing(
    operator, report, failed_delivery, evidence_key
):
    before = closure_counts()

    response = client_for(operator).get(CONSOLE_READINESS)

    assert response.status_code == 200
    html = response.content.decode()
    assert "hold_release_closure" in html
    for check_id in CHECK_IDS:
        assert f'id="check-{check_id}"' in html
    assert "failed_deliveries=1" in html
    assert f'action="{CONSOLE_RUNBOOK}"' in html
    _assert_csp_clean(html)
    assert closure_counts() == before


def test_console_readiness_page_needs_the_readiness_permissions(outsider, closed_loop):
    assert client_for(outsider).get(CONSOLE_READINESS).status_code == 403
    assert client_for(None).get(CONSOLE_READINESS).status_code == 302


def test_console_closure_page_links_to_readiness(operator, closed_loop):
    html = client_for(operator).get("/console/closure/").content.decode()

    assert f'href="{CONSOLE_READINESS}"' in html


def test_console_runbook_export_records_evidence_and_renders_the_printable_page(
    operator, closed_loop, evidence_key
):
    make_closure_review(actor=operator)
    before = Evidence.objects.count()

    response = client_for(operator).post(CONSOLE_RUNBOOK, {"format": "html"})

    assert response.status_code == 200
    summary, export = Evidence.objects.filter(sequence__gt=before).order_by("sequence")
    assert (summary.metadata_kind, export.metadata_kind) == (
        MetadataKind.READINESS_SUMMARY,
        MetadataKind.RUNBOOK_EXPORT,
    )
    assert summary.signer == export.signer == "olivia"
    html = response.content.decode()
    assert f'<dd class="id">{export.session_id}</dd>' in html
    assert "<strong>approve_release_closure</strong>" in html
    assert [title for title in SECTION_TITLES if f">{title}</h2>" in html] == SECTION_TITLES
    assert f'href="/console/evidence/{export.sequence}/"' in html
    assert export.payload["subject"]["markdown_sha256"] in html
    _assert_csp_clean(html)


def test_console_runbook_export_as_markdown_is_the_recorded_document(
    auditor, report, failed_delivery, evidence_key
):
    response = client_for(auditor).post(CONSOLE_RUNBOOK, {"format": "markdown"})

    assert response.status_code == 200
    export = Evidence.objects.get(metadata_kind=MetadataKind.RUNBOOK_EXPORT)
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="{export.session_id}.md"'
    assert response.content.startswith(b"# CAVRA final reporting closure: operator runbook\n")
    assert sha256_hex(response.content) == export.payload["subject"]["markdown_sha256"]


def test_console_runbook_export_refuses_get_and_users_without_permission(
    operator, platform_owner, closed_loop, evidence_key
):
    before = closure_counts()

    by_get = client_for(operator).get(CONSOLE_RUNBOOK)
    by_owner = client_for(platform_owner).post(CONSOLE_RUNBOOK, {"format": "html"})

    assert (by_get.status_code, by_owner.status_code) == (405, 403)
    assert closure_counts() == before
