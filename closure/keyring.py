"""Encryption at rest of connectors' private configuration, with a key ring.

`CAVRA_CONNECTOR_KEYS` holds Fernet keys, newest first: the newest encrypts, all decrypt, so a
key can be rotated by prepending a new one and re-encrypting. Without it, one key is derived from
SECRET_KEY (development only; a system check warns when DEBUG is off).
"""

import base64
import hashlib
import hmac
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class ConnectorConfigError(Exception):
    """The private configuration cannot be decrypted or is malformed."""


def _keys() -> list[str]:
    keys = list(settings.CAVRA_CONNECTOR_KEYS)
    if not keys:
        derived = hashlib.sha256(f"cavra-connector-config:{settings.SECRET_KEY}".encode()).digest()
        keys = [base64.urlsafe_b64encode(derived).decode()]
    return keys


def _key_ring() -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in _keys()])


def canonical_config(config: dict) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def encrypt_config(config: dict) -> str:
    if not config:
        return ""
    return _key_ring().encrypt(canonical_config(config)).decode()


def decrypt_config(ciphertext: str) -> dict:
    if not ciphertext:
        return {}
    try:
        return json.loads(_key_ring().decrypt(ciphertext.encode()))
    except InvalidToken as exc:
        raise ConnectorConfigError("connector configuration cannot be decrypted") from exc


def config_fingerprint(config: dict) -> str:
    """A short keyed fingerprint: equal configs match, and nothing about the values leaks."""
    if not config:
        return ""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), canonical_config(config), hashlib.sha256
    ).hexdigest()
    return digest[:12]


def field_fingerprint(key: str, value) -> str:
    """The keyed fingerprint of one configuration value: shows which value is set and when it
    changed, reveals nothing about it."""
    return config_fingerprint({key: value})


def config_field_status(config: dict, *, previous: dict, changed_at: str) -> dict:
    """Per key: `{"fingerprint", "changed_at"}`; a key keeps its time while its value is equal."""
    status = {}
    for key in sorted(config):
        fingerprint = field_fingerprint(key, config[key])
        before = previous.get(key) or {}
        unchanged = before.get("fingerprint") == fingerprint
        status[key] = {
            "fingerprint": fingerprint,
            "changed_at": before.get("changed_at") if unchanged else changed_at,
        }
    return status


def reencrypt(ciphertext: str) -> str:
    """The same configuration encrypted with the newest key (original timestamp kept)."""
    if not ciphertext:
        return ""
    try:
        return _key_ring().rotate(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise ConnectorConfigError("connector configuration cannot be decrypted") from exc


def newest_key_decrypts(ciphertext: str) -> bool:
    """True when the newest key alone decrypts this configuration (older keys can go)."""
    if not ciphertext:
        return True
    newest = Fernet(_keys()[0].encode())
    try:
        newest.decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


def key_id() -> str:
    """A public name for the newest key: a hash prefix, so an auditor can tell keys apart."""
    return hashlib.sha256(f"cavra-connector-key-id:{_keys()[0]}".encode()).hexdigest()[:12]
