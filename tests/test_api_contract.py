"""The committed OpenAPI schema (openapi.yaml) is the API's contract: it is what
`manage.py spectacular` generates, it validates, and every operation documents its request,
its success response and its problem+json errors."""

import os
import subprocess
import sys
from pathlib import Path

import yaml
from drf_spectacular.validation import validate_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "openapi.yaml"
METHODS = ("get", "post", "put", "patch", "delete")


def committed() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_committed_schema_is_what_the_code_generates(tmp_path):
    generated = tmp_path / "openapi.yaml"
    # As `make openapi` does: the production settings (HTTPS on, so the `__Host-` cookie).
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CAVRA_", "DJANGO_", "DATABASE_URL"))
        },
        "DJANGO_SETTINGS_MODULE": "cavra.settings",
        # Integer ranges in the schema come from the backend: always SQLite's.
        "DATABASE_URL": "sqlite://:memory:",
        "CAVRA_HTTPS": "1",
        "CAVRA_ALLOW_INSECURE_DEV_KEY": "1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "spectacular",
            "--file",
            str(generated),
            "--validate",
            "--fail-on-warn",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert generated.read_text() == SCHEMA_PATH.read_text(), (
        "openapi.yaml is out of date: run `make openapi` and commit the result"
    )


def test_committed_schema_is_valid_openapi_3():
    schema = committed()
    validate_schema(schema)  # raises on an invalid document
    assert schema["openapi"].startswith("3.")


def test_every_operation_documents_request_response_and_problems():
    schema = committed()
    components = schema["components"]["schemas"]
    ops = list(operations(schema))
    # 41, and the three downloads of a recorded runbook export (JSON, Markdown, printable)
    assert len(ops) == 44
    without_body = []
    for path, method, operation in ops:
        responses = operation["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert success, (method, path)
        for code in success:
            content = responses[code].get("content", {})
            assert content, (method, path, code)
            for media in content.values():
                ref = media["schema"].get("$ref") or media["schema"].get("type")
                assert ref, (method, path, code)
        for code in ("401", "403", "429", "500", "503"):
            problem = responses[code]["content"]["application/problem+json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/Problem"}, (method, path, code)
        if method == "post" and "requestBody" not in operation:
            without_body.append(path)
        elif method == "post":
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            name = body["$ref"].rsplit("/", 1)[1]
            assert components[name]["additionalProperties"] is False, name
            for code in ("400", "409", "415", "422"):
                assert code in responses, (method, path, code)
    # The runbook export takes no options: its body is empty (or `{}`).
    assert without_body == [
        "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
        "/final-reporting-operator-runbook-export"
    ]


def test_the_three_phase_endpoints_are_in_the_contract():
    paths = committed()["paths"]
    base = "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
    alerts = f"{base}/recovery-executive-report/delivery-retry-health-alerts"
    assert "post" in paths[f"{alerts}/retry-plan"]
    assert "post" in paths[f"{alerts}/retry-worker-run"]
    assert "get" in paths[f"{base}/final-reporting-closure-dashboard"]
    assert committed()["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (`manage.py create_api_token`), stored only as a hash.",
    }


def test_list_filters_take_rfc3339_times_with_any_offset_and_refuse_others(auditor):
    from tests.conftest import client_for

    client = client_for(auditor)
    url = "/api/v1/deliveries/"
    # An offset PostgreSQL would not take (over 15:59) and a time that leaves Python's range in
    # UTC are read as the same instant (or the range's edge): 200, not a server error.
    for value in ("3828-12-28T13:30:28+21:28", "0001-01-01T00:00:00+01:00", "2026-11-01T00:00:00Z"):
        response = client.get(url, {"created_after": value})
        assert response.status_code == 200, (value, response.content)
    for value in ("2026-11-01", "2026-11-01T00:00Z", "2026-11-01T25:00:00Z", "yesterday", ""):
        response = client.get(url, {"created_after": value})
        assert response.status_code == 400, value
        assert response.json()["errors"] == {"created_after": ["Enter a valid date/time."]}
    assert client.get(url, {"page_size": "501"}).status_code == 400
    assert client.get(url, {"page_size": "0"}).status_code == 400
    assert client.get(url, {"page_size": "500"}).status_code == 200


def test_event_ids_longer_than_an_evidence_session_id_are_refused(operator):
    from closure.models import DeliveryEvent
    from tests.conftest import R, assert_invalid, client_for

    def event(event_id: str) -> dict:
        return {
            "event_id": event_id,
            "kind": "retry_plan",
            "status": "failed",
            "occurred_at": "2026-11-01T00:00:00Z",
        }

    client = client_for(operator)
    too_long = client.post(f"{R}/delivery-events", {"events": [event("e" * 81)]}, format="json")
    assert_invalid(
        too_long, {"events.0.event_id": ["Ensure this field has no more than 80 characters."]}
    )
    assert DeliveryEvent.objects.count() == 0
    longest = client.post(f"{R}/delivery-events", {"events": [event("e" * 80)]}, format="json")
    assert longest.status_code == 201
    assert DeliveryEvent.objects.get().event_id == "e" * 80


def test_event_details_with_a_nul_character_are_refused(operator):
    from closure.models import DeliveryEvent
    from tests.conftest import R, assert_invalid, client_for

    event = {
        "event_id": "evt-nul",
        "kind": "retry_plan",
        "status": "failed",
        "occurred_at": "2026-11-01T00:00:00Z",
        "details": {"note": "a\u0000b"},
    }
    response = client_for(operator).post(f"{R}/delivery-events", {"events": [event]}, format="json")
    assert_invalid(response, {"events.0.details": ["Must not contain NUL characters."]})
    assert DeliveryEvent.objects.count() == 0
