"""docs/api.md cannot drift from the code: its examples are produced by this module.

The scenario below walks the whole flow through the real API, on a frozen clock, against a
local webhook receiver. Each step renders its request and its real response as two fenced
``http`` blocks. docs/api.md holds each example between ``<!-- api-example: NAME -->`` and
``<!-- /api-example -->``; the test fails unless every one of them is exactly what the code
answers now. Values that differ between runs are normalised first: a public ID becomes its
prefix and a counter (the same ID keeps the same counter across the document), a SHA-256
becomes ``<sha256>``, a token ``<token>``, a measured latency ``<ms>``.

Regenerate the examples after changing an endpoint: ``scripts/api-docs``
(``CAVRA_WRITE_API_DOCS=1 pytest tests/test_api_docs.py``), then read the diff. A new example
is a new ``Step`` in ``scenario()`` plus its empty marker pair in docs/api.md, where it should
appear. A second test fails when a route of closure/api/urls.py has no documented request.
"""

import base64
import io
import json
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import time_machine
from django.urls import URLPattern, URLResolver, resolve
from rest_framework.test import APIClient

from closure.api import urls as api_urls
from closure.models import ApiToken
from closure.roles import AUDITORS, OPERATORS, PLATFORM_OWNERS
from closure.services.connectors import connector_save
from closure.services.evidence import evidence_checkpoint_create
from tests.conftest import A, B, R
from tests.factories import make_user
from tests.receivers import Answer, LocalReceiver

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"
WRITE = os.environ.get("CAVRA_WRITE_API_DOCS") == "1"
HOST = "cavra.example.com"
START = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
REGION = re.compile(
    r"<!-- api-example: (?P<name>[a-z0-9-]+) -->\n(?P<body>.*?)<!-- /api-example -->\n",
    re.DOTALL,
)
PUBLIC_ID = re.compile(r"\b(gordack[a-z]+-)([0-9a-f]{16})\b")
SHA256 = re.compile(r"\b[0-9a-f]{64}\b")
TOKEN = re.compile(r"\bcavra_[A-Za-z0-9_-]{20,}")
# Values that differ on every run whatever the clock: measured, or keyed by a random port.
VOLATILE = {
    "latency_ms": "<ms>",
    "config_fingerprint": "<fingerprint>",
    "fingerprint": "<fingerprint>",
    # Primary keys: PostgreSQL's sequences do not restart with each test.
    "user_id": "<user id>",
}
# In this order: the export ID comes before the file name that ends with its hex part.
SHOWN_HEADERS = (
    "Content-Type",
    "Idempotent-Replayed",
    "X-Evidence-Export-Id",
    "X-Evidence-Through-Sequence",
    "Content-Disposition",
)
HEX16 = re.compile(r"\b[0-9a-f]{16}\b")


@dataclass
class Step:
    """One documented request. `path` and `body` may be callables of the earlier responses."""

    name: str
    method: str
    path: str | Callable[[dict], str]
    body: dict | Callable[[dict], dict] | None = None
    user: str = "operator"
    minutes_later: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    before: Callable[[], None] | None = None


def _health_id(seen: dict) -> str:
    return seen["build-health"]["health"]["health_id"]


def _delivery(seen: dict, step: str, provider: str = "exec-webhook") -> str:
    (delivery,) = [d for d in seen[step]["deliveries"] if d["provider"] == provider]
    return delivery["delivery_id"]


def _plan_id(seen: dict) -> str:
    return seen["retry-plan-due"]["plan"]["retry_plan_id"]


INGEST_BODY = {
    "events": [
        {
            "event_id": "drill-42-report-teams",
            "kind": "report_delivery",
            "status": "failed",
            "occurred_at": "2026-11-27T08:15:00Z",
            "provider": "teams",
            "run_id": "drill-42",
            "executive_report_id": "exec-42",
        },
        {
            "event_id": "drill-42-retry-plan",
            "kind": "retry_plan",
            "status": "succeeded",
            "occurred_at": "2026-11-27T08:20:00Z",
        },
        {
            "event_id": "drill-42-worker-run",
            "kind": "retry_worker_run",
            "status": "succeeded",
            "occurred_at": "2026-11-27T08:30:00Z",
            "schedule_enabled": True,
        },
    ]
}


