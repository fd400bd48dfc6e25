import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from closure.evidence.ledger import CheckpointClaim, evidence_verify
from closure.evidence.records import evidence_records_verify, verification_body


class Command(BaseCommand):
    help = (
        "Recompute the evidence hash chain and check the latest signed checkpoint (and any "
        "checkpoint copies given); exit 1 and name the first broken sequence if any. With "
        "--records, also check every evidence-bearing record against its latest evidence row "
        "and name each record changed outside the product."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoint",
            action="append",
            type=Path,
            default=[],
            help="a checkpoint JSON kept outside the database (repeatable)",
        )
        parser.add_argument(
            "--records",
            action="store_true",
            help="also check every evidence-bearing record against its latest evidence row",
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
        records = evidence_records_verify() if options["records"] else None
        self.stdout.write(json.dumps(verification_body(result.as_dict(), records)))
        problems = []
        if not result.ok:
            problems.append(
                f"evidence chain broken at sequence {result.first_broken_sequence}: "
                f"{result.problem}"
            )
        if records is not None and not records.ok:
            listed = [f"  {mismatch.describe()}" for mismatch in records.mismatches]
            if records.mismatch_count > len(listed):
                listed.append(f"  … and {records.mismatch_count - len(listed)} more")
            problems.append(
                f"{records.mismatch_count} records disagree with the ledger:\n" + "\n".join(listed)
            )
        if problems:
            raise CommandError("\n".join(problems))
