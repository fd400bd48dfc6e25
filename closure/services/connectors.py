"""Connector configuration: saves, bootstrap from a file and re-encryption after a key rotation.

Every change is recorded as evidence that names the configuration keys that changed, with
their keyed fingerprints, and never their values.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from closure.choices import ConnectorKind, MetadataKind
from closure.connectors import ConnectorConfigInvalid, config_clean
from closure.evidence.canonical import isoformat
from closure.evidence.ledger import EvidenceFilters, evidence_append
from closure.keyring import (
    ConnectorConfigError,
    key_id,
    reencrypt,
)
from closure.models import Connector
from closure.services.common import signer_of
from closure.services.errors import Conflict, InvalidInput

# Bootstrap entries: these fields and nothing else (a typo must not be silently ignored).
SPEC_FIELDS = {"name", "kind", "enabled", "description", "accepted_counts_as_delivered", "config"}
MAX_BOOTSTRAP_CONNECTORS = 200
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}")


def connector_public(connector: Connector) -> dict:
    """What may be shown of a connector anywhere: no configuration value, only its shape."""
    return {
        "name": connector.name,
        "kind": connector.kind,
        "enabled": connector.enabled,
        "description": connector.description,
        "accepted_counts_as_delivered": connector.accepted_counts_as_delivered,
        "config_set": bool(connector.config_ciphertext),
        "config_fingerprint": connector.config_fingerprint,
        "config_changed_at": isoformat(connector.config_changed_at),
        "config_fields": connector.config_fields,
    }


def _config_errors(exc: ConnectorConfigInvalid, prefix: str = "config") -> dict:
    return {f"{prefix}.{key}": messages for key, messages in exc.errors.items()}


def connector_validate(
    *,
    kind: str,
    accepted_counts_as_delivered: bool,
    private_config: dict | None,
    errors_prefix: str = "config",
) -> dict | None:
    """Check a connector's kind and configuration; return the cleaned configuration.

    Raises InvalidInput whose `errors` name fields and rules, never configured values.
    """
    if kind not in ConnectorKind.values:
        raise InvalidInput(f"unknown connector kind {kind!r}", errors={"kind": ["Unknown kind."]})
    if accepted_counts_as_delivered and kind != ConnectorKind.TEAMS:
        raise InvalidInput(
            "only Teams connectors record accepted deliveries",
            errors={"accepted_counts_as_delivered": ["Only Teams connectors answer accepted."]},
        )
    if private_config is None:
        return None
    try:
        return config_clean(kind, private_config)
    except ConnectorConfigInvalid as exc:
        raise InvalidInput(
            f"the {kind} configuration is not valid: {exc}",
            errors=_config_errors(exc, errors_prefix),
        ) from None


def _changed_keys(before: dict, after: dict) -> list[str]:
    keys = set(before) | set(after)
    return sorted(
        k
        for k in keys
        if (before.get(k) or {}).get("fingerprint") != (after.get(k) or {}).get("fingerprint")
    )


def connector_save(
    *,
    actor,
    name: str,
    kind: str,
    enabled: bool = True,
    description: str = "",
    accepted_counts_as_delivered: bool = False,
    private_config: dict | None = None,
) -> Connector:
    """Create or update a connector, with its evidence row.

    `private_config=None` keeps the stored configuration (which must then still suit `kind`).
    Saving what is already stored changes nothing and writes no evidence.
    """
    cleaned = connector_validate(
        kind=kind,
        accepted_counts_as_delivered=accepted_counts_as_delivered,
        private_config=private_config,
    )
    with transaction.atomic(durable=True):
        connector = Connector.objects.select_for_update().filter(name=name).first()
        created = connector is None
        if created:
            connector = Connector(name=name)
        elif cleaned is None and kind != connector.kind and connector.config_ciphertext:
            try:
                stored = connector.private_config
            except ConnectorConfigError:
                raise Conflict(
                    f"the stored configuration of {name} cannot be decrypted; set it anew",
                    code="connector_config_unreadable",
                ) from None
            connector_validate(kind=kind, accepted_counts_as_delivered=False, private_config=stored)
        before = None if created else connector_public(connector)
        connector.kind = kind
        connector.enabled = enabled
        connector.description = description
        connector.accepted_counts_as_delivered = accepted_counts_as_delivered
        if cleaned is not None:
            try:
                unchanged_config = not created and connector.private_config == cleaned
            except ConnectorConfigError:
                unchanged_config = False
            if not unchanged_config:
                connector.set_private_config(cleaned)
        after = connector_public(connector)
        if after == before:
            return connector
        connector.full_clean()
        connector.save()
        changed_keys = _changed_keys(
            before["config_fields"] if before else {}, after["config_fields"]
        )
        _connector_change_evidence(
            actor=actor,
            connector=connector,
            change="created" if created else "updated",
            before=before,
            after=after,
            changed_keys=changed_keys,
        )
    return connector


def _connector_change_evidence(*, actor, connector, change, before, after, changed_keys, **extra):
    """The evidence row of one change to a connector: the keys that changed, not their values."""
    evidence_append(
        kind=MetadataKind.CONNECTOR_CHANGE,
        session_id=connector.name,
        signer=signer_of(actor),
        subject={
            "change": change,
            "before": before,
            "after": after,
            "secrets_changed": bool(changed_keys),
            "changed_config_keys": changed_keys,
            **extra,
        },
        filters=EvidenceFilters(provider=connector.name),
        decision_count=1,
    )


# -- bootstrap from a JSON file ---------------------------------------------------------------


@dataclass(frozen=True)
class ConnectorSpec:
    name: str
    kind: str
    enabled: bool = True
    description: str = ""
    accepted_counts_as_delivered: bool = False
    config: dict = field(default_factory=dict)


def connectors_file_parse(text: str) -> list[ConnectorSpec]:
    """Read and fully validate a bootstrap file before anything is written.

    Errors are keyed by dotted path (`connectors.2.config.url`) and never quote a value.
    """
    try:
        document = json.loads(text)
    except ValueError:
        raise InvalidInput(
            "the connectors file is not valid JSON", errors={"file": ["Not valid JSON."]}
        ) from None
    entries = document.get("connectors") if isinstance(document, dict) else None
    if not isinstance(entries, list) or set(document) != {"connectors"}:
        raise InvalidInput(
            "the connectors file must be an object with one key, connectors (a list)",
            errors={"connectors": ['Expected {"connectors": [...]}.']},
        )
    if len(entries) > MAX_BOOTSTRAP_CONNECTORS:
        raise InvalidInput(
            "too many connectors", errors={"connectors": [f"At most {MAX_BOOTSTRAP_CONNECTORS}."]}
        )
    errors: dict[str, list[str]] = {}
    specs: list[ConnectorSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        path = f"connectors.{index}"
        if not isinstance(entry, dict):
            errors[path] = ["Must be an object."]
            continue
        for key in sorted(set(entry) - SPEC_FIELDS):
            errors[f"{path}.{key}"] = ["Unknown field."]
        name, kind = entry.get("name"), entry.get("kind")
        if not isinstance(name, str) or not SLUG.fullmatch(name):
            errors[f"{path}.name"] = ["Must be a slug (letters, digits, - and _), 64 at most."]
        if isinstance(name, str) and name in seen:
            errors[f"{path}.name"] = ["Listed twice."]
        seen.add(name if isinstance(name, str) else "")
        typed = {
            "enabled": (bool, True),
            "description": (str, ""),
            "accepted_counts_as_delivered": (bool, False),
            "config": (dict, {}),
        }
        values = {}
        for key, (expected, default) in typed.items():
            value = entry.get(key, default)
            if not isinstance(value, expected):
                errors[f"{path}.{key}"] = [f"Must be a {expected.__name__}."]
            values[key] = value
        if f"{path}.config" in errors or not isinstance(kind, str):
            if not isinstance(kind, str):
                errors[f"{path}.kind"] = ["Must be one of: " + ", ".join(ConnectorKind.values)]
            continue
        try:
            cleaned = connector_validate(
                kind=kind,
                accepted_counts_as_delivered=values["accepted_counts_as_delivered"] is True,
                private_config=values["config"],
                errors_prefix=f"{path}.config",
            )
        except InvalidInput as exc:
            errors.update({k if "." in k else f"{path}.{k}": v for k, v in exc.errors.items()})
            continue
        specs.append(
            ConnectorSpec(
                name=name,
                kind=kind,
                enabled=values["enabled"],
                description=values["description"],
                accepted_counts_as_delivered=values["accepted_counts_as_delivered"],
                config=cleaned or {},
            )
        )
    if errors:
        first = next(iter(errors))
        raise InvalidInput(f"the connectors file is not valid: {first}", errors=errors)
    return specs


def connectors_bootstrap(*, actor, path: str) -> list[tuple[str, str]]:
    """Create or update every connector the file lists, so each matches it exactly.

    Connectors not in the file are left alone. Returns (name, created|updated|unchanged).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(
            "the connectors file cannot be read",
            errors={"file": [f"Cannot read the file ({type(exc).__name__})."]},
        ) from None
    specs = connectors_file_parse(text)
    existing = set(
        Connector.objects.filter(name__in=[s.name for s in specs]).values_list("name", flat=True)
    )
    results = []
    for spec in specs:
        before = Connector.objects.filter(name=spec.name).first()
        before_public = connector_public(before) if before else None
        saved = connector_save(
            actor=actor,
            name=spec.name,
            kind=spec.kind,
            enabled=spec.enabled,
            description=spec.description,
            accepted_counts_as_delivered=spec.accepted_counts_as_delivered,
            private_config=spec.config,
        )
        if spec.name not in existing:
            results.append((spec.name, "created"))
        elif connector_public(saved) == before_public:
            results.append((spec.name, "unchanged"))
        else:
            results.append((spec.name, "updated"))
    return results


