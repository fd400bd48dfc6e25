"""Slack incoming webhook: a Block Kit message posted to the webhook URL.

Slack answers a good request with `200` and the body `ok`. Anything else, including a `200`
whose body is not `ok` (or JSON with `"ok": false`), is a failed attempt.
"""

import json

from closure.choices import ErrorClass
from closure.connectors.http import HttpResult
from closure.connectors.json_post import Answer, JsonPostConnector
from closure.connectors.rendering import AlertView, alert_view

LEVEL_EMOJI = {"critical": ":red_circle:", "warning": ":large_yellow_circle:"}
SECTION_LIMIT = 2900  # Slack refuses section text over 3000 characters


def _escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(view: AlertView) -> dict:
    emoji = LEVEL_EMOJI.get(view.level, ":large_green_circle:")
    if view.findings:
        lines = [
            f"• *{f.severity.upper()}* {_escape(f.title)} ({f.count}): {_escape(f.message)}"
            for f in view.findings
        ]
        if view.more_findings:
            lines.append(f"• and {view.more_findings} more in the console")
        findings_text = "\n".join(lines)
    else:
        findings_text = "No findings: the report is healthy (this alert was sent on request)."
    return {
        "text": f"{view.title}: {view.summary}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": view.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} {view.summary}"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{_escape(label)}*\n{_escape(value)}"}
                    for label, value in view.facts[:10]
                ],
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": findings_text[:SECTION_LIMIT]},
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the CAVRA console"},
                        "url": view.console_url,
                    }
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": view.reference}]},
        ],
    }


def answered_ok(body: bytes) -> bool:
    if body.strip() == b"ok":
        return True
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("ok") is True


class SlackConnector(JsonPostConnector):
    name = "slack"

    def document(self, message, config):
        return render(alert_view(message))

    def read_answer(self, result: HttpResult) -> Answer:
        return Answer(
            delivered=result.status == 200 and answered_ok(result.body),
            # A 200 that is not `ok` is Slack refusing the message (a 4xx in all but status).
            error_class=ErrorClass.HTTP_4XX if result.status == 200 else "",
        )
