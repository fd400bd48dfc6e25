"""The evidence signing key from the environment, and the public keys a verifier trusts.

`CAVRA_EVIDENCE_SIGNING_KEY` holds base64 of a raw 32-byte Ed25519 private key. Without it a
development key is derived from SECRET_KEY (a system check warns when DEBUG is off). The
public half is published by `manage.py evidence_public_key` and `GET /api/v1/evidence/public-key/`.
"""

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from closure.evidence import chain
from closure.evidence.chain import SigningKeyError


def signing_key() -> Ed25519PrivateKey:
    """The configured private key, or the development key derived from SECRET_KEY."""
    configured = settings.CAVRA_EVIDENCE_SIGNING_KEY
    if configured:
        try:
            return chain.private_key_from_b64(configured)
        except SigningKeyError as exc:
            raise ImproperlyConfigured(f"CAVRA_EVIDENCE_SIGNING_KEY: {exc}") from exc
    seed = hashlib.sha256(b"cavra-evidence-signing-key:" + settings.SECRET_KEY.encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def signing_key_is_derived() -> bool:
    return not settings.CAVRA_EVIDENCE_SIGNING_KEY


def trusted_public_keys() -> dict[str, str]:
    """key_id → base64 public key: the signing key's own, plus the configured earlier ones."""
    keys = [chain.public_key_b64(signing_key())]
    for text in settings.CAVRA_EVIDENCE_TRUSTED_PUBLIC_KEYS:
        try:
            chain.public_key_from_b64(text)
        except SigningKeyError as exc:
            raise ImproperlyConfigured(f"CAVRA_EVIDENCE_TRUSTED_PUBLIC_KEYS: {exc}") from exc
        keys.append(base64.b64encode(base64.b64decode(text)).decode())
    return {chain.key_id(key): key for key in keys}


def public_key_info() -> dict:
    """What is published about the signing key: enough to verify offline."""
    public = chain.public_key_b64(signing_key())
    return {
        "algorithm": chain.SIGNATURE_ALGORITHM,
        "key_id": chain.key_id(public),
        "public_key": public,
        "derived_development_key": signing_key_is_derived(),
        "trusted_key_ids": sorted(trusted_public_keys()),
    }


def sign(message: bytes) -> dict:
    """Sign `message`; returns the signature block stored with checkpoints and manifests."""
    key = signing_key()
    public = chain.public_key_b64(key)
    return {
        "algorithm": chain.SIGNATURE_ALGORITHM,
        "key_id": chain.key_id(public),
        "public_key": public,
        "value": chain.sign(key, message),
    }
