"""The account a management command acts as: named with `--user`, it signs the evidence."""

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def command_user(username: str, *, permissions: tuple[str, ...] = (), lacking: str = ""):
    """The user named `username`; a CommandError when there is none, or when it does not hold
    every one of `permissions` ("<username> lacks the <lacking>")."""
    try:
        user = get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"no user named {username!r}") from None
    if permissions and not user.has_perms(permissions):
        raise CommandError(f"{user.username} lacks the {lacking}")
    return user
