"""Closure reviews: a reviewer's decision on the dashboard as it is, with snapshot and hash."""

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.canonical import canonical_json, sha256_hex
from closure.evidence.ledger import evidence_envelope
from closure.models import ClosureReview, Evidence, EvidenceImmutableError
from closure.selectors import closure_dashboard
from closure.services.reviews import closure_review_create
from tests.conftest import B, assert_invalid, assert_problem, client_for, closure_counts
from tests.factories import make_alert, make_closure_review, make_connector, make_delivery

pytestmark = pytest.mark.django_db

REVIEWS = f"{B}/final-reporting-closure-reviews"
FAILED = "executive_retry_health_alert_delivery_failed"
ACK_OUTSTANDING = "executive_retry_health_alert_acknowledgement_outstanding"


@pytest.fixture
def open_loop(operator, report, failed_delivery):
    """Two open risks: a failed delivery, and a delivered alert nobody has acknowledged."""
    backup = make_connector("backup-webhook", "https://hooks.example.invalid/backup")
    alert = make_alert(report=report, actor=operator, providers=["backup-webhook"])
    make_delivery(alert=alert, connector=backup, status="delivered")
    assert closure_dashboard()["open_items"] == [FAILED, ACK_OUTSTANDING]
    return report


def test_confirm_closed_records_the_snapshot_its_hash_and_evidence(api, operator, closed_loop):
    # when an operator confirms a closed loop
    response = api.post(REVIEWS, {"decision": "confirm_closed", "note": "all clear"}, format="json")

    # then the review holds the dashboard it saw, hashed, and the same is in the evidence
    assert response.status_code == 201, response.json()
    review = ClosureReview.objects.get()
    body = response.json()
    assert body["review"] == {
        "review_id": review.review_id,
        "reviewed_at": body["review"]["reviewed_at"],
        "reviewer": "olivia",
        "decision": "confirm_closed",
        "closure_state": "closed",
        "alert_level": "healthy",
        "open_items": [],
        "risk_notes": {},
        "note": "all clear",
        "snapshot_sha256": sha256_hex(canonical_json(review.snapshot)),
        "snapshot": review.snapshot,
    }
    assert review.review_id.startswith("gordackfinalclosurereview-")
    assert len(review.review_id) == len("gordackfinalclosurereview-") + 16
    assert review.snapshot["closure_state"] == "closed"
    assert review.reviewer == operator
    evidence = Evidence.objects.get(metadata_kind=MetadataKind.CLOSURE_REVIEW)
    assert body["metadata"] == evidence_envelope(evidence)
    assert evidence.session_id == review.review_id
    assert evidence.signer == "olivia"
    assert evidence.payload["subject"] == body["review"]
    assert body["actor"] == {
        "username": "olivia",
        "user_id": operator.pk,
        "authentication": "session",
    }


def test_confirm_closed_of_an_open_loop_is_a_conflict_and_writes_nothing(api, open_loop):
    before = closure_counts()

    response = api.post(REVIEWS, {"decision": "confirm_closed"}, format="json")

    assert_problem(
        response,
        status=409,
        code="closure_not_closed",
        title="Conflict",
        detail=f"closure is open ({FAILED}, {ACK_OUTSTANDING}); confirm_closed needs a closed "
        f"dashboard, or accept the open risks with a note on each",
    )
    assert closure_counts() == before


def test_accept_open_risks_without_a_note_per_risk_names_the_missing_codes(api, open_loop):
    before = closure_counts()

    none = api.post(REVIEWS, {"decision": "accept_open_risks"}, format="json")
    one = api.post(
        REVIEWS,
        {
            "decision": "accept_open_risks",
            "risk_notes": {FAILED: "vendor outage", ACK_OUTSTANDING: "  "},
        },
        format="json",
    )

    assert_problem(
        none,
        status=400,
        code="risk_notes_missing",
        title="Invalid input",
        detail=f"a note is required for every open risk; missing: {FAILED}, {ACK_OUTSTANDING}",
        errors={
            f"risk_notes.{FAILED}": ["A note is required for this open risk."],
            f"risk_notes.{ACK_OUTSTANDING}": ["A note is required for this open risk."],
        },
    )
    assert one.status_code == 400
    assert one.json()["code"] == "risk_notes_missing"
    assert one.json()["errors"] == {
        f"risk_notes.{ACK_OUTSTANDING}": ["A note is required for this open risk."]
    }
    assert closure_counts() == before


def test_accept_open_risks_with_a_note_for_each_is_recorded(api, open_loop):
    notes = {FAILED: "vendor outage, ticket VND-7", ACK_OUTSTANDING: "recipient on leave"}

    response = api.post(
        REVIEWS, {"decision": "accept_open_risks", "risk_notes": notes}, format="json"
    )

    assert response.status_code == 201, response.json()
    review = ClosureReview.objects.get()
    assert (review.decision, review.closure_state, review.alert_level) == (
        "accept_open_risks",
        "open",
        "critical",
    )
    assert review.open_items == [FAILED, ACK_OUTSTANDING]
    assert review.risk_notes == notes
    evidence = Evidence.objects.get(metadata_kind=MetadataKind.CLOSURE_REVIEW)
    assert (evidence.decision_count, evidence.blocked_count, evidence.approval_required_count) == (
        2,
        1,
        2,
    )


