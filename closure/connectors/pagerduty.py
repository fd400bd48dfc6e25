"""PagerDuty Events API v2: a `trigger` event per delivery attempt.

`dedup_key` is the delivery's public ID, the same for every attempt of one delivery, so a
retry updates the incident the first attempt opened instead of paging again. The Events API
URL is `CAVRA_PAGERDUTY_EVENTS_URL` unless the connector sets its own `events_url` (a
regional endpoint, or a local server in tests); both go through the destination policy.
PagerDuty answers `202` with `{"status": "success"}` when it has taken the event: that is its
documented success, so it is `delivered`.
"""

import json

from django.conf import settings

from closure.choices import ErrorClass
from closure.connectors.http import HttpResult
from closure.connectors.json_post import Answer, ConfigUnusable, JsonPostConnector, answered_2xx
from closure.connectors.rendering import AlertView, alert_view
from closure.connectors.validation import ConfigCheck

SEVERITIES = {"critical": "critical", "warning": "warning"}
SUMMARY_LIMIT = 1024  # the Events API refuses longer summaries


def render(view: AlertView, *, routing_key: str) -> dict:
    lead = f", led by {view.findings[0].title.lower()}" if view.findings else ""
    summary = (
        f"[{view.level_label}] CAVRA executive delivery retry health: "
        f"{len(view.findings) + view.more_findings} finding(s){lead}"
    )
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": view.delivery_id,
        "payload": {
            "summary": summary[:SUMMARY_LIMIT],
            "source": "cavra-closure",
            "severity": SEVERITIES.get(view.level, "info"),
            "timestamp": view.generated_at or None,
            "component": "executive-report-delivery",
            "group": "rollback-drill",
            "class": view.findings[0].title if view.findings else "healthy",
            "custom_details": {
                "health_id": view.health_id,
                "alert_id": view.alert_id,
                "delivery_id": view.delivery_id,
                "attempt_number": view.attempt_number,
                "summary": view.summary,
                "findings": [view.finding_text(f) for f in view.findings],
                "counts": dict(view.facts),
            },
        },
        "links": [{"href": view.console_url, "text": "Open the CAVRA console"}],
        "client": "CAVRA closure",
        "client_url": view.console_url,
    }


def answered_success(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("status") == "success"


class PagerDutyConnector(JsonPostConnector):
    name = "pagerduty"
    config_keys = ("routing_key", "events_url")

    def check_config(self, check: ConfigCheck) -> None:
        key = check.text("routing_key", required=True, max_length=64)
        if key is not None and (len(key) != 32 or not key.isalnum()):
            check.cleaned.pop("routing_key")
            check.add("routing_key", "Must be the 32-character integration key.")
        check.url("events_url", required=False)

    def url(self, config):
        return config.get("events_url") or settings.CAVRA_PAGERDUTY_EVENTS_URL

    def document(self, message, config):
        routing_key = config.get("routing_key")
        if not isinstance(routing_key, str) or not routing_key:
            raise ConfigUnusable("pagerduty connector has no routing key")
        return render(alert_view(message), routing_key=routing_key)

    def read_answer(self, result: HttpResult) -> Answer:
        taken = answered_2xx(result)
        return Answer(
            delivered=taken and answered_success(result.body),
            error_class=ErrorClass.HTTP_4XX if taken else "",
        )
