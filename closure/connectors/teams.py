"""Microsoft Teams through a Workflows (Power Automate) webhook: an Adaptive Card message.

A workflow answers `202 Accepted` when it has queued the run: the card is not posted yet and
may never be. That outcome is recorded as `accepted`, distinct from `delivered`; the closure
dashboard counts it as delivered only when the connector's `accepted_counts_as_delivered` is
on. Any other 2xx is delivered; everything else fails.
"""

from closure.connectors.http import HttpResult
from closure.connectors.json_post import Answer, JsonPostConnector, answered_2xx
from closure.connectors.rendering import AlertView, alert_view

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


class TeamsConnector(JsonPostConnector):
    name = "teams"

    def document(self, message, config):
        return render(alert_view(message))

    def read_answer(self, result: HttpResult) -> Answer:
        if result.status == 202:
            return Answer(delivered=False, accepted=True)
        return Answer(delivered=answered_2xx(result))
