"""Connector kinds behind one interface: `send_alert(connector, message, timeout_seconds)`."""

import logging

from closure.choices import ConnectorKind, ErrorClass
from closure.connectors.base import (
    AlertMessage,
    ConnectorConfigInvalid,
    ConnectorKindHandler,
    SendOutcome,
)
from closure.connectors.email import EmailConnector
from closure.connectors.pagerduty import PagerDutyConnector
from closure.connectors.slack import SlackConnector
from closure.connectors.teams import TeamsConnector
from closure.connectors.webhook import WebhookConnector
from closure.keyring import ConnectorConfigError

logger = logging.getLogger(__name__)

HANDLERS: dict[str, ConnectorKindHandler] = {
    ConnectorKind.WEBHOOK: WebhookConnector(),
    ConnectorKind.SLACK: SlackConnector(),
    ConnectorKind.TEAMS: TeamsConnector(),
    ConnectorKind.EMAIL: EmailConnector(),
    ConnectorKind.PAGERDUTY: PagerDutyConnector(),
}


def config_clean(kind: str, config: dict) -> dict:
    """Validate and normalise a private configuration for `kind`; raises ConnectorConfigInvalid."""
    if not isinstance(config, dict):
        raise ConnectorConfigInvalid({"config": ["Must be an object."]})
    return HANDLERS[kind].clean_config(config)


def send_alert(
    connector, *, message: AlertMessage, timeout_seconds: float, config: dict | None = None
) -> SendOutcome:
    """Send one attempt through the connector's kind. Never raises.

    `config` is the connector's decrypted private configuration when the caller has it
    already; without it, the configuration is decrypted here.
    """
    handler = HANDLERS.get(connector.kind)
    if handler is None:
        return SendOutcome(
            delivered=False,
            error_class=ErrorClass.CONFIG_ERROR,
            error_detail=f"connector kind {connector.kind!r} has no delivery handler",
        )
    if config is None:
        try:
            config = connector.private_config
        except ConnectorConfigError:
            return SendOutcome(
                delivered=False,
                error_class=ErrorClass.CONFIG_ERROR,
                error_detail="connector configuration cannot be decrypted",
            )
    try:
        return handler.send(config=config, message=message, timeout_seconds=timeout_seconds)
    except Exception as exc:
        # A defect in one handler must not abort a run. Only the type is logged: the message
        # and the traceback's locals could quote the configuration.
        logger.error("connector %s raised %s", connector.name, type(exc).__name__)
        return SendOutcome(
            delivered=False,
            error_class=ErrorClass.CONNECTION_ERROR,
            error_detail=f"unexpected {type(exc).__name__}",
        )


__all__ = [
    "HANDLERS",
    "AlertMessage",
    "ConnectorConfigInvalid",
    "SendOutcome",
    "config_clean",
    "send_alert",
]
