import json

from django.core.management.base import BaseCommand, CommandError

from closure.evidence import evidence_verify


class Command(BaseCommand):
    help = "Recompute the evidence hash chain; exit 1 and name the first broken sequence if any."

    def handle(self, *args, **options):
        result = evidence_verify()
        self.stdout.write(
            json.dumps(
                {
                    "ok": result.ok,
                    "count": result.count,
                    "head": result.head,
                    "first_broken_sequence": result.first_broken_sequence,
                    "problem": result.problem or None,
                }
            )
        )
        if not result.ok:
            raise CommandError(
                f"evidence chain broken at sequence {result.first_broken_sequence}: "
                f"{result.problem}"
            )
