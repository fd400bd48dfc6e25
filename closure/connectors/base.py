"""The one small interface every connector kind implements."""

from dataclasses import dataclass
from typing import Protocol

from closure.connectors.http import HttpResult, body_sha256, redacted_excerpt
from closure.evidence import canonical_json, sha256_hex


@dataclass(frozen=True)
class AlertMessage:
    """What a connector sends: the alert's public-safe payload for one delivery attempt."""

    delivery_id: str
    attempt_number: int
    payload: dict


@dataclass(frozen=True)
class SendOutcome:
    """The classified result of one attempt; carries no secret and no raw response body."""

    delivered: bool
    http_status: int | None = None
    error_class: str = ""
    error_detail: str = ""
    latency_ms: int | None = None
    retry_after_seconds: int | None = None
    request_fingerprint: str = ""
    response_sha256: str = ""
    response_excerpt: str = ""

    @classmethod
    def from_http(cls, result: HttpResult, *, fingerprint: str, delivered: bool) -> "SendOutcome":
        return cls(
            delivered=delivered,
            http_status=result.status,
            error_class="" if delivered else (result.error_class or "http_4xx"),
            error_detail=result.error_detail,
            latency_ms=result.latency_ms,
            retry_after_seconds=result.retry_after_seconds,
            request_fingerprint=fingerprint,
            response_sha256=body_sha256(result.body),
            response_excerpt=redacted_excerpt(result.body),
        )


class ConnectorKindHandler(Protocol):
    def send(self, *, config: dict, message: AlertMessage, timeout_seconds: float) -> SendOutcome:
        """Deliver `message` once. Never raises: every failure is a classified outcome."""
        ...


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