def scenario() -> list[Step]:
    return [
        Step(
            "ingest-events",
            "POST",
            f"{R}/delivery-events",
            INGEST_BODY,
        ),
        Step(
            "ingest-events-repeat",
            "POST",
            f"{R}/delivery-events",
            INGEST_BODY,
        ),
        Step(
            "build-health",
            "POST",
            f"{R}/delivery-retry-health",
            {"expected_interval_minutes": 60, "stale_metadata_minutes": 180},
        ),
        Step("latest-health", "GET", f"{R}/delivery-retry-health"),
        Step("preview-health", "GET", f"{R}/delivery-retry-health?preview=true"),
        Step("closure-before", "GET", f"{B}/final-reporting-closure-dashboard"),
        Step(
            "send-alert",
            "POST",
            f"{A}/deliver",
            {"provider": "all", "force": False},
            minutes_later=1,
        ),
        Step("alert-history", "GET", f"{A}?provider=exec-webhook"),
        Step("alert-dashboard", "GET", f"{R}/delivery-retry-health-alert-dashboard"),
        Step("retry-plan-wait", "POST", f"{A}/retry-plan", {}, minutes_later=1),
        Step(
            "retry-plan-due",
            "POST",
            f"{A}/retry-plan",
            {
                "retry_policy": {
                    "max_retry_attempts": 3,
                    "retry_delay_minutes": 15,
                    "backoff_multiplier": 2.0,
                    "max_delay_minutes": 1440,
                }
            },
            minutes_later=15,
        ),
        Step(
            "worker-dry-run",
            "POST",
            f"{A}/retry-worker-run",
            lambda seen: {"retry_plan_id": _plan_id(seen), "max_retry_deliveries": 25},
        ),
        Step(
            "worker-contradiction",
            "POST",
            f"{A}/retry-worker-run",
            {"dry_run": False},
        ),
        Step(
            "worker-live-run",
            "POST",
            f"{A}/retry-worker-run",
            lambda seen: {"retry_plan_id": _plan_id(seen), "execute": True, "timeout_seconds": 10},
            headers={"Idempotency-Key": "live-run-2026-11-27-0915"},
        ),
        Step(
            "worker-live-run-replay",
            "POST",
            f"{A}/retry-worker-run",
            lambda seen: {"retry_plan_id": _plan_id(seen), "execute": True, "timeout_seconds": 10},
            headers={"Idempotency-Key": "live-run-2026-11-27-0915"},
        ),
        Step(
            "send-alert-forced",
            "POST",
            f"{A}/deliver",
            {"provider": "exec-webhook", "force": True},
            minutes_later=2,
        ),
        Step(
            "manual-retry",
            "POST",
            lambda seen: f"{A}/deliveries/{_delivery(seen, 'send-alert-forced')}/retry",
            {"timeout_seconds": 10},
            minutes_later=1,
        ),
        Step(
            "send-alert-forced-again",
            "POST",
            f"{A}/deliver",
            {"provider": "exec-webhook", "force": True},
            minutes_later=1,
        ),
        Step(
            "waive",
            "POST",
            lambda seen: f"{A}/deliveries/{_delivery(seen, 'send-alert-forced-again')}/waive",
            {"reason": "Recipient confirmed receipt by phone (INC-42)."},
            minutes_later=1,
        ),
        Step(
            "acknowledge-exec",
            "POST",
            lambda seen: f"{A}/{_health_id(seen)}/acknowledgements",
            {
                "provider": "exec-webhook",
                "acknowledgement_state": "acknowledged",
                "external_ref": "INC-42",
                "notes": "Seen by the release manager on duty.",
            },
            minutes_later=5,
        ),
        Step(
            "acknowledge-backup",
            "POST",
            lambda seen: f"{A}/{_health_id(seen)}/acknowledgements",
            {"provider": "backup-webhook", "external_ref": "INC-42"},
        ),
        Step("closure-after", "GET", f"{B}/final-reporting-closure-dashboard", minutes_later=1),
        Step(
            "review-confirm",
            "POST",
            f"{B}/final-reporting-closure-reviews",
            {"decision": "confirm_closed", "note": "Loop closed after the INC-42 drill."},
        ),
        Step("review-list", "GET", f"{B}/final-reporting-closure-reviews?decision=confirm_closed"),
        Step(
            "review-detail",
            "GET",
            lambda seen: (
                f"{B}/final-reporting-closure-reviews/"
                f"{seen['review-confirm']['review']['review_id']}"
            ),
        ),
        Step("readiness", "GET", f"{B}/final-reporting-release-readiness", minutes_later=1),
        Step("runbook-export", "POST", f"{B}/final-reporting-operator-runbook-export", {}),
        Step("evidence-verify", "GET", "/api/v1/evidence/verify/"),
        Step("evidence-public-key", "GET", "/api/v1/evidence/public-key/", user="auditor"),
        Step(
            "evidence-checkpoints",
            "GET",
            "/api/v1/evidence/checkpoints/",
            user="auditor",
            minutes_later=1,
            before=lambda: evidence_checkpoint_create(),
        ),
        Step(
            "evidence-export",
            "POST",
            "/api/v1/evidence/export/",
            {
                "format": "jsonl",
                "metadata_kind": "go-backend-rollback-drill-acknowledgement-audit-delivery-"
                "recovery-executive-report-delivery-retry-health-alert-delivery-retry-plan",
            },
            user="auditor",
        ),
        Step("api-root", "GET", "/api/v1/", user="auditor"),
        Step(
            "list-delivery-events",
            "GET",
            "/api/v1/delivery-events/?kind=report_delivery&status=failed",
            user="auditor",
        ),
        Step(
            "detail-delivery-event",
            "GET",
            "/api/v1/delivery-events/drill-42-report-teams/",
            user="auditor",
        ),
        Step(
            "list-health-reports",
            "GET",
            "/api/v1/health-reports/?alert_level=critical",
            user="auditor",
        ),
        Step(
            "detail-health-report",
            "GET",
            lambda seen: f"/api/v1/health-reports/{_health_id(seen)}/",
            user="auditor",
        ),
        Step("list-connectors", "GET", "/api/v1/connectors/?kind=webhook", user="auditor"),
        Step("detail-connector", "GET", "/api/v1/connectors/exec-webhook/", user="auditor"),
        Step(
            "list-alerts",
            "GET",
            "/api/v1/alerts/?forced=true&page_size=1",
            user="auditor",
        ),
        Step(
            "detail-alert",
            "GET",
            lambda seen: f"/api/v1/alerts/{seen['send-alert']['alert']['alert_id']}/",
            user="auditor",
        ),
        Step(
            "list-deliveries",
            "GET",
            "/api/v1/deliveries/?status=suppressed&provider=exec-webhook",
            user="auditor",
        ),
        Step(
            "detail-delivery",
            "GET",
            lambda seen: f"/api/v1/deliveries/{_delivery(seen, 'send-alert')}/",
            user="auditor",
        ),
        Step(
            "list-acknowledgements",
            "GET",
            "/api/v1/acknowledgements/?provider=backup-webhook",
            user="auditor",
        ),
        Step(
            "detail-acknowledgement",
            "GET",
            lambda seen: (
                f"/api/v1/acknowledgements/{seen['acknowledge-exec']['acknowledgement']['ack_id']}/"
            ),
            user="auditor",
        ),
        Step("list-retry-plans", "GET", "/api/v1/retry-plans/?page_size=1", user="auditor"),
        Step(
            "detail-retry-plan",
            "GET",
            lambda seen: f"/api/v1/retry-plans/{_plan_id(seen)}/",
            user="auditor",
        ),
        Step(
            "list-worker-runs",
            "GET",
            "/api/v1/worker-runs/?dry_run=false&status=succeeded",
            user="auditor",
        ),
        Step(
            "detail-worker-run",
            "GET",
            lambda seen: f"/api/v1/worker-runs/{seen['worker-dry-run']['run']['run_id']}/",
            user="auditor",
        ),
        Step(
            "list-execution-records",
            "GET",
            "/api/v1/execution-records/?execution_status=failed&trigger=initial&page_size=1",
            user="auditor",
        ),
        Step(
            "detail-execution-record",
            "GET",
            lambda seen: (
                "/api/v1/execution-records/"
                f"{seen['manual-retry']['execution_record']['execution_id']}/"
            ),
            user="auditor",
        ),
        Step(
            "list-evidence",
            "GET",
            "/api/v1/evidence/?metadata_kind=go-backend-rollback-drill-acknowledgement-audit-"
            "delivery-recovery-executive-report-delivery-retry-health-alert-delivery-waiver",
            user="auditor",
        ),
        Step("detail-evidence", "GET", "/api/v1/evidence/1/", user="auditor"),
    ]