def test_accept_open_risks_refuses_notes_for_risks_that_are_not_open(api, open_loop):
    before = closure_counts()
    notes = {FAILED: "a", ACK_OUTSTANDING: "b", "executive_retry_health_alert_not_sent": "c"}

    response = api.post(
        REVIEWS, {"decision": "accept_open_risks", "risk_notes": notes}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "risk_notes_unknown"
    assert response.json()["errors"] == {
        "risk_notes.executive_retry_health_alert_not_sent": ["Not an open risk."]
    }
    assert closure_counts() == before


def test_accept_open_risks_of_a_closed_loop_is_a_conflict(api, closed_loop):
    response = api.post(REVIEWS, {"decision": "accept_open_risks"}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "no_open_risks"
    assert ClosureReview.objects.count() == 0


def test_review_input_is_strict(api, closed_loop):
    before = closure_counts()

    unknown = api.post(
        REVIEWS, {"decision": "confirm_closed", "reviewer": "mallory"}, format="json"
    )
    bad_choice = api.post(REVIEWS, {"decision": "looks_fine"}, format="json")
    bad_note = api.post(
        REVIEWS, {"decision": "accept_open_risks", "risk_notes": {FAILED: 3}}, format="json"
    )

    assert_invalid(unknown, {"reviewer": ["Unknown field."]})
    assert_invalid(bad_choice, {"decision": ['"looks_fine" is not a valid choice.']})
    assert_invalid(bad_note, {f"risk_notes.{FAILED}": ["Must be a string."]})
    assert closure_counts() == before


def test_reviews_need_review_closure_to_record_and_view_to_list(auditor, outsider, closed_loop):
    before = closure_counts()

    anonymous = client_for(None).post(REVIEWS, {"decision": "confirm_closed"}, format="json")
    auditor_post = client_for(auditor).post(REVIEWS, {"decision": "confirm_closed"}, format="json")
    outsider_get = client_for(outsider).get(REVIEWS)
    auditor_get = client_for(auditor).get(REVIEWS)

    assert anonymous.status_code == 401
    assert auditor_post.status_code == 403
    assert auditor_post.json()["code"] == "permission_denied"
    assert outsider_get.status_code == 403
    assert auditor_get.status_code == 200
    assert closure_counts() == before


def test_review_list_is_newest_first_filterable_and_in_fixed_queries(
    operator, auditor, closed_loop, django_assert_num_queries
):
    # given three reviews
    reviews = [make_closure_review(actor=operator) for _ in range(3)]
    reader = client_for(auditor)

    # when the list is read: session, user, permissions, count, page (the reviewer joined)
    with django_assert_num_queries(5):
        response = reader.get(REVIEWS)
    body = response.json()

    # then the newest comes first, without the snapshot
    assert body["count"] == 3
    assert [r["review_id"] for r in body["results"]] == [r.review_id for r in reversed(reviews)]
    assert "snapshot" not in body["results"][0]
    assert body["results"][0]["reviewer"] == "olivia"

    # and with ten more, still five queries; filters apply
    for _ in range(10):
        make_closure_review(actor=operator)
    with django_assert_num_queries(5):
        assert reader.get(REVIEWS).json()["count"] == 13
    assert reader.get(REVIEWS, {"decision": "accept_open_risks"}).json()["count"] == 0
    assert reader.get(REVIEWS, {"reviewer": "olivia"}).json()["count"] == 13


def test_review_detail_has_the_snapshot_and_its_evidence(operator, auditor, closed_loop):
    review = make_closure_review(actor=operator)
    reader = client_for(auditor)

    found = reader.get(f"{REVIEWS}/{review.review_id}")
    missing = reader.get(f"{REVIEWS}/gordackfinalclosurereview-0000000000000000")

    assert found.status_code == 200
    assert found.json()["review"]["snapshot"] == review.snapshot
    assert found.json()["metadata"]["session_id"] == review.review_id
    assert missing.status_code == 404


def test_review_post_honours_idempotency_keys(api, closed_loop):
    headers = {"HTTP_IDEMPOTENCY_KEY": "review-1"}

    first = api.post(REVIEWS, {"decision": "confirm_closed"}, format="json", **headers)
    replay = api.post(REVIEWS, {"decision": "confirm_closed"}, format="json", **headers)

    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert ClosureReview.objects.count() == 1


def test_database_refuses_a_confirmed_review_of_an_open_loop(operator):
    with pytest.raises(IntegrityError), transaction.atomic():
        ClosureReview.objects.create(
            reviewed_at=timezone.now(),
            reviewer=operator,
            decision="confirm_closed",
            closure_state="open",
            alert_level="critical",
            snapshot={},
            snapshot_sha256="0" * 64,
        )


def test_closure_reviews_are_append_only(operator, closed_loop):
    review = closure_review_create(actor=operator, decision="confirm_closed")

    review.note = "rewritten"
    with pytest.raises(EvidenceImmutableError, match="closure reviews are never updated"):
        review.save()
    with pytest.raises(EvidenceImmutableError, match="never deleted"):
        ClosureReview.objects.all().delete()
    assert ClosureReview.objects.get().note == ""
