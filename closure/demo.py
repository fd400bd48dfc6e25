"""Demo data and a local test receiver, so the demo walks the whole flow with real HTTP.

The receiver answers `/flaky` with 503 to the first attempt of each delivery (the payload's
`attempt_number`) and 200 to later ones, and `/steady` with 200 always: the demo's first
delivery to `exec-webhook` really fails, so a retry plan and a live worker run have something
real to retry.
"""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from closure.choices import EventKind, EventStatus
from closure.models import HealthReport
from closure.roles import AUDITORS, OPERATORS, PLATFORM_OWNERS
from closure.services.alerts import health_alert_send
from closure.services.connectors import connector_save
from closure.services.events import delivery_events_ingest
from closure.services.health import HealthParameters, health_report_build
from closure.services.tokens import api_token_create

DEMO_PASSWORD = "cavra-demo-password"  # noqa: S105 (local demo accounts only)
DEMO_USERS = {"operator": OPERATORS, "auditor": AUDITORS, "owner": PLATFORM_OWNERS}


class DemoReceiver:
    """A loopback HTTP receiver running in a daemon thread."""

    def __init__(self, port: int = 8765) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    attempt = json.loads(body).get("attempt_number", 1)
                except (ValueError, AttributeError):
                    attempt = 1
                failing = self.path.startswith("/flaky") and attempt == 1
                self.send_response(503 if failing else 200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"temporarily unavailable" if failing else b"ok")

            def log_message(self, format, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "DemoReceiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def demo_users() -> dict:
    users = {}
    for username, group in DEMO_USERS.items():
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            user.set_password(DEMO_PASSWORD)
            user.is_staff = True
            user.save()
        user.groups.add(Group.objects.get(name=group))
        users[username] = user
    return users


def _demo_connectors(owner, receiver_url: str) -> None:
    """A flaky executive channel (fails first attempts) and a backup that always accepts."""
    connector_save(
        actor=owner,
        name="exec-webhook",
        kind="webhook",
        description="Executive recovery channel (demo receiver, fails first attempts)",
        private_config={
            "url": f"{receiver_url}/flaky",
            "signing_secret": "whsec_Y2F2cmEtZGVtby1zaWduaW5nLXNlY3JldC0yNGI=",
        },
    )
    connector_save(
        actor=owner,
        name="backup-webhook",
        kind="webhook",
        description="Backup channel (demo receiver, always accepts)",
        private_config={"url": f"{receiver_url}/steady"},
    )


def _demo_events(now) -> list[dict]:
    """The upstream pipeline's story: one report delivered, the next failed and so did its
    retry, an old retry plan, a recent worker run."""

    def event(event_id, kind, status, minutes_ago, **extra):
        return {
            "event_id": event_id,
            "kind": kind,
            "status": status,
            "occurred_at": now - timedelta(minutes=minutes_ago),
            "provider": extra.get("provider", ""),
            "run_id": extra.get("run_id", ""),
            "executive_report_id": extra.get("executive_report_id", ""),
            "schedule_enabled": extra.get("schedule_enabled"),
            "details": {},
        }

    return [
        event(
            "demo-report-1",
            EventKind.REPORT_DELIVERY,
            EventStatus.DELIVERED,
            300,
            provider="slack",
            run_id="drill-41",
            executive_report_id="exec-41",
        ),
        event(
            "demo-report-2",
            EventKind.REPORT_DELIVERY,
            EventStatus.FAILED,
            45,
            provider="teams",
            run_id="drill-42",
            executive_report_id="exec-42",
        ),
        event(
            "demo-retry-exec-1",
            EventKind.RETRY_EXECUTION,
            EventStatus.FAILED,
            40,
            provider="teams",
            run_id="drill-42",
        ),
        event("demo-plan-1", EventKind.RETRY_PLAN, EventStatus.SUCCEEDED, 400),
        event(
            "demo-worker-1",
            EventKind.RETRY_WORKER_RUN,
            EventStatus.SUCCEEDED,
            30,
            schedule_enabled=True,
        ),
    ]


def demo_load(*, receiver_url: str) -> bool:
    """Walk the flow up to a failed delivery. Returns False if demo data already exists."""
    users = demo_users()
    operator, owner = users["operator"], users["owner"]
    if HealthReport.objects.exists():
        return False
    _demo_connectors(owner, receiver_url)
    delivery_events_ingest(actor=operator, events=_demo_events(timezone.now()))
    health_report_build(actor=operator, parameters=HealthParameters())
    health_alert_send(actor=operator, health_id=None, provider="all")
    return True


def demo_token() -> str:
    operator = get_user_model().objects.get(username="operator")
    return api_token_create(actor=None, user=operator, name="demo", days=1).raw


__all__ = ["DEMO_PASSWORD", "DemoReceiver", "demo_load", "demo_token"]
