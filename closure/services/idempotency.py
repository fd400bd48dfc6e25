"""Idempotency-Key handling for POST endpoints.

The same user, key and request body returns the stored response and does nothing else; the
same key with another body (or on another endpoint) is a 422; a repeat while the first request
is still running is a 409. Keys expire after 24 hours.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from closure.evidence import canonical_json, sha256_hex
from closure.models import IdempotencyRecord
from closure.services.errors import Conflict, ServiceError

KEY_LIFETIME = timedelta(hours=24)
MAX_KEY_LENGTH = 200


class IdempotencyMismatch(ServiceError):
    status = 422
    code = "idempotency_key_reused"
    title = "Idempotency-Key reused with another request"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: object
    content_type: str


def request_fingerprint(*, method: str, path: str, body: object) -> str:
    return sha256_hex(canonical_json({"method": method, "path": path, "body": body}))


def idempotency_begin(*, user, key: str, fingerprint: str) -> StoredResponse | IdempotencyRecord:
    """Reserve the key, or return the stored response of an identical earlier request."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ServiceError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            code="invalid_idempotency_key",
        )
    now = timezone.now()
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.filter(user=user, key=key, expires_at__lte=now).delete()
            return IdempotencyRecord.objects.create(
                user=user,
                key=key,
                request_sha256=fingerprint,
                created_at=now,
                expires_at=now + KEY_LIFETIME,
            )
    except IntegrityError:
        existing = IdempotencyRecord.objects.get(user=user, key=key)
    if existing.request_sha256 != fingerprint:
        raise IdempotencyMismatch("this Idempotency-Key was already used with a different request")
    if not existing.completed:
        raise Conflict(
            "a request with this Idempotency-Key is still being processed",
            code="idempotency_in_progress",
        )
    return StoredResponse(
        existing.response_status, existing.response_body, existing.response_content_type
    )


def idempotency_complete(
    *, record: IdempotencyRecord, status: int, body, content_type: str
) -> None:
    """Store the response; a server error releases the key so the client can try again."""
    if status >= 500:
        IdempotencyRecord.objects.filter(pk=record.pk).delete()
        return
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        completed=True,
        response_status=status,
        response_body=body,
        response_content_type=content_type,
    )


def idempotency_prune(*, now=None) -> int:
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
