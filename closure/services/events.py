"""Ingest of upstream delivery facts, idempotent by event_id."""

from django.db import transaction

from closure.choices import MetadataKind
from closure.evidence.canonical import canonical_json, sha256_hex
from closure.evidence.ledger import evidence_append
from closure.models import DeliveryEvent
from closure.services.common import signer_of
from closure.services.errors import Conflict

MAX_BATCH = 1000
# The fields a client sends for an event: hashed to tell a repeat from a changed repeat, and
# listed (with who ingested it and when) in the API's event resource.
EVENT_BODY_FIELDS = (
    "event_id",
    "kind",
    "status",
    "occurred_at",
    "provider",
    "run_id",
    "executive_report_id",
    "schedule_enabled",
    "details",
)


def event_body_sha256(event: dict) -> str:
    return sha256_hex(canonical_json({field: event.get(field) for field in EVENT_BODY_FIELDS}))


def delivery_events_ingest(*, actor, events: list[dict]) -> dict:
    """Store a validated batch. Repeats are accepted once; a changed repeat is a conflict.

    The whole batch commits or nothing does, with one evidence row for what was created.
    """
    hashed = [(event, event_body_sha256(event)) for event in events]
    with transaction.atomic(durable=True):
        ids = [event["event_id"] for event in events]
        stored = dict(
            DeliveryEvent.objects.filter(event_id__in=ids).values_list("event_id", "body_sha256")
        )
        conflicts = {}
        first_digest: dict[str, str] = dict(stored)
        for index, (event, digest) in enumerate(hashed):
            known = first_digest.setdefault(event["event_id"], digest)
            if known != digest:
                conflicts[f"events.{index}.event_id"] = [
                    f"event {event['event_id']!r} was already given with a different body"
                ]
        if conflicts:
            raise Conflict(
                "some events repeat a stored event_id with a different body",
                code="event_conflict",
                errors=conflicts,
            )
        new_rows = []
        seen: set[str] = set()
        for event, digest in hashed:
            if event["event_id"] in stored or event["event_id"] in seen:
                continue
            seen.add(event["event_id"])
            new_rows.append(DeliveryEvent(**event, body_sha256=digest, ingested_by_id=actor.pk))
        # One INSERT for a whole batch (the API takes at most MAX_BATCH events).
        DeliveryEvent.objects.bulk_create(new_rows, batch_size=MAX_BATCH)
        result = {"created": len(new_rows), "duplicates": len(events) - len(new_rows)}
        if new_rows:
            evidence_append(
                kind=MetadataKind.EVENT_INGEST,
                session_id=new_rows[0].event_id,
                signer=signer_of(actor),
                subject={
                    **result,
                    "event_ids_sha256": sha256_hex(
                        canonical_json(sorted(row.event_id for row in new_rows))
                    ),
                    "first_event_id": new_rows[0].event_id,
                    "last_event_id": new_rows[-1].event_id,
                },
                decision_count=len(new_rows),
            )
    return result
