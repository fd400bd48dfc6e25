"""Stored responses of POST requests that carried an Idempotency-Key."""

from django.conf import settings
from django.db import models


class IdempotencyRecord(models.Model):
    """One (user, key): the request's fingerprint and, once finished, its response.

    While the request runs, the record holds a lease (`leased_until`) fenced by `lease_version`:
    a repeat that finds the lease run out takes the key over with the next version, and only
    the holder of the current version may store a response or release the key.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    request_sha256 = models.CharField(max_length=64)
    completed = models.BooleanField(default=False)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    response_content_type = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    # Empty once completed, and on keys reserved by a server that predates leases (during a
    # rolling upgrade): their lease counts from `created_at`.
    leased_until = models.DateTimeField(null=True, blank=True)
    # The fence token; a database default so that a server still on the previous release can
    # insert rows while the others restart.
    lease_version = models.PositiveIntegerField(db_default=1)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_one_per_user_key")
        ]
        indexes = [
            # Pruning expired keys.
            models.Index(fields=["expires_at"], name="idempotency_expiry_idx")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key}"
