"""Idempotency-Key handling for POST endpoints.

The same user, key and request body returns the stored response and does nothing else; the
same key with another body (or on another endpoint) is a 422; a repeat while the first request
is still running is a 409. Keys expire after 24 hours.

A request holds its key under a lease of `CAVRA_IDEMPOTENCY_LEASE_SECONDS`. A repeat that finds
the key still in progress after the lease ran out (its server died mid-request) takes the key
over and runs the request again. Each reservation gets the next `lease_version`, and a response
is stored, or the key released, only under the version that reserved it: a request that was
merely slow and finishes after losing its key changes nothing.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from closure.evidence.canonical import canonical_json, isoformat, sha256_hex
from closure.models import IdempotencyRecord
from closure.services.errors import Conflict, ServiceError

logger = logging.getLogger(__name__)

KEY_LIFETIME = timedelta(hours=24)
MAX_KEY_LENGTH = 200
# Reserving meets another request's row that may vanish before it is read (a released key); a
# few rounds settle it, since every round but the last found the key in another state.
RESERVE_ROUNDS = 3


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


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.CAVRA_IDEMPOTENCY_LEASE_SECONDS)


def lease_end(record: IdempotencyRecord) -> datetime:
    """When the request holding the key loses it; a key reserved before leases existed has its
    lease counted from when it was reserved."""
    return record.leased_until or record.created_at + lease_duration()


def _reserve_new(*, user, key: str, fingerprint: str, now: datetime) -> IdempotencyRecord | None:
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.filter(user=user, key=key, expires_at__lte=now).delete()
            return IdempotencyRecord.objects.create(
                user=user,
                key=key,
                request_sha256=fingerprint,
                created_at=now,
                expires_at=now + KEY_LIFETIME,
                leased_until=now + lease_duration(),
                lease_version=1,
            )
    except IntegrityError:
        return None


def _take_over(record: IdempotencyRecord, now: datetime) -> bool:
    """Reserve the key of a request whose lease ran out; False if another repeat won it."""
    until = now + lease_duration()
    taken = IdempotencyRecord.objects.filter(
        pk=record.pk, lease_version=record.lease_version, completed=False
    ).update(
        leased_until=until,
        lease_version=F("lease_version") + 1,
        expires_at=now + KEY_LIFETIME,
    )
    if taken:
        record.leased_until = until
        record.lease_version += 1
    return bool(taken)


def idempotency_begin(*, user, key: str, fingerprint: str) -> StoredResponse | IdempotencyRecord:
    """Reserve the key, or return the stored response of an identical earlier request."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ServiceError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            code="invalid_idempotency_key",
        )
    now = timezone.now()
    for _ in range(RESERVE_ROUNDS):
        reserved = _reserve_new(user=user, key=key, fingerprint=fingerprint, now=now)
        if reserved is not None:
            return reserved
        existing = IdempotencyRecord.objects.filter(user=user, key=key).first()
        if existing is None:
            continue
        if existing.request_sha256 != fingerprint:
            raise IdempotencyMismatch(
                "this Idempotency-Key was already used with a different request"
            )
        if existing.completed:
            return StoredResponse(
                existing.response_status,
                existing.response_body,
                existing.response_content_type,
            )
        if lease_end(existing) > now:
            raise Conflict(
                "a request with this Idempotency-Key is still being processed; it holds the key"
                f" until {isoformat(lease_end(existing))}",
                code="idempotency_in_progress",
            )
        if _take_over(existing, now):
            logger.warning(
                "idempotency key %s taken over: the request holding it never finished",
                existing.pk,
            )
            return existing
    raise Conflict(
        "a request with this Idempotency-Key is still being processed",
        code="idempotency_in_progress",
    )


def _held(record: IdempotencyRecord):
    return IdempotencyRecord.objects.filter(
        pk=record.pk, lease_version=record.lease_version, completed=False
    )


def idempotency_release(*, record: IdempotencyRecord) -> None:
    """Free the key for another try, unless a repeat has taken it over meanwhile."""
    _held(record).delete()


def idempotency_complete(
    *, record: IdempotencyRecord, status: int, body, content_type: str
) -> None:
    """Store the response; a server error releases the key so the client can try again.

    Nothing is stored when the key was taken over meanwhile: the response of the request that
    holds it now is the one repeats get.
    """
    if status >= 500:
        idempotency_release(record=record)
        return
    stored = _held(record).update(
        completed=True,
        leased_until=None,
        response_status=status,
        response_body=body,
        response_content_type=content_type,
    )
    if not stored:
        logger.warning(
            "idempotency key %s was taken over before its request finished; response not stored",
            record.pk,
        )


def idempotency_prune(*, now=None) -> int:
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
