from django.core.management.base import BaseCommand, CommandError

from closure.management.accounts import command_user
from closure.services.errors import ServiceError
from closure.services.tokens import api_token_create


class Command(BaseCommand):
    help = (
        "Issue an API token for a user; the raw token is printed once and stored as a hash. "
        "The creation is recorded as evidence."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="what the token is for")
        parser.add_argument("--days", type=int, default=None, help="lifetime in days")

    def handle(self, *args, username, name, days, **options):
        user = command_user(username)
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1")
        try:
            issued = api_token_create(actor=None, user=user, name=name, days=days)
        except ServiceError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(issued.raw)
        token = issued.token
        self.stderr.write(f"token {token.token_prefix}… expires {token.expires_at.isoformat()}")
