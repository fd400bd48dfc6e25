"""Management commands: they parse arguments and call the same services as the API."""

import json

import pytest
from django.core.management import CommandError, call_command

from closure.models import (
    ApiToken,
    Evidence,
    ExecutionRecord,
    HealthAlert,
    HealthReport,
)
from closure.models.accounts import hash_token
from tests.conftest import R

pytestmark = pytest.mark.django_db


def test_create_api_token_prints_the_raw_token_once_and_stores_its_hash(operator, capsys):
    call_command("create_api_token", "olivia", "--name", "ci", "--days", "7")

    raw = capsys.readouterr().out.strip()
    token = ApiToken.objects.get()
    assert raw.startswith("cavra_")
    assert token.token_sha256 == hash_token(raw)
    assert token.name == "ci"
    assert raw not in token.token_prefix + token.token_sha256
    assert (token.expires_at - token.created_at).days == 7


def test_create_api_token_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        call_command("create_api_token", "ghost")
    assert ApiToken.objects.count() == 0


def test_verify_evidence_reports_an_intact_chain(api, capsys):
    api.post(f"{R}/delivery-retry-health", {}, format="json")

    call_command("verify_evidence")

    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True
    assert result["count"] == 1
    assert result["head"] == Evidence.objects.get().chain_hash
    assert result["first_broken_sequence"] is None


def test_verify_evidence_fails_on_a_broken_chain(api, capsys):
    import json as jsonlib

    from tests.test_evidence import SET_PAYLOAD, _tamper

    # given two evidence rows, the second altered behind the application's back
    api.post(f"{R}/delivery-retry-health", {}, format="json")
    api.post(f"{R}/delivery-retry-health", {}, format="json")
    forged = {**Evidence.objects.get(sequence=2).payload, "signer": "mallory"}
    _tamper(SET_PAYLOAD, [jsonlib.dumps(forged), 2])

    # then the command fails and names the sequence
    with pytest.raises(CommandError, match="evidence chain broken at sequence 2"):
        call_command("verify_evidence")
    assert json.loads(capsys.readouterr().out)["first_broken_sequence"] == 2


def test_run_demo_loads_the_flow_up_to_a_real_failed_delivery(db, capsys, settings):
    settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS = True

    call_command("run_demo", "--no-serve", "--receiver-port", "0")

    out = capsys.readouterr().out
    assert "CAVRA closure demo loaded" in out
    assert (
        "  Evidence Console:       http://127.0.0.1:8000/console/  (operators: start here)" in out
    )
    assert "password cavra-demo-password" in out
    report = HealthReport.objects.get()
    assert report.alert_level == "critical"
    alert = HealthAlert.objects.get()
    statuses = dict(alert.deliveries.values_list("provider", "status"))
    assert statuses == {"exec-webhook": "failed", "backup-webhook": "delivered"}
    failed = ExecutionRecord.objects.get(provider="exec-webhook")
    assert failed.http_status == 503
    assert failed.error_class == "http_5xx"


def test_api_refuses_form_encoded_bodies(api):
    response = api.post(f"{R}/delivery-retry-health", {"expected_interval_minutes": "60"})

    assert response.status_code == 415
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "unsupported_media_type"
    assert HealthReport.objects.count() == 0
