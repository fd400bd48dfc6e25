"""API tokens for REST clients: stored only as a hash, with expiry and revocation."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from closure.choices import ApiTokenState
from closure.models.base import NewestFirstQuerySet

TOKEN_PREFIX = "cavra_"  # noqa: S105 (a public marker, not a secret)
# The token's public ID in evidence: this prefix and its primary key in 16 hex characters.
API_TOKEN_ID_PREFIX = "gordackapitoken-"  # noqa: S105 (a public marker, not a secret)
# Holders and platform owners name a token by its first characters, as the console shows them.
STORED_PREFIX_LENGTH = 12


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(NewestFirstQuerySet):
    """The token states by name; a revoked token stays revoked after it expires."""

    def active(self, now):
        return self.filter(revoked_at__isnull=True, expires_at__gt=now)

    def expired(self, now):
        return self.filter(revoked_at__isnull=True, expires_at__lte=now)

    def revoked(self):
        return self.filter(revoked_at__isnull=False)

    def in_state(self, state: str, now):
        if state == ApiTokenState.REVOKED:
            return self.revoked()
        return self.active(now) if state == ApiTokenState.ACTIVE else self.expired(now)

    def referenced_by(self, reference: str):
        """The tokens `reference` names: a primary key, a token's prefix as listed (12
        characters; two tokens may share one), or a whole raw token, found by its hash (one
        that leaked, say)."""
        # At most 18 digits: larger numbers are no primary key (and overflow the column).
        if reference.isascii() and reference.isdigit() and len(reference) <= 18:
            return self.filter(pk=int(reference))
        if len(reference) > STORED_PREFIX_LENGTH and not reference.endswith("…"):
            return self.filter(token_sha256=hash_token(reference))
        return self.filter(token_prefix=reference.removesuffix("…"))


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

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at", "-id"]
        permissions = [("manage_api_tokens", "Can list, create and revoke every user's API tokens")]
        indexes = [
            # A user's own tokens, newest first: the console's "My API tokens" and
            # `list_api_tokens --user`.
            models.Index(fields=["user", "-created_at", "-id"], name="apitoken_user_created_idx"),
            # Every token, newest first: the admin changelist and `list_api_tokens`.
            models.Index(fields=["-created_at", "-id"], name="apitoken_created_idx"),
        ]

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
            token_prefix=raw[:STORED_PREFIX_LENGTH],
            token_sha256=hash_token(raw),
            expires_at=now + lifetime,
        )
        return token, raw

    @property
    def token_id(self) -> str:
        """The public ID that names this token in evidence."""
        return f"{API_TOKEN_ID_PREFIX}{self.pk:016x}"

    def state(self, now) -> ApiTokenState:
        if self.revoked_at is not None:
            return ApiTokenState.REVOKED
        return ApiTokenState.ACTIVE if self.expires_at > now else ApiTokenState.EXPIRED

    def is_usable(self, now) -> bool:
        return self.state(now) == ApiTokenState.ACTIVE

    def revoke(self, now) -> None:
        self.revoked_at = now
        self.save(update_fields=["revoked_at"])
