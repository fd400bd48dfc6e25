"""Creating and revoking API tokens, each change recorded as evidence.

The management commands, the admin (platform owners) and the console (a user's own tokens) all
call `api_token_create` and `api_token_revoke`; bearer authentication records each token's last
use with `api_token_touch`. The evidence subject is public-safe: the token's name, stored prefix,
owner and times, never the raw token or its hash.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.canonical import isoformat
from closure.evidence.ledger import evidence_append
from closure.models import ApiToken, Evidence
from closure.services.common import signer_of
from closure.services.errors import Conflict, InvalidInput, NotFound

# The evidence signer of a change made with a management command: a shell on the server is not
# an authenticated user of the application, so no name given on the command line is recorded
# as one.
COMMAND_LINE_SIGNER = "cavra-command-line"
MAX_NAME_LENGTH = ApiToken._meta.get_field("name").max_length
# Ten years: a longer lifetime is no lifetime, and a much longer one overflows the date.
MAX_TOKEN_DAYS = 3650
# `last_used_at` is recorded to this precision: a busy client costs one write a minute, not one
# per request (reads stay reads).
LAST_USE_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True)
class ApiTokenIssue:
    """A created token, its raw value (to be shown once, never stored) and its evidence row."""

    token: ApiToken
    raw: str
    evidence: Evidence


@dataclass(frozen=True)
class ApiTokenRevocation:
    token: ApiToken
    evidence: Evidence


def api_token_public(token: ApiToken) -> dict:
    """The token as evidence shows it."""
    return {
        "token_id": token.token_id,
        "name": token.name,
        "token_prefix": token.token_prefix,
        "owner": token.user.get_username(),
        "created_at": isoformat(token.created_at),
        "expires_at": isoformat(token.expires_at),
        "revoked_at": isoformat(token.revoked_at),
    }


def _signer(actor) -> str:
    return COMMAND_LINE_SIGNER if actor is None else signer_of(actor)


def _token_evidence(*, actor, token: ApiToken, change: str, now: datetime) -> Evidence:
    return evidence_append(
        kind=MetadataKind.API_TOKEN,
        session_id=token.token_id,
        signer=_signer(actor),
        subject={"change": change, "token": api_token_public(token)},
        decision_count=1,
        now=now,
    )


def api_token_create(*, actor, user, name: str, days: int | None = None) -> ApiTokenIssue:
    """Issue a token for `user`. `actor` is the signed-in user who asked (None: a management
    command); the caller decides whether `actor` may issue tokens for `user`."""
    name = name.strip()
    errors = {}
    if not name:
        errors["name"] = ["A name is required: say what the token is for."]
    elif len(name) > MAX_NAME_LENGTH:
        errors["name"] = [f"At most {MAX_NAME_LENGTH} characters."]
    if days is not None and not 1 <= days <= MAX_TOKEN_DAYS:
        errors["days"] = [f"Between 1 and {MAX_TOKEN_DAYS} days."]
    if errors:
        raise InvalidInput(
            "; ".join(f"{path}: {messages[0]}" for path, messages in errors.items()),
            errors=errors,
        )
    with transaction.atomic(durable=True):
        token, raw = ApiToken.issue(user=user, name=name, days=days)
        evidence = _token_evidence(actor=actor, token=token, change="created", now=token.created_at)
    return ApiTokenIssue(token=token, raw=raw, evidence=evidence)


def api_token_revoke(
    *, actor, token_pk: int, owner=None, now: datetime | None = None
) -> ApiTokenRevocation:
    """Revoke a token: it stops authenticating at once and for good.

    `owner` limits the token to that user's own (the console): another user's token is then
    "not found", exactly as a token that does not exist. Revoking a revoked token is a
    conflict (409), never a second revocation: its evidence and time stay the first ones.
    """
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        tokens = ApiToken.objects.select_for_update(of=("self",)).select_related("user")
        if owner is not None:
            tokens = tokens.filter(user=owner)
        token = tokens.filter(pk=token_pk).first()
        if token is None:
            raise NotFound(f"no API token {token_pk}", code="api_token_not_found")
        if token.revoked_at is not None:
            raise Conflict(
                f"API token {token.token_prefix}… ({token.name}) was already revoked at "
                f"{isoformat(token.revoked_at)}",
                code="api_token_already_revoked",
            )
        token.revoke(now)
        evidence = _token_evidence(actor=actor, token=token, change="revoked", now=now)
    return ApiTokenRevocation(token=token, evidence=evidence)


def api_token_touch(*, token: ApiToken, now: datetime) -> None:
    """Record that `token` authenticated a request at `now`, at most once a minute."""
    if token.last_used_at is None or now - token.last_used_at >= LAST_USE_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
