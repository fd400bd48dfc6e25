"""API tokens for REST clients: stored only as a hash, with expiry and revocation."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "cavra_"  # noqa: S105 (a public marker, not a secret)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A REST client's bearer token. Only its SHA-256 is kept; the raw value is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # The first characters of the token, so a holder can tell which one it is.
    token_prefix = models.CharField(max_length=16, editable=False)
    token_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.token_prefix}… ({self.name})"

    @classmethod
    def issue(cls, *, user, name: str, days: int | None = None) -> tuple["ApiToken", str]:
        """Create a token and return it with its raw value (shown to the caller only once)."""
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        lifetime = timedelta(days=days if days is not None else settings.CAVRA_API_TOKEN_DAYS)
        now = timezone.now()
        token = cls.objects.create(
            created_at=now,
            user=user,
            name=name,
            token_prefix=raw[:12],
            token_sha256=hash_token(raw),
            expires_at=now + lifetime,
        )
        return token, raw

    def is_usable(self, now) -> bool:
        return self.revoked_at is None and self.expires_at > now
