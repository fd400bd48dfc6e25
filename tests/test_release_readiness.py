"""Release readiness (a read, check by check) and the operator runbook export (recorded)."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connection
from django.test.utils import CaptureQueriesContext

from closure.choices import MetadataKind
from closure.evidence.canonical import canonical_json, isoformat, sha256_hex
from closure.evidence.chain import chain_hash, checkpoint_message, key_id, public_key_b64, sign
from closure.evidence.ledger import evidence_envelope
from closure.models import Evidence, EvidenceCheckpoint
from closure.selectors.readiness import release_readiness, runbook_build, runbook_markdown
from closure.services.evidence import evidence_checkpoint_create
from closure.services.security import login_lockout_record
from tests.conftest import A, B, assert_invalid, client_for, closure_counts
from tests.factories import (
    make_alert,
    make_closure_review,
    make_delivery,
    make_evidence,
    make_execution,
)
from tests.test_evidence import DELETE_ROW, SET_PAYLOAD, _rewrite_row, _tamper

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
        "evidence_verified=rows 1-1 verified now",
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
        "open_item_count=2",
        f"open_items={FAILED},executive_retry_health_alert_retry_execution_failed",
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


# -- the chain check rests on the latest signed checkpoint ------------------------------------


def _chain_check(**options) -> dict:
    return _checks(release_readiness(**options))["evidence_chain_verifies"]


def _rows(count: int, start: int = 0) -> None:
    for number in range(start, start + count):
        make_evidence(kind=MetadataKind.HEALTH, session_id=f"s{number}", signer="olivia")


def test_readiness_verifies_only_the_rows_after_a_valid_checkpoint(evidence_key, closed_loop):
    # given five rows, a signed checkpoint of them, and two rows appended after it
    _rows(5)
    checkpoint = evidence_checkpoint_create()
    _rows(2, start=5)
    head = Evidence.objects.get(sequence=7)

    # when readiness is read
    body = release_readiness()

    # then the check passes and says what the checkpoint proves and what was verified now
    stamp = isoformat(checkpoint.checkpointed_at)
    proven = (
        f"rows 1-5 proven by the checkpoint at sequence 5 (key {key_id(evidence_key)}) "
        f"signed at {stamp}; rows 5-7 verified now"
    )
    assert _checks(body)["evidence_chain_verifies"] == {
        "id": "evidence_chain_verifies",
        "title": "The evidence chain verifies",
        "status": "pass",
        "evidence": [
            "evidence_ok=true",
            "evidence_count=7",
            f"evidence_head={head.chain_hash}",
            "first_broken_sequence=",
            "checkpoint_head_sequence=5",
            f"evidence_verified={proven}",
        ],
        "operator_action": None,
    }
    assert body["evidence_chain"]["proven_by_checkpoint_through"] == 5
    assert body["evidence_chain"]["checkpoint"]["matches_chain"] is True


def test_readiness_leaves_rows_before_the_checkpoint_to_the_full_verification(
    evidence_key, closed_loop
):
    # given a checkpoint of three rows, one more row, then the second row altered
    _rows(3)
    evidence_checkpoint_create()
    _rows(1, start=3)
    row = Evidence.objects.get(sequence=2)
    _tamper(SET_PAYLOAD, [json.dumps({**row.payload, "signer": "mallory"}), 2])

    # when readiness is read as usual, and with a full verification
    usual = _chain_check()
    full = _chain_check(full=True)

    # then only the full verification reads the row the checkpoint vouches for
    assert (usual["status"], usual["evidence"][-1]) == (
        "pass",
        "evidence_verified=rows 1-3 proven by the checkpoint at sequence 3 (key "
        f"{key_id(evidence_key)}) signed at "
        f"{isoformat(EvidenceCheckpoint.objects.get().checkpointed_at)}; rows 3-4 verified now",
    )
    assert full["status"] == "fail"
    assert full["evidence"][:4] == [
        "evidence_ok=false",
        "evidence_count=1",
        f"evidence_head={Evidence.objects.get(sequence=1).chain_hash}",
        "first_broken_sequence=2",
    ]
    assert full["evidence"][-1] == "evidence_verified=rows 1-1 verified now"


def test_console_readiness_page_verifies_everything_with_full(operator, evidence_key, closed_loop):
    _rows(3)
    evidence_checkpoint_create()
    row = Evidence.objects.get(sequence=2)
    _tamper(SET_PAYLOAD, [json.dumps({**row.payload, "signer": "mallory"}), 2])

    usual = client_for(operator).get(CONSOLE_READINESS).content.decode()
    full = client_for(operator).get(CONSOLE_READINESS + "?full=1").content.decode()

    assert "evidence_verified=rows 1-3 proven by the checkpoint at sequence 3" in usual
    assert "first_broken_sequence=2" in full
    assert "evidence_verified=rows 1-1 verified now" in full


def test_readiness_api_verifies_everything_with_full_true(operator, evidence_key, closed_loop):
    _rows(3)
    evidence_checkpoint_create()
    row = Evidence.objects.get(sequence=2)
    _tamper(SET_PAYLOAD, [json.dumps({**row.payload, "signer": "mallory"}), 2])
    client = client_for(operator)

    usual = _checks(client.get(READINESS).json())["evidence_chain_verifies"]
    full = _checks(client.get(READINESS, {"full": "true"}).json())["evidence_chain_verifies"]

    assert usual["status"] == "pass"
    assert (full["status"], full["evidence"][3]) == ("fail", "first_broken_sequence=2")
    assert_invalid(client.get(READINESS, {"full": "maybe"}), {"full": ["Must be true or false."]})


def test_readiness_detects_a_payload_altered_after_the_checkpoint(evidence_key, closed_loop):
    # given a checkpoint of three rows, then three more, the fifth altered
    _rows(3)
    evidence_checkpoint_create()
    _rows(3, start=3)
    row = Evidence.objects.get(sequence=5)
    _tamper(SET_PAYLOAD, [json.dumps({**row.payload, "signer": "mallory"}), 5])

    check = _chain_check()

    # then it fails naming the row, exactly as a full verification does
    assert check["status"] == "fail"
    assert check["evidence"] == [
        "evidence_ok=false",
        "evidence_count=4",
        f"evidence_head={Evidence.objects.get(sequence=4).chain_hash}",
        "first_broken_sequence=5",
        "checkpoint_head_sequence=3",
        "evidence_verified=rows 1-4 verified now",
    ]
    assert check["operator_action"] == (
        "Stop and escalate: the ledger was changed outside the application (first broken "
        "sequence 5: payload does not match payload_sha256). Do not release."
    )


def test_readiness_detects_a_row_deleted_after_the_checkpoint(evidence_key, closed_loop):
    _rows(3)
    evidence_checkpoint_create()
    _rows(3, start=3)
    _tamper(DELETE_ROW, [4])

    check = _chain_check()

    assert check["status"] == "fail"
    assert check["evidence"][:4] == [
        "evidence_ok=false",
        "evidence_count=3",
        f"evidence_head={Evidence.objects.get(sequence=3).chain_hash}",
        "first_broken_sequence=4",
    ]
    assert "sequence 4: sequence gap: expected 4)" in check["operator_action"]


def test_readiness_detects_a_checkpoint_head_row_rewritten_consistently(evidence_key, closed_loop):
    # given a checkpoint of three rows, then its head row rewritten with its own hashes
    # recomputed, and every later row relinked, so that the chain is consistent on its own
    _rows(3)
    evidence_checkpoint_create()
    _rows(1, start=3)
    rows = list(Evidence.objects.order_by("sequence"))
    third = _rewrite_row(3, {**rows[2].payload, "signer": "mallory"}, rows[1].chain_hash)
    fourth = chain_hash(third, rows[3].payload_sha256)
    _tamper(
        "UPDATE closure_evidence SET previous_hash = %s, chain_hash = %s WHERE sequence = %s",
        [third, fourth, 4],
    )

    check = _chain_check()

    # then the row at the checkpoint's head is not the signed one
    assert check["status"] == "fail"
    assert "first_broken_sequence=3" in check["evidence"]
    assert check["operator_action"].startswith(
        "Stop and escalate: the ledger was changed outside the application (first broken "
        "sequence 3: chain_hash differs from the signed checkpoint of "
    )


def test_readiness_does_not_trust_a_checkpoint_with_a_bad_signature(evidence_key, closed_loop):
    # given three rows and a checkpoint of them signed by a key nobody trusts, then the second
    # row altered (a forger's checkpoint must not hide it)
    _rows(3)
    head = Evidence.objects.get(sequence=3)
    stranger = Ed25519PrivateKey.generate()
    public = public_key_b64(stranger)
    stamp = "2026-11-27T00:00:00.000000Z"
    message = checkpoint_message(
        head_sequence=3,
        row_count=3,
        chain_head=head.chain_hash,
        checkpointed_at=stamp,
        key=key_id(public),
    )
    EvidenceCheckpoint.objects.create(
        head_sequence=3,
        row_count=3,
        chain_head=head.chain_hash,
        checkpointed_at="2026-11-27T00:00:00Z",
        key_id=key_id(evidence_key),  # claims the trusted key, but it did not sign
        public_key=public,
        signature=sign(stranger, message),
    )
    row = Evidence.objects.get(sequence=2)
    _tamper(SET_PAYLOAD, [json.dumps({**row.payload, "signer": "mallory"}), 2])

    body = release_readiness()

    # then the whole chain is verified and the altered row named
    check = _checks(body)["evidence_chain_verifies"]
    assert check["status"] == "fail"
    assert check["evidence"][3:] == [
        "first_broken_sequence=2",
        "checkpoint_head_sequence=3",
        "evidence_verified=rows 1-1 verified now",
    ]
    assert body["evidence_chain"]["checkpoint"]["signature_ok"] is False
    assert body["evidence_chain"]["proven_by_checkpoint_through"] is None


def test_readiness_with_a_checkpoint_reads_in_a_fixed_number_of_queries(
    auditor, evidence_key, closed_loop
):
    reader = client_for(auditor)
    _rows(2)
    evidence_checkpoint_create()

    with CaptureQueriesContext(connection) as few:
        first = _readiness(reader)
    _rows(30, start=2)
    with CaptureQueriesContext(connection) as many:
        second = _readiness(reader)

    # the same queries whatever the number of rows after the checkpoint: the latest checkpoint
    # is read once, and the rows from its head on in one streaming read
    assert len(many.captured_queries) == len(few.captured_queries)
    assert _checks(first)["evidence_chain_verifies"]["evidence"][-1].endswith(
        "; row 2 verified now, none after it"
    )
    assert _checks(second)["evidence_chain_verifies"]["evidence"][-1].endswith(
        "; rows 2-32 verified now"
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
