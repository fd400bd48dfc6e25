from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from closure.management.accounts import command_user
from closure.services.connectors import connectors_bootstrap
from closure.services.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Create or update connectors from a JSON file (default: CAVRA_CONNECTORS_FILE). "
        "The whole file is validated before anything is written; see docs/connectors.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="the account the evidence is signed by")
        parser.add_argument("--file", default="", help="path of the JSON file")

    def handle(self, *args, user, file, **options):
        path = file or settings.CAVRA_CONNECTORS_FILE
        if not path:
            raise CommandError("name a file with --file or CAVRA_CONNECTORS_FILE")
        actor = command_user(
            user,
            permissions=("closure.add_connector", "closure.change_connector"),
            lacking="add/change_connector permissions",
        )
        try:
            results = connectors_bootstrap(actor=actor, path=path)
        except ServiceError as exc:
            # Field paths and rules only: the file holds secrets, its values are never echoed.
            lines = [exc.detail] + [f"  {key}: {'; '.join(m)}" for key, m in exc.errors.items()]
            raise CommandError("\n".join(lines)) from None
        for name, change in results:
            self.stdout.write(f"{name}: {change}")
