import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management.base import BaseCommand

from closure.evidence import chain


class Command(BaseCommand):
    help = (
        "Generate a new Ed25519 evidence signing key. Prints the private key for "
        "CAVRA_EVIDENCE_SIGNING_KEY and its public key; stores nothing."
    )
    requires_system_checks = []

    def handle(self, *args, **options):
        key = Ed25519PrivateKey.generate()
        public = chain.public_key_b64(key)
        self.stdout.write(
            json.dumps(
                {
                    "CAVRA_EVIDENCE_SIGNING_KEY": chain.private_key_to_b64(key),
                    "public_key": public,
                    "key_id": chain.key_id(public),
                },
                indent=2,
            )
        )
