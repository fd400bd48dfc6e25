"""Connector kinds behind one interface: `send_alert(connector, message, timeout_seconds)`."""

import logging

from closure.choices import ConnectorKind, ErrorClass
from closure.connectors.base import AlertMessage, ConnectorKindHandler, SendOutcome
from closure.connectors.secrets import ConnectorConfigError
from closure.connectors.webhook import WebhookConnector

logger = logging.getLogger(__name__)

HANDLERS: dict[str, ConnectorKindHandler] = {
    ConnectorKind.WEBHOOK: WebhookConnector(),
}


def send_alert(connector, *, message: AlertMessage, timeout_seconds: float) -> SendOutcome:
    """Send one attempt through the connector's kind. Never raises."""
    handler = HANDLERS.get(connector.kind)
    if handler is None:
        return SendOutcome(
            delivered=False,
            error_class=ErrorClass.CONFIG_ERROR,
            error_detail=f"connector kind {connector.kind!r} has no delivery handler",
        )
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
        # A defect in one handler must not abort a run; the type alone is logged, never the
        # message, which could quote configuration.
        logger.error("connector %s raised %s", connector.name, type(exc).__name__)
        return SendOutcome(
            delivered=False,
            error_class=ErrorClass.CONNECTION_ERROR,
            error_detail=f"unexpected {type(exc).__name__}",
        )


__all__ = ["AlertMessage", "SendOutcome", "send_alert"]
