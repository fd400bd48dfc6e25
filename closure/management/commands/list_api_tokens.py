from datetime import UTC

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from closure.choices import ApiTokenState
from closure.models import ApiToken

COLUMNS = ("id", "prefix", "name", "owner", "created", "expires", "last used", "state")


def _time(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


class Command(BaseCommand):
    help = "List API tokens, newest first: prefix, name, owner, times and state. Never a secret."

    def add_arguments(self, parser):
        parser.add_argument("--user", help="only this user's tokens")
        parser.add_argument("--state", choices=ApiTokenState.values, help="only tokens in it")

    def handle(self, *args, user, state, **options):
        now = timezone.now()
        tokens = ApiToken.objects.select_related("user").order_by("-created_at", "-id")
        if user is not None:
            try:
                owner = get_user_model().objects.get(username=user)
            except get_user_model().DoesNotExist:
                raise CommandError(f"no user named {user!r}") from None
            tokens = tokens.filter(user=owner)
        if state is not None:
            tokens = tokens.in_state(state, now)
        rows = [
            (
                str(token.pk),
                f"{token.token_prefix}…",
                token.name,
                token.user.get_username(),
                _time(token.created_at),
                _time(token.expires_at),
                _time(token.last_used_at),
                token.state(now),
            )
            for token in tokens
        ]
        if not rows:
            self.stdout.write("No API tokens.")
            return
        widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
        for row in [COLUMNS, *rows]:
            self.stdout.write(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
