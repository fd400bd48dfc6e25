"""Delivery destinations. Private configuration is encrypted at rest and never shown."""

from django.db import models
from django.db.models import Q
from django.utils import timezone

from closure.choices import ConnectorKind
from closure.models.base import choices_constraint


class Connector(models.Model):
    """A delivery destination; its `name` is the API's `provider`."""

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=ConnectorKind.choices)
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True, default="")
    # Fernet token of the canonical JSON of the private configuration (URLs, tokens, keys).
    config_ciphertext = models.TextField(blank=True, default="", editable=False)
    # Keyed fingerprint of the private configuration: shows that it changed, reveals nothing.
    config_fingerprint = models.CharField(max_length=16, blank=True, default="", editable=False)
    config_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Per configuration key: its keyed fingerprint and when it last changed. Names and hashes
    # only, so forms and the API can say "set, changed at …" for each value.
    config_fields = models.JSONField(default=dict, blank=True, editable=False)
    # Teams workflows answer 202 when they queue a card: count that as delivered (trusting the
    # workflow) instead of an open "unconfirmed" risk on the closure dashboard.
    accepted_counts_as_delivered = models.BooleanField(
        default=False,
        help_text="Teams only: treat a workflow's 202 Accepted as delivered on the closure "
        "dashboard. Off: an accepted alert stays open until it is acknowledged.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            choices_constraint("kind", ConnectorKind, "connector_kind_valid"),
            # Only a Teams workflow answers "accepted"; the switch means nothing elsewhere.
            models.CheckConstraint(
                condition=Q(accepted_counts_as_delivered=False) | Q(kind=ConnectorKind.TEAMS),
                name="connector_accepted_only_teams",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def private_config(self) -> dict:
        from closure.keyring import decrypt_config

        return decrypt_config(self.config_ciphertext)

    def set_private_config(self, config: dict) -> None:
        """Encrypt `config` into the row and note which keys changed (the caller saves)."""
        from closure.keyring import (
            config_field_status,
            config_fingerprint,
            encrypt_config,
        )

        now = timezone.now()
        self.config_ciphertext = encrypt_config(config)
        self.config_fingerprint = config_fingerprint(config)
        self.config_fields = config_field_status(
            config,
            previous=self.config_fields or {},
            changed_at=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )
        self.config_changed_at = now
