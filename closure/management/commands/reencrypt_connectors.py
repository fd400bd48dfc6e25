from django.core.management.base import BaseCommand, CommandError

from closure.keyring import newest_key_decrypts
from closure.management.accounts import command_user
from closure.models import Connector
from closure.services.connectors import connectors_reencrypt
from closure.services.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Re-encrypt every connector's private configuration with the newest key of "
        "CAVRA_CONNECTOR_KEYS (run after prepending a new key; then the old keys can go)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="the account the evidence is signed by")

    def handle(self, *args, user, **options):
        actor = command_user(
            user, permissions=("closure.change_connector",), lacking="change_connector permission"
        )
        try:
            names = connectors_reencrypt(actor=actor)
        except ServiceError as exc:
            raise CommandError(exc.detail) from None
        stale = [
            c.name
            for c in Connector.objects.exclude(config_ciphertext="").only(
                "name", "config_ciphertext"
            )
            if not newest_key_decrypts(c.config_ciphertext)
        ]
        if stale:
            raise CommandError(f"still not on the newest key: {', '.join(stale)}")
        self.stdout.write(
            f"re-encrypted {len(names)} connector(s) with the newest key"
            + (f": {', '.join(names)}" if names else "")
        )
