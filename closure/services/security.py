"""Evidence of login lockouts: django-axes locks a username out (for one address) after
repeated failures; each lockout is written to the evidence ledger once per cool-off period.

The address is recorded only as a keyed fingerprint (an HMAC under the secret key), like every
other private value in evidence: an auditor can tell two lockouts from the same address apart
from two from different ones, without the ledger holding the address.
"""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.ledger import evidence_append
from closure.models import Evidence

LOCKOUT_PREFIX = "gordackloginlockout-"
SIGNER = "cavra-login-guard"


def address_fingerprint(ip_address: str) -> str:
    digest = hmac.new(settings.SECRET_KEY.encode(), ip_address.encode(), hashlib.sha256)
    return digest.hexdigest()[:12]


def login_lockout_record(*, username: str, ip_address: str) -> Evidence | None:
    """Write the lockout's evidence row, unless this lockout was already recorded."""
    fingerprint = address_fingerprint(ip_address or "")
    since = timezone.now() - timedelta(hours=settings.AXES_COOLOFF_TIME)
    with transaction.atomic(durable=True):
        already = Evidence.objects.filter(
            metadata_kind=MetadataKind.LOGIN_LOCKOUT,
            created_at__gte=since,
            payload__subject__username=username,
            payload__subject__address_fingerprint=fingerprint,
        ).exists()
        if already:
            return None
        return evidence_append(
            kind=MetadataKind.LOGIN_LOCKOUT,
            session_id=LOCKOUT_PREFIX + secrets.token_hex(8),
            signer=SIGNER,
            subject={
                "username": username,
                "address_fingerprint": fingerprint,
                "failure_limit": settings.AXES_FAILURE_LIMIT,
                "cooloff_minutes": round(settings.AXES_COOLOFF_TIME * 60),
            },
            decision_count=1,
            blocked_count=1,
        )
