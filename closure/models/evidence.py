"""The append-only, hash-chained evidence ledger."""

from django.db import models

from closure.choices import MetadataKind
from closure.models.base import choices_constraint


class EvidenceImmutableError(Exception):
    """Raised on any attempt to change or remove an evidence row."""


class EvidenceQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise EvidenceImmutableError("evidence rows are never updated")

    def delete(self):
        raise EvidenceImmutableError("evidence rows are never deleted")

    def bulk_update(self, objs, fields, batch_size=None):
        raise EvidenceImmutableError("evidence rows are never updated")


class Evidence(models.Model):
    """One evidence-worthy change, chained to the one before it.

    `payload` is the public-safe envelope; `payload_sha256` hashes its canonical JSON and
    `chain_hash = sha256(previous_hash + payload_sha256)`.
    """

    sequence = models.PositiveBigIntegerField(unique=True, editable=False)
    metadata_kind = models.CharField(max_length=160, choices=MetadataKind.choices)
    session_id = models.CharField(max_length=80)
    created_at = models.DateTimeField()
    signer = models.CharField(max_length=150)
    # Flattened filter fields (also inside `payload`).
    health_id = models.CharField(max_length=64, blank=True, default="")
    # A comma list when the change concerns several connectors (an alert sent to `all`, a plan
    # or run filtered on many): unbounded, like the provider filter it records.
    provider = models.TextField(blank=True, default="")
    execution_status = models.CharField(max_length=16, blank=True, default="")
    dry_run = models.BooleanField(null=True, blank=True)
    decision_count = models.PositiveIntegerField(default=0)
    blocked_count = models.PositiveIntegerField(default=0)
    approval_required_count = models.PositiveIntegerField(default=0)
    payload = models.JSONField()
    payload_sha256 = models.CharField(max_length=64)
    previous_hash = models.CharField(max_length=64)
    chain_hash = models.CharField(max_length=64, unique=True)

    objects = EvidenceQuerySet.as_manager()

    class Meta:
        ordering = ["-sequence"]
        verbose_name_plural = "evidence"
        permissions = [
            ("export_evidence", "Can export and verify evidence"),
            ("review_closure", "Can record a closure review"),
        ]
        constraints = [
            choices_constraint("metadata_kind", MetadataKind, "evidence_kind_valid"),
            models.CheckConstraint(condition=models.Q(sequence__gte=1), name="evidence_seq_gte_1"),
        ]
        indexes = [
            # Auditors filter by kind and subject, newest first.
            models.Index(fields=["metadata_kind", "-sequence"], name="evidence_kind_idx"),
            models.Index(fields=["session_id"], name="evidence_session_idx"),
            models.Index(fields=["health_id"], name="evidence_health_idx"),
            models.Index(fields=["-created_at"], name="evidence_created_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.metadata_kind}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise EvidenceImmutableError("evidence rows are never updated")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise EvidenceImmutableError("evidence rows are never deleted")
