"""Recording an auditor's export of a filtered admin changelist as evidence."""

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.canonical import isoformat
from closure.evidence.ledger import evidence_append
from closure.models.base import PublicId
from closure.services.common import signer_of
from closure.services.errors import InvalidInput

ADMIN_EXPORT_ID_PREFIX = "gordackfinaladminexport-"
EXPORT_FORMATS = ("csv", "jsonl")


@dataclass(frozen=True)
class AdminExport:
    """What one export contains: the filtered rows of one model up to `through_pk`."""

    export_id: str
    model: str
    format: str
    query: dict[str, list[str]]
    columns: list[str]
    through_pk: int
    row_count: int
    started_at: datetime

    def as_dict(self) -> dict:
        return {
            "export_id": self.export_id,
            "model": self.model,
            "format": self.format,
            "query": self.query,
            "columns": self.columns,
            "through_pk": self.through_pk,
            "row_count": self.row_count,
            "started_at": isoformat(self.started_at),
        }


def admin_export_start(
    *,
    actor,
    export_format: str,
    queryset: QuerySet,
    query: dict[str, list[str]],
    columns: list[str],
    now: datetime | None = None,
) -> tuple[AdminExport, QuerySet]:
    """Fix which rows an admin export holds and record the export as evidence, before any
    byte of it is streamed.

    `queryset` is the changelist's filtered queryset and `query` the filter parameters that
    produced it (recorded, so the export can be repeated). The rows are cut at the newest
    primary key now, so rows added while the export streams are not in it. Returns the export
    and the queryset to stream, in primary-key order.
    """
    if export_format not in EXPORT_FORMATS:
        raise InvalidInput(
            f"unknown export format {export_format!r}",
            errors={"format": ["Choose csv or jsonl."]},
        )
    model = queryset.model
    now = now or timezone.now()
    through_pk = model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    rows = queryset.filter(pk__lte=through_pk).order_by("pk")
    export = AdminExport(
        export_id=PublicId(ADMIN_EXPORT_ID_PREFIX)(),
        model=model._meta.label_lower,
        format=export_format,
        query={key: sorted(values) for key, values in sorted(query.items())},
        columns=list(columns),
        through_pk=through_pk,
        row_count=rows.order_by().count(),
        started_at=now,
    )
    with transaction.atomic(durable=True):
        evidence_append(
            kind=MetadataKind.ADMIN_EXPORT,
            session_id=export.export_id,
            signer=signer_of(actor),
            subject=export.as_dict(),
            decision_count=export.row_count,
            now=now,
        )
    return export, rows
