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


def _key_ring() -> MultiFernet:
    keys = list(settings.CAVRA_CONNECTOR_KEYS)
    if not keys:
        derived = hashlib.sha256(f"cavra-connector-config:{settings.SECRET_KEY}".encode()).digest()
        keys = [base64.urlsafe_b64encode(derived).decode()]
    return MultiFernet([Fernet(key.encode()) for key in keys])


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
