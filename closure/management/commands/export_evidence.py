import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from closure.choices import MetadataKind
from closure.evidence.export import ExportFilter, export_write_directory, export_write_zip
from closure.management.accounts import command_user
from closure.services.errors import ServiceError
from closure.services.evidence import evidence_export_start


def _aware(value: str):
    parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is None:
        raise CommandError(f"{value!r} is not an ISO 8601 time with a zone")
    return parsed


class Command(BaseCommand):
    help = (
        "Export evidence as a verifiable bundle: deterministic JSON Lines or CSV plus a signed "
        "manifest, written to a directory (or a .zip). Records the export as evidence. Check "
        "it offline with `python -m closure.verify_export`."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="the auditor the export is signed by")
        parser.add_argument(
            "--output", required=True, type=Path, help="bundle directory, or a path ending .zip"
        )
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--kind", choices=MetadataKind.values, help="metadata kind")
        for name in ("session-id", "health-id", "provider", "execution-status", "signer"):
            parser.add_argument(f"--{name}")
        parser.add_argument("--dry-run", choices=["true", "false"])
        parser.add_argument("--created-after", help="ISO 8601, inclusive")
        parser.add_argument("--created-before", help="ISO 8601, exclusive")
        parser.add_argument("--sequence-from", type=int)
        parser.add_argument("--sequence-to", type=int)
        parser.add_argument(
            "--through-sequence",
            type=int,
            help="cut the ledger at this sequence (reproduces an earlier export byte for byte)",
        )

    def handle(self, *args, **options):
        actor = command_user(
            options["user"],
            permissions=("closure.export_evidence",),
            lacking="export_evidence permission",
        )
        output: Path = options["output"]
        if output.exists() and not (output.is_dir() and not any(output.iterdir())):
            raise CommandError(f"{output} already exists")
        export_filter = ExportFilter(
            metadata_kind=options["kind"],
            session_id=options["session_id"],
            health_id=options["health_id"],
            provider=options["provider"],
            execution_status=options["execution_status"],
            signer=options["signer"],
            dry_run=None if options["dry_run"] is None else options["dry_run"] == "true",
            created_after=_aware(options["created_after"]) if options["created_after"] else None,
            created_before=(
                _aware(options["created_before"]) if options["created_before"] else None
            ),
            sequence_from=options["sequence_from"],
            sequence_to=options["sequence_to"],
        )
        try:
            plan = evidence_export_start(
                actor=actor,
                export_format=options["format"],
                export_filter=export_filter,
                through_sequence=options["through_sequence"],
            )
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc
        if output.suffix == ".zip":
            export_write_zip(plan, output)
            summary = {"bundle": str(output), "export_id": plan.export_id}
        else:
            manifest = export_write_directory(plan, output)
            summary = {
                "bundle": str(output),
                "export_id": plan.export_id,
                "row_count": manifest["row_count"],
                "first_sequence": manifest["first_sequence"],
                "last_sequence": manifest["last_sequence"],
                "through_sequence": plan.through_sequence,
                "file_sha256": manifest["file"]["sha256"],
            }
        self.stdout.write(json.dumps(summary, sort_keys=True))
