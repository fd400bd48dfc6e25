"""A recorded runbook export downloads again by its id, byte for byte, and the GET writes nothing.

The export's evidence row keeps the runbook and its Markdown; the by-id routes answer from it,
so a later change of state (a review, a waiver, another export) does not change the document.
"""

import pytest

from closure.choices import MetadataKind
from closure.evidence.canonical import canonical_json, sha256_hex
from closure.evidence.ledger import evidence_envelope
from closure.models import Evidence
from closure.selectors.readiness import release_readiness, runbook_build, runbook_markdown
from tests.conftest import B, assert_problem, client_for, closure_counts
from tests.factories import make_closure_review, make_evidence

pytestmark = pytest.mark.django_db

RUNBOOK = f"{B}/final-reporting-operator-runbook-export"


def _export(client) -> tuple[dict, Evidence]:
    """Record an export through the API; its answer and its evidence row."""
    response = client.post(RUNBOOK, {}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    row = Evidence.objects.get(
        metadata_kind=MetadataKind.RUNBOOK_EXPORT, session_id=body["runbook"]["runbook_id"]
    )
    return body, row


def test_runbook_export_downloads_name_the_by_id_routes(api, report, failed_delivery, evidence_key):
    body, row = _export(api)

    runbook_id = row.session_id
    assert body["downloads"] == {
        "json": f"{RUNBOOK}/{runbook_id}",
        "markdown": f"{RUNBOOK}/{runbook_id}.md",
        "printable": f"{RUNBOOK}/{runbook_id}.html",
    }


def test_runbook_download_markdown_is_the_recorded_document_byte_for_byte(
    api, report, failed_delivery, evidence_key
):
    recorded = api.post(RUNBOOK + "?format=markdown", {}, format="json")
    row = Evidence.objects.get(metadata_kind=MetadataKind.RUNBOOK_EXPORT)
    before = closure_counts()

    by_suffix = api.get(f"{RUNBOOK}/{row.session_id}.md")
    by_format = api.get(f"{RUNBOOK}/{row.session_id}?format=markdown")
    by_accept = api.get(f"{RUNBOOK}/{row.session_id}", HTTP_ACCEPT="text/markdown")

    for response in (by_suffix, by_format, by_accept):
        assert response.status_code == 200
        assert response["Content-Type"] == "text/markdown; charset=utf-8"
        assert response["Content-Disposition"] == f'attachment; filename="{row.session_id}.md"'
        assert response.content == recorded.content
        assert sha256_hex(response.content) == row.payload["subject"]["markdown_sha256"]
    assert closure_counts() == before


def test_runbook_download_json_is_the_recorded_runbook_with_its_evidence(
    api, report, failed_delivery, evidence_key
):
    body, row = _export(api)
    summary = Evidence.objects.get(metadata_kind=MetadataKind.READINESS_SUMMARY)
    before = closure_counts()

    response = api.get(body["downloads"]["json"])

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "runbook": body["runbook"],
        "markdown_sha256": body["markdown_sha256"],
        "metadata": evidence_envelope(row),
        "readiness_metadata": evidence_envelope(summary),
        "downloads": body["downloads"],
    }
    subject = row.payload["subject"]
    assert sha256_hex(canonical_json(response.json()["runbook"])) == subject["runbook_sha256"]
    assert body["markdown_sha256"] == subject["markdown_sha256"]
    assert closure_counts() == before


def test_runbook_download_printable_page_shows_the_recorded_runbook(
    auditor, report, failed_delivery, evidence_key
):
    client = client_for(auditor)
    body, row = _export(client)
    before = closure_counts()

    response = client.get(body["downloads"]["printable"])

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    html = response.content.decode()
    assert f'<dd class="id">{row.session_id}</dd>' in html
    assert "<strong>hold_release_closure</strong>" in html
    assert row.payload["subject"]["markdown_sha256"] in html
    assert f'href="{body["downloads"]["markdown"]}"' in html
    assert f'href="/console/evidence/{row.sequence}/"' in html
    assert closure_counts() == before


def test_runbook_download_is_unchanged_by_later_state(
    api, operator, report, failed_delivery, evidence_key
):
    body, row = _export(api)
    first = api.get(body["downloads"]["markdown"]).content

    make_closure_review(
        actor=operator,
        decision="accept_open_risks",
        executive_retry_health_alert_delivery_failed="accepted for the drill",
    )
    second_body, _ = _export(api)
    later = api.get(body["downloads"]["markdown"])

    current = runbook_markdown(
        runbook_build(
            readiness=release_readiness(),
            runbook_id=row.session_id,
            generated_by="olivia",
            readiness_evidence=body["readiness_metadata"],
        )
    )
    assert current.encode() != first
    assert later.content == first
    assert sha256_hex(later.content) == row.payload["subject"]["markdown_sha256"]
    assert second_body["runbook"]["runbook_id"] != row.session_id
    assert api.get(body["downloads"]["json"]).json()["runbook"] == body["runbook"]


@pytest.mark.parametrize("suffix", ["", ".md", ".html", "?format=markdown"])
def test_runbook_download_of_an_unknown_id_is_a_404_problem(api, closed_loop, suffix):
    before = closure_counts()

    response = api.get(f"{RUNBOOK}/gordackfinaloperatorrunbook-unknown{suffix}")

    assert_problem(
        response,
        status=404,
        code="not_found",
        title="Not found",
        detail="runbook export 'gordackfinaloperatorrunbook-unknown' does not exist",
    )
    assert closure_counts() == before


@pytest.mark.parametrize("suffix", ["", ".md", ".html"])
def test_runbook_download_needs_the_export_permissions(
    api, platform_owner, outsider, report, failed_delivery, evidence_key, suffix
):
    body, row = _export(api)
    before = closure_counts()

    anonymous = client_for(None).get(f"{RUNBOOK}/{row.session_id}{suffix}")
    owner = client_for(platform_owner).get(f"{RUNBOOK}/{row.session_id}{suffix}")
    stranger = client_for(outsider).get(f"{RUNBOOK}/{row.session_id}{suffix}")

    assert (anonymous.status_code, owner.status_code, stranger.status_code) == (401, 403, 403)
    assert owner.json()["code"] == "permission_denied"
    assert closure_counts() == before


def test_runbook_download_refuses_unknown_query_parameters(
    api, report, failed_delivery, evidence_key
):
    _, row = _export(api)
    before = closure_counts()

    response = api.get(f"{RUNBOOK}/{row.session_id}?full=true")

    assert response.status_code == 400
    assert response.json()["code"] == "unknown_query_parameter"
    assert closure_counts() == before


def test_runbook_download_of_an_export_recorded_without_its_document_is_a_404(
    api, report, failed_delivery, evidence_key
):
    # given an export recorded before exports kept their document (the subject without it)
    make_evidence(
        kind=MetadataKind.RUNBOOK_EXPORT,
        session_id="gordackfinaloperatorrunbook-old",
        signer="olivia",
    )

    response = api.get(f"{RUNBOOK}/gordackfinaloperatorrunbook-old.md")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
