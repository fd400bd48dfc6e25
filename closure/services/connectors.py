"""Connector configuration changes, each recorded as evidence without secret values."""

from django.db import transaction

from closure.choices import ConnectorKind, MetadataKind
from closure.evidence import EvidenceFilters, evidence_append, isoformat
from closure.models import Connector
from closure.services.common import signer_of
from closure.services.errors import InvalidInput


def connector_public(connector: Connector) -> dict:
    return {
        "name": connector.name,
        "kind": connector.kind,
        "enabled": connector.enabled,
        "description": connector.description,
        "config_set": bool(connector.config_ciphertext),
        "config_fingerprint": connector.config_fingerprint,
        "config_changed_at": isoformat(connector.config_changed_at),
    }


def connector_save(
    *,
    actor,
    name: str,
    kind: str,
    enabled: bool = True,
    description: str = "",
    private_config: dict | None = None,
) -> Connector:
    """Create or update a connector. `private_config=None` keeps the stored secrets."""
    if kind not in ConnectorKind.values:
        raise InvalidInput(f"unknown connector kind {kind!r}", errors={"kind": ["Unknown kind."]})
    with transaction.atomic(durable=True):
        connector = Connector.objects.select_for_update().filter(name=name).first()
        created = connector is None
        if created:
            connector = Connector(name=name)
        before = None if created else connector_public(connector)
        connector.kind = kind
        connector.enabled = enabled
        connector.description = description
        if private_config is not None:
            connector.set_private_config(private_config)
        connector.full_clean()
        connector.save()
        evidence_append(
            kind=MetadataKind.CONNECTOR_CHANGE,
            session_id=connector.name,
            signer=signer_of(actor),
            subject={
                "change": "created" if created else "updated",
                "before": before,
                "after": connector_public(connector),
                "secrets_changed": private_config is not None,
            },
            filters=EvidenceFilters(provider=connector.name),
            decision_count=1,
        )
    return connector
