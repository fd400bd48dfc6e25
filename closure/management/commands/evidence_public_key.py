import json

from django.core.management.base import BaseCommand

from closure.evidence.signing import public_key_info


class Command(BaseCommand):
    help = (
        "Print the public half of the evidence signing key (Ed25519): what auditors pin to "
        "verify checkpoints and export bundles. Never prints the private key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--raw", action="store_true", help="print only the base64 public key")

    def handle(self, *args, **options):
        info = public_key_info()
        if options["raw"]:
            self.stdout.write(info["public_key"])
            return
        self.stdout.write(json.dumps(info, sort_keys=True))
        if info["derived_development_key"]:
            self.stderr.write(
                "warning: CAVRA_EVIDENCE_SIGNING_KEY is not set; this is the development key "
                "derived from DJANGO_SECRET_KEY"
            )
