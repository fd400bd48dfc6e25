"""Bearer-token authentication for REST clients, against hashed, expiring tokens."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from closure.models import ApiToken
from closure.models.accounts import hash_token

# `last_used_at` is recorded to this precision: a busy client costs one write a minute, not one
# per request (reads stay reads).
LAST_USE_PRECISION = timedelta(minutes=1)


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer cavra_…`; only the token's SHA-256 is looked up."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(errors="replace")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        raw = raw.strip()
        if not raw:
            raise exceptions.AuthenticationFailed("Bearer token missing.")
        token = ApiToken.objects.select_related("user").filter(token_sha256=hash_token(raw)).first()
        now = timezone.now()
        if token is None or not token.is_usable(now) or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        if token.last_used_at is None or now - token.last_used_at >= LAST_USE_PRECISION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
