"""The one small interface every connector kind implements."""

from dataclasses import dataclass
from typing import Protocol

from closure.connectors.http import HttpResult, body_sha256, redacted_excerpt, secret_fragments
from closure.evidence.canonical import canonical_json, sha256_hex


@dataclass(frozen=True)
class AlertMessage:
    """What a connector sends: the alert's public-safe payload for one delivery attempt."""

    delivery_id: str
    attempt_number: int
    payload: dict


@dataclass(frozen=True)
class SendOutcome:
    """The classified result of one attempt; carries no secret and no raw response body.

    `accepted` means the connector took the message for later processing without confirming
    it (a Teams workflow's 202): neither delivered nor failed.
    """

    delivered: bool
    http_status: int | None = None
    error_class: str = ""
    error_detail: str = ""
    latency_ms: int | None = None
    retry_after_seconds: int | None = None
    request_fingerprint: str = ""
    response_sha256: str = ""
    response_excerpt: str = ""
    accepted: bool = False

    @classmethod
    def from_http(
        cls,
        result: HttpResult,
        *,
        fingerprint: str,
        delivered: bool,
        config: dict,
        accepted: bool = False,
        error_class: str = "",
    ) -> "SendOutcome":
        ok = delivered or accepted
        return cls(
            delivered=delivered,
            accepted=accepted and not delivered,
            http_status=result.status,
            error_class="" if ok else (error_class or result.error_class or "http_4xx"),
            error_detail=result.error_detail,
            latency_ms=result.latency_ms,
            retry_after_seconds=result.retry_after_seconds,
            request_fingerprint=fingerprint,
            response_sha256=body_sha256(result.body),
            response_excerpt=redacted_excerpt(result.body, secrets=secret_fragments(config)),
        )


class ConnectorConfigInvalid(Exception):
    """A private configuration that a kind cannot use; `errors` maps keys to messages.

    Messages name the key and the rule, never the value.
    """

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{key}: {msgs[0]}" for key, msgs in errors.items()))
        self.errors = errors


class ConnectorKindHandler(Protocol):
    # The private configuration keys this kind reads; anything else is refused on save.
    config_keys: tuple[str, ...]

    def clean_config(self, config: dict) -> dict:
        """Validate and normalise a private configuration; raise ConnectorConfigInvalid."""
        ...

    def send(self, *, config: dict, message: AlertMessage, timeout_seconds: float) -> SendOutcome:
        """Deliver `message` once. Never raises: every failure is a classified outcome."""
        ...


def config_error(detail: str) -> SendOutcome:
    return SendOutcome(delivered=False, error_class="config_error", error_detail=detail)


def request_fingerprint(message: AlertMessage, body: bytes) -> str:
    """Identifies what was sent (delivery, attempt, body) without revealing where to."""
    return sha256_hex(
        canonical_json(
            {
                "delivery_id": message.delivery_id,
                "attempt_number": message.attempt_number,
                "body_sha256": sha256_hex(body),
            }
        )
    )
