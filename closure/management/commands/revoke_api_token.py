from django.core.management.base import BaseCommand, CommandError

from closure.models import ApiToken
from closure.models.accounts import STORED_PREFIX_LENGTH
from closure.services.errors import ServiceError
from closure.services.tokens import api_token_revoke


class Command(BaseCommand):
    help = (
        "Revoke an API token, named by its id or its prefix as `list_api_tokens` shows them, "
        "or by the whole raw token. It stops authenticating at once; the revocation is "
        "recorded as evidence."
    )

    def add_arguments(self, parser):
        parser.add_argument("token", help="id, prefix (cavra_…) or the raw token")

    def handle(self, *args, token, **options):
        reference = token.strip()
        # A raw token is never echoed whole, so a mistyped one does not land in a terminal log.
        shown = (
            reference
            if len(reference) <= STORED_PREFIX_LENGTH
            else f"{reference[:STORED_PREFIX_LENGTH]}…"
        )
        matches = list(ApiToken.objects.referenced_by(reference).order_by("pk")[:10])
        if not matches:
            raise CommandError(f"no API token matches {shown!r}")
        if len(matches) > 1:
            ids = ", ".join(str(match.pk) for match in matches)
            raise CommandError(
                f"{shown!r} matches more than one API token (ids {ids}): give the id"
            )
        try:
            revoked = api_token_revoke(actor=None, token_pk=matches[0].pk)
        except ServiceError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(
            f"revoked {revoked.token.token_prefix}… ({revoked.token.name}) of "
            f"{revoked.token.user.get_username()}; evidence #{revoked.evidence.sequence}"
        )