class Normaliser:
    """Replaces run-dependent values; one instance per document, so IDs keep their counters."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        # The hex part of each public ID seen, for names built from it (export bundles).
        self.suffixes: dict[str, str] = {}

    def text(self, value: str) -> str:
        def public_id(match: re.Match) -> str:
            real = match.group(0)
            if real not in self.ids:
                self.ids[real] = f"{match.group(1)}{len(self.ids) + 1:016x}"
                self.suffixes[match.group(2)] = self.ids[real][-16:]
            return self.ids[real]

        value = PUBLIC_ID.sub(public_id, value)
        value = HEX16.sub(lambda match: self.suffixes.get(match.group(0), match.group(0)), value)
        value = TOKEN.sub("<token>", value)
        return SHA256.sub("<sha256>", value)

    def value(self, value, key: str | None = None):
        if key in VOLATILE and value not in (None, "", {}):
            return VOLATILE[key]
        if isinstance(value, dict):
            if key == "signature" and isinstance(value.get("value"), str):
                # An Ed25519 signature of a chain head that differs on every run.
                value = {**value, "value": "<signature>"}
            return {k: self.value(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        return value


def _pretty(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def render_request(step: Step, path: str, body, normaliser: Normaliser) -> str:
    lines = [
        f"{step.method} {normaliser.text(path)} HTTP/1.1",
        f"Authorization: Bearer <{step.user} token>",
    ]
    if body is not None:
        lines.append("Content-Type: application/json")
    lines += [f"{name}: {value}" for name, value in step.headers.items()]
    if body is not None:
        lines += ["", _pretty(normaliser.value(body))]
    return "\n".join(lines)


def render_response(response, normaliser: Normaliser) -> str:
    status = HTTPStatus(response.status_code)
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    for name in SHOWN_HEADERS:
        if response.has_header(name):
            lines.append(f"{name}: {normaliser.text(response[name])}")
    content_type = response["Content-Type"]
    if content_type == "application/zip":
        payload = b"".join(response.streaming_content)
        with zipfile.ZipFile(io.BytesIO(payload)) as bundle:
            members = [normaliser.text(name) for name in bundle.namelist()]
            manifest_name = next(name for name in bundle.namelist() if name.endswith(".json"))
            manifest = json.loads(bundle.read(manifest_name))
        manifest["file"]["bytes"] = "<bytes>"
        lines += ["", "(a ZIP bundle with these members:)", *members, "", "(its manifest.json:)"]
        lines.append(_pretty(normaliser.value(manifest)))
    elif "json" in content_type:
        lines += ["", _pretty(normaliser.value(response.json()))]
    return "\n".join(lines)


def generate_examples() -> dict[str, str]:
    """Run the scenario and return each example's Markdown, in order."""
    users = {
        "operator": make_user("operator", OPERATORS),
        "auditor": make_user("auditor", AUDITORS),
    }
    owner = make_user("owner", PLATFORM_OWNERS)
    clients = {}
    for username, user in users.items():
        _token, raw = ApiToken.issue(user=user, name=f"{username} docs")
        # Links in responses (pagination, the API root) name the production host.
        client = APIClient(SERVER_NAME=HOST)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        clients[username] = client

    def answer(request) -> Answer:
        attempt = json.loads(request.body).get("attempt_number", 1)
        if request.path.startswith("/flaky") and attempt == 1:
            return Answer(status=503, body=b"temporarily unavailable")
        return Answer(status=200, body=b"ok")

    examples: dict[str, str] = {}
    normaliser = Normaliser()
    seen: dict[str, dict] = {}
    with (
        LocalReceiver(answer) as receiver,
        time_machine.travel(START, tick=False) as clock,
    ):
        secret = base64.b64encode(b"cavra-api-docs-signing-secret-32b").decode()
        connector_save(
            actor=owner,
            name="exec-webhook",
            kind="webhook",
            description="Executive recovery channel",
            private_config={"url": f"{receiver.url}/flaky", "signing_secret": f"whsec_{secret}"},
        )
        connector_save(
            actor=owner,
            name="backup-webhook",
            kind="webhook",
            description="Backup channel",
            private_config={"url": f"{receiver.url}/steady"},
        )
        for step in scenario():
            clock.shift(timedelta(minutes=step.minutes_later))
            if step.before:
                step.before()
            path = step.path(seen) if callable(step.path) else step.path
            body = step.body(seen) if callable(step.body) else step.body
            extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in step.headers.items()}
            client = clients[step.user]
            if step.method == "GET":
                response = client.get(path, secure=True, **extra)
            else:
                response = client.post(path, body, format="json", secure=True, **extra)
            if "json" in response["Content-Type"]:
                seen[step.name] = response.json()
            request_text = render_request(step, path, body, normaliser)
            response_text = render_response(response, normaliser)
            examples[step.name] = f"```http\n{request_text}\n```\n\n```http\n{response_text}\n```\n"
    return examples


