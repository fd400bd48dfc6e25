"""Login lockouts from django-axes go to the evidence ledger (`login_lockout_record`)."""

import logging

from axes.signals import user_locked_out
from django.dispatch import receiver

from closure.services.security import login_lockout_record

logger = logging.getLogger("cavra.security")


@receiver(user_locked_out, dispatch_uid="cavra-login-lockout-evidence")
def on_user_locked_out(sender, request, username, ip_address, **kwargs):
    logger.warning("login locked out", extra={"username": username})
    login_lockout_record(username=username or "", ip_address=ip_address or "")
