"""The append-only, hash-chained evidence ledger."""

from django.db import models

from closure.choices import MetadataKind
from closure.models.base import choices_constraint


class EvidenceImmutableError(Exception):
    """Raised on any attempt to change or remove an evidence row."""


class AppendOnlyQuerySet(models.QuerySet):
    """Refuses every bulk change: `update()`, `delete()`, `bulk_update()`, and upserts."""

    @property
    def noun(self) -> str:
        return self.model.append_only_noun

    def update(self, **kwargs):
        raise EvidenceImmutableError(f"{self.noun} are never updated")

    def _update(self, values):
        # Model.save() of an existing row ends here (through the base manager).
        raise EvidenceImmutableError(f"{self.noun} are never updated")

    def delete(self):
        raise EvidenceImmutableError(f"{self.noun} are never deleted")

    def _raw_delete(self, using):
        raise EvidenceImmutableError(f"{self.noun} are never deleted")

    def bulk_update(self, objs, fields, batch_size=None):
        raise EvidenceImmutableError(f"{self.noun} are never updated")

    def bulk_create(self, objs, *args, update_conflicts=False, **kwargs):
        if update_conflicts:
            raise EvidenceImmutableError(f"{self.noun} are never updated")
        return super().bulk_create(objs, *args, update_conflicts=update_conflicts, **kwargs)


class AppendOnlyModel(models.Model):
    """A row that is inserted once and never changed or removed through the ORM."""

    # How errors name the rows ("evidence rows are never updated").
    append_only_noun = "rows"
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True
        # Related lookups and Model.save() go through the base manager: make it the guarded one.
        base_manager_name = "objects"

    def save(self, **kwargs):
        if not self._state.adding or kwargs.get("force_update") or kwargs.get("update_fields"):
            raise EvidenceImmutableError(f"{self.append_only_noun} are never updated")
        # Always an INSERT: a new instance carrying an existing primary key must fail on the
        # unique key, never overwrite the stored row.
        kwargs["force_insert"] = True
        super().save(**kwargs)

    def delete(self, *args, **kwargs):
        raise EvidenceImmutableError(f"{self.append_only_noun} are never deleted")


class Evidence(AppendOnlyModel):
    """One evidence-worthy change, chained to the one before it.

    `payload_text` is the public-safe envelope as canonical JSON, exactly the bytes
    `payload_sha256` hashes; `chain_hash = sha256(previous_hash + payload_sha256)`. `payload`
    and the flattened columns are copies of it for queries, checked against it by verification.
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
    # The query copy: jsonb on PostgreSQL, which normalises numbers (-0.0, 1e16), so it is never
    # what gets hashed.
    payload = models.JSONField()
    # NULL only on rows written before the text was stored (migration 0013), which are verified
    # from the canonical JSON of `payload`; "" would be a payload, so NULL is not the empty text.
    payload_text = models.TextField(null=True, editable=False)  # noqa: DJ001
    payload_sha256 = models.CharField(max_length=64)
    previous_hash = models.CharField(max_length=64)
    chain_hash = models.CharField(max_length=64, unique=True)

    append_only_noun = "evidence rows"

    class Meta(AppendOnlyModel.Meta):
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
            # The signer filter (console, API) and the admin search by signer, newest first.
            models.Index(fields=["signer", "-sequence"], name="evidence_signer_idx"),
            # The provider filter: an exact provider newest first (console, API), and the
            # admin's comma-list match, whose bounded count reads this narrow index instead of
            # the wide rows.
            models.Index(fields=["provider", "-sequence"], name="evidence_provider_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.metadata_kind}"


class EvidenceCheckpoint(AppendOnlyModel):
    """A signed statement of the chain's head: sequence, row count, head hash and time.

    The Ed25519 signature covers `closure.evidence.chain.checkpoint_message(...)` of these fields. A
    verifier trusts it only under a configured public key (never the one stored here, which is
    kept for reference), so rewriting the chain and its checkpoints needs the private key.
    """

    head_sequence = models.PositiveBigIntegerField()
    row_count = models.PositiveBigIntegerField()
    chain_head = models.CharField(max_length=64)
    checkpointed_at = models.DateTimeField()
    key_id = models.CharField(max_length=16)
    public_key = models.CharField(max_length=44)
    signature = models.CharField(max_length=88)

    append_only_noun = "evidence checkpoints"

    class Meta(AppendOnlyModel.Meta):
        ordering = ["-head_sequence", "-id"]
        constraints = [
            # The chain is gap-free, so a head at sequence N covers exactly N rows.
            models.CheckConstraint(
                condition=models.Q(row_count=models.F("head_sequence")),
                name="evidence_checkpoint_count_is_head",
            ),
        ]
        indexes = [
            # The latest checkpoint, read by every verification.
            models.Index(fields=["-head_sequence", "-id"], name="evidence_checkpoint_head_idx"),
        ]

    def __str__(self) -> str:
        return f"checkpoint at #{self.head_sequence} ({self.key_id})"
