import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from closure.evidence import CheckpointClaim, evidence_verify


class Command(BaseCommand):
    help = (
        "Recompute the evidence hash chain and check the latest signed checkpoint (and any "
        "checkpoint copies given); exit 1 and name the first broken sequence if any."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoint",
            action="append",
            type=Path,
            default=[],
            help="a checkpoint JSON kept outside the database (repeatable)",
        )

    def handle(self, *args, **options):
        claims = []
        for path in options["checkpoint"]:
            try:
                claims.append(
                    CheckpointClaim.from_dict(json.loads(path.read_text()), source=str(path))
                )
            except (OSError, ValueError) as exc:
                raise CommandError(f"cannot read checkpoint {path}: {exc}") from exc
        result = evidence_verify(external=tuple(claims))
        self.stdout.write(json.dumps(result.as_dict()))
        if not result.ok:
            raise CommandError(
                f"evidence chain broken at sequence {result.first_broken_sequence}: "
                f"{result.problem}"
            )
