"""Bearer-token authentication for REST clients, against hashed, expiring tokens."""

from django.utils import timezone
from rest_framework import authentication, exceptions

from closure.models import ApiToken
from closure.models.accounts import hash_token
from closure.services.tokens import api_token_touch


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
        api_token_touch(token=token, now=now)
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