FENCED = re.compile(r"^```http\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def comparable(example: str) -> list:
    """An example as (text before the JSON body, parsed JSON body) per fenced block.

    JSON objects are compared as objects: PostgreSQL's jsonb returns stored keys in its own
    order, so the key order of evidence payloads differs between databases while the values,
    and the order of every list, do not.
    """
    blocks = []
    for block in FENCED.findall(example):
        lines = block.splitlines()
        start = next((i for i, line in enumerate(lines) if line in ("{", "[")), len(lines))
        body = "\n".join(lines[start:])
        blocks.append(("\n".join(lines[:start]), json.loads(body) if body else None))
    return blocks


def documented_examples() -> dict[str, str]:
    return {m["name"]: m["body"] for m in REGION.finditer(API_DOC.read_text(encoding="utf-8"))}


def write_examples(examples: dict[str, str]) -> None:
    text = API_DOC.read_text(encoding="utf-8")

    def fill(match: re.Match) -> str:
        name = match["name"]
        return f"<!-- api-example: {name} -->\n{examples[name]}<!-- /api-example -->\n"

    API_DOC.write_text(REGION.sub(fill, text), encoding="utf-8")


def _api_url_names(patterns, names=None) -> set[str]:
    names = set() if names is None else names
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            _api_url_names(pattern.url_patterns, names)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(pattern.name)
    return names


@pytest.mark.django_db
def test_api_docs_examples_are_what_the_code_answers(settings):
    settings.CAVRA_PUBLIC_BASE_URL = f"https://{HOST}"
    settings.ALLOWED_HOSTS = [HOST]
    examples = generate_examples()
    if WRITE:
        write_examples(examples)
    documented = documented_examples()

    assert list(documented) == list(examples), (
        "docs/api.md names other examples, or in another order"
    )
    for name, text in examples.items():
        assert comparable(documented[name]) == comparable(text), (
            f"docs/api.md example {name!r} drifted from the code (scripts/api-docs rewrites it)"
        )


def test_api_docs_cover_every_api_endpoint():
    # Every route of closure/api/urls.py has at least one documented request.
    documented_routes = set()
    for step in scenario():
        if callable(step.path):
            continue
        documented_routes.add(resolve(urlsplit(step.path).path).url_name)
    text = API_DOC.read_text(encoding="utf-8")
    for request_line in re.findall(r"^(?:GET|POST) (\S+) HTTP/1.1$", text, re.MULTILINE):
        documented_routes.add(resolve(urlsplit(request_line).path).url_name)

    assert _api_url_names(api_urls.urlpatterns) - documented_routes == set()
