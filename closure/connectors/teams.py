"""Microsoft Teams through a Workflows (Power Automate) webhook: an Adaptive Card message.

A workflow answers `202 Accepted` when it has queued the run: the card is not posted yet and
may never be. That outcome is recorded as `accepted`, distinct from `delivered`; the closure
dashboard counts it as delivered only when the connector's `accepted_counts_as_delivered` is
on. Any other 2xx is delivered; everything else fails.
"""

from closure.connectors import http
from closure.connectors.base import AlertMessage, SendOutcome, config_error, request_fingerprint
from closure.connectors.rendering import AlertView, alert_view
from closure.connectors.validation import ConfigCheck
from closure.evidence.canonical import canonical_json

LEVEL_COLOURS = {"critical": "Attention", "warning": "Warning", "healthy": "Good"}


def render(view: AlertView) -> dict:
    body: list[dict] = [
        {
            "type": "TextBlock",
            "text": view.title,
            "weight": "Bolder",
            "size": "Large",
            "color": LEVEL_COLOURS.get(view.level, "Default"),
            "wrap": True,
        },
        {"type": "TextBlock", "text": view.summary, "wrap": True},
        {
            "type": "FactSet",
            "facts": [{"title": label, "value": value} for label, value in view.facts],
        },
    ]
    if view.findings:
        body.append({"type": "TextBlock", "text": "Findings", "weight": "Bolder"})
        body.extend(
            {"type": "TextBlock", "text": view.finding_text(f), "wrap": True} for f in view.findings
        )
        if view.more_findings:
            body.append(
                {"type": "TextBlock", "text": f"and {view.more_findings} more in the console"}
            )
    else:
        body.append(
            {
                "type": "TextBlock",
                "text": "No findings: the report is healthy (this alert was sent on request).",
                "wrap": True,
            }
        )
    body.append(
        {
            "type": "TextBlock",
            "text": view.reference,
            "isSubtle": True,
            "size": "Small",
            "wrap": True,
        }
    )
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": body,
                    "actions": [
                        {
                            "type": "Action.OpenUrl",
                            "title": "Open the CAVRA console",
                            "url": view.console_url,
                        }
                    ],
                },
            }
        ],
    }


class TeamsConnector:
    config_keys = ("url",)

    def clean_config(self, config: dict) -> dict:
        check = ConfigCheck(config, self.config_keys)
        check.url("url", required=True)
        return check.result()

    def send(self, *, config: dict, message: AlertMessage, timeout_seconds: float) -> SendOutcome:
        url = config.get("url")
        if not isinstance(url, str) or not url:
            return config_error("teams connector has no url")
        body = canonical_json(render(alert_view(message)))
        result = http.post_json(url, body=body, timeout_seconds=timeout_seconds)
        status = result.status
        accepted = status == 202
        delivered = status is not None and 200 <= status < 300 and not accepted
        return SendOutcome.from_http(
            result,
            fingerprint=request_fingerprint(message, body),
            delivered=delivered,
            accepted=accepted,
            config=config,
        )
