"""The `Idempotency-Key` header of POST views: reserve the key, replay, store or release."""

from closure.models import IdempotencyRecord
from closure.services.idempotency import (
    StoredResponse,
    idempotency_begin,
    idempotency_complete,
    idempotency_release,
    request_fingerprint,
)

REPLAYED_HEADER = "Idempotent-Replayed"


class IdempotencyKeyMixin:
    """For an API view whose POSTs honour `Idempotency-Key` (closure.services.idempotency).

    The view calls `idempotency_reserve` before it does anything, then exactly one of
    `idempotency_store` (the response to replay) or `idempotency_release` (nothing to replay:
    the client may try again).
    """

    idempotency_record: IdempotencyRecord | None = None

    def idempotency_reserve(self, request) -> StoredResponse | None:
        """Reserve the request's key; the stored response when this is a repeat."""
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or key is None:
            return None
        fingerprint = request_fingerprint(
            method=request.method, path=request.path, body=request.data
        )
        begun = idempotency_begin(user=request.user, key=key, fingerprint=fingerprint)
        if isinstance(begun, StoredResponse):
            return begun
        self.idempotency_record = begun
        return None

    def idempotency_store(self, *, status: int, body, content_type: str) -> None:
        record, self.idempotency_record = self.idempotency_record, None
        if record is not None:
            idempotency_complete(record=record, status=status, body=body, content_type=content_type)

    def idempotency_release(self) -> None:
        record, self.idempotency_record = self.idempotency_record, None
        if record is not None:
            idempotency_release(record=record)
