"""Generic webhook: a JSON POST signed per the Standard Webhooks scheme.

`webhook-id` is the delivery's public ID, identical for every attempt of one delivery, so a
receiver can de-duplicate retries. Each signature is `v1,` + base64(HMAC-SHA256(key,
"{webhook-id}.{webhook-timestamp}.{body}")), where the key is the base64-decoded part of the
`whsec_…` secret. During a rotation the connector holds two secrets (`signing_secrets`, newest
first) and sends one signature per secret, space-separated, so a receiver that knows either
the old or the new secret accepts the request.
"""

import base64
import binascii
import hashlib
import hmac
import time

from closure.connectors.json_post import ConfigUnusable, JsonPostConnector
from closure.connectors.validation import ConfigCheck

# The newest secret and the one it replaces; more would only widen the window for a leaked key.
MAX_SIGNING_SECRETS = 2
# Standard Webhooks asks for 24 to 64 random bytes; shorter keys are refused when configured.
MIN_KEY_BYTES = 24


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret; raises ValueError when it is not valid base64."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error as exc:
        raise ValueError("signing secret is not valid base64") from exc
    return key


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signing_secrets(config: dict) -> list[str]:
    """The secrets to sign with, newest first (`signing_secret` is the one-secret spelling)."""
    secrets = config.get("signing_secrets")
    if secrets:
        return list(secrets)
    return [config["signing_secret"]] if config.get("signing_secret") else []


class WebhookConnector(JsonPostConnector):
    name = "webhook"
    config_keys = ("url", "signing_secrets", "signing_secret")

    def check_config(self, check: ConfigCheck) -> None:
        check.url("url", required=True)
        config = check.config
        secrets = config.get("signing_secrets")
        if secrets is None and config.get("signing_secret"):
            secrets = [config["signing_secret"]]
        if secrets:
            if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
                check.add("signing_secrets", "Must be a list of whsec_… secrets.")
            elif len(secrets) > MAX_SIGNING_SECRETS:
                check.add(
                    "signing_secrets",
                    f"At most {MAX_SIGNING_SECRETS} secrets (the new one and the previous one).",
                )
            else:
                for position, secret in enumerate(secrets, start=1):
                    try:
                        key = signing_key(secret)
                    except ValueError as exc:
                        check.add("signing_secrets", f"Secret {position}: {exc}.")
                        continue
                    if len(key) < MIN_KEY_BYTES:
                        check.add(
                            "signing_secrets",
                            f"Secret {position}: shorter than {MIN_KEY_BYTES} bytes.",
                        )
                check.cleaned["signing_secrets"] = list(dict.fromkeys(secrets))

    def document(self, message, config):
        return message.payload

    def headers(self, message, body, config):
        timestamp = int(time.time())
        headers = {
            "webhook-id": message.delivery_id,
            "webhook-timestamp": str(timestamp),
        }
        secrets = signing_secrets(config)
        if secrets:
            try:
                headers["webhook-signature"] = " ".join(
                    sign(secret, msg_id=message.delivery_id, timestamp=timestamp, body=body)
                    for secret in secrets
                )
            except (ValueError, TypeError):
                raise ConfigUnusable("webhook signing secret is not valid base64") from None
        return headers
