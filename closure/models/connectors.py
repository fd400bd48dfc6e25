"""Delivery destinations. Private configuration is encrypted at rest and never shown."""

from django.db import models
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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [choices_constraint("kind", ConnectorKind, "connector_kind_valid")]

    def __str__(self) -> str:
        return self.name

    @property
    def private_config(self) -> dict:
        from closure.connectors.secrets import decrypt_config

        return decrypt_config(self.config_ciphertext)

    def set_private_config(self, config: dict) -> None:
        """Encrypt `config` into the row (the caller saves)."""
        from closure.connectors.secrets import config_fingerprint, encrypt_config

        self.config_ciphertext = encrypt_config(config)
        self.config_fingerprint = config_fingerprint(config)
        self.config_changed_at = timezone.now()