# -- re-encryption after a key rotation -------------------------------------------------------


def connectors_reencrypt(*, actor) -> list[str]:
    """Re-encrypt every connector's configuration with the newest key, in one transaction.

    After it, the older keys in CAVRA_CONNECTOR_KEYS can be removed. If any configuration
    cannot be decrypted with the current key ring, nothing is changed. Each re-encrypted
    connector gets an evidence row naming the new key's public ID.
    """
    with transaction.atomic(durable=True):
        connectors = list(
            Connector.objects.select_for_update().exclude(config_ciphertext="").order_by("pk")
        )
        rotated: dict[int, str] = {}
        unreadable: list[str] = []
        for connector in connectors:
            try:
                rotated[connector.pk] = reencrypt(connector.config_ciphertext)
            except ConnectorConfigError:
                unreadable.append(connector.name)
        if unreadable:
            raise Conflict(
                "these connectors cannot be decrypted with CAVRA_CONNECTOR_KEYS: "
                + ", ".join(unreadable)
                + "; put the old key back (after the new one) and run again",
                code="connector_config_unreadable",
            )
        newest = key_id()
        for connector in connectors:
            Connector.objects.filter(pk=connector.pk).update(
                config_ciphertext=rotated[connector.pk]
            )
            public = connector_public(connector)
            _connector_change_evidence(
                actor=actor,
                connector=connector,
                change="reencrypted",
                before=public,
                after=public,
                changed_keys=[],
                key_id=newest,
            )
    return [c.name for c in connectors]
