"""Generic webhook: a JSON POST signed per the Standard Webhooks scheme.

`webhook-id` is the delivery's public ID, identical for every attempt of one delivery, so a
receiver can de-duplicate retries. The signature is `v1,` + base64(HMAC-SHA256(secret,
"{webhook-id}.{webhook-timestamp}.{body}")), where the secret is the base64 part of `whsec_…`.
"""

import base64
import hashlib
import hmac
import time

from closure.choices import ErrorClass
from closure.connectors import http
from closure.connectors.base import AlertMessage, SendOutcome, request_fingerprint
from closure.evidence import canonical_json


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookConnector:
    def send(self, *, config: dict, message: AlertMessage, timeout_seconds: float) -> SendOutcome:
        url = config.get("url")
        if not isinstance(url, str) or not url:
            return SendOutcome(
                delivered=False,
                error_class=ErrorClass.CONFIG_ERROR,
                error_detail="webhook connector has no url",
            )
        body = canonical_json(message.payload)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message.delivery_id,
            "webhook-timestamp": str(timestamp),
        }
        secret = config.get("signing_secret")
        if secret:
            try:
                headers["webhook-signature"] = sign(
                    secret, msg_id=message.delivery_id, timestamp=timestamp, body=body
                )
            except (ValueError, TypeError):
                return SendOutcome(
                    delivered=False,
                    error_class=ErrorClass.CONFIG_ERROR,
                    error_detail="webhook signing secret is not valid base64",
                )
        result = http.post(
            url,
            body=body,
            headers=headers,
            connect_timeout=min(5.0, timeout_seconds),
            total_timeout=timeout_seconds,
        )
        delivered = result.status is not None and 200 <= result.status < 300
        return SendOutcome.from_http(
            result, fingerprint=request_fingerprint(message, body), delivered=delivered
        )
