import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from closure.services.errors import ServiceError
from closure.services.evidence import checkpoint_serialize, evidence_checkpoint_create


class Command(BaseCommand):
    help = (
        "Verify the evidence chain, then sign its head (sequence, row count, chain hash, time) "
        "with CAVRA_EVIDENCE_SIGNING_KEY and store the checkpoint. Prints the checkpoint as "
        "JSON: keep a copy outside the database (see docs/evidence.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--output", type=Path, help="also write the checkpoint JSON to this file"
        )

    def handle(self, *args, **options):
        try:
            checkpoint = evidence_checkpoint_create()
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc
        text = json.dumps(checkpoint_serialize(checkpoint), sort_keys=True)
        if options["output"]:
            options["output"].write_text(text + "\n")
        self.stdout.write(text)
