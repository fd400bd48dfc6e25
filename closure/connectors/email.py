"""E-mail through Django's e-mail framework: a plain-text alert with an HTML alternative.

The mail server comes from the environment (`MAILERS["default"]`, see docs/configuration.md);
the connector holds its recipients, an optional sender, and optional SMTP credentials that
replace the environment's for this connector only. Delivered means the server accepted the
message for every recipient.
"""

import smtplib
import time

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMultiAlternatives, InvalidMailer
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.template.loader import render_to_string
from django.utils.module_loading import import_string

from closure.choices import ErrorClass
from closure.connectors.base import AlertMessage, SendOutcome, config_error, request_fingerprint
from closure.connectors.rendering import AlertView, alert_view
from closure.connectors.validation import ConfigCheck
from closure.evidence.canonical import canonical_json

MAILER_ALIAS = "default"
DEFAULT_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def render(view: AlertView, *, sender: str, recipients: list[str]) -> EmailMultiAlternatives:
    count = len(view.findings) + view.more_findings
    subject = (
        f"[CAVRA] {view.level_label}: executive delivery retry health "
        f"({count} finding{'' if count == 1 else 's'})"
    )
    message = EmailMultiAlternatives(
        subject=subject,
        body=view.plain_text(),
        from_email=sender,
        to=recipients,
        headers={"X-CAVRA-Delivery-Id": view.delivery_id},
    )
    message.attach_alternative(
        render_to_string("closure/connectors/email_alert.html", {"view": view}), "text/html"
    )
    return message


def mailer(config: dict, *, timeout_seconds: float):
    """The configured mail backend, with this connector's credentials and the attempt's timeout
    when it is SMTP (other backends, such as the tests' memory backend, take no options)."""
    entry = getattr(settings, "MAILERS", {}).get(MAILER_ALIAS, {})
    backend_class = import_string(entry.get("BACKEND", DEFAULT_BACKEND))
    options = dict(entry.get("OPTIONS", {}))
    if issubclass(backend_class, SMTPBackend):
        configured = options.get("timeout") or timeout_seconds
        options["timeout"] = min(float(configured), timeout_seconds)
        if config.get("smtp_username"):
            options["username"] = config["smtp_username"]
            options["password"] = config.get("smtp_password", "")
    return backend_class(alias=MAILER_ALIAS, **options)


def _timed_out(exc: BaseException) -> bool:
    """smtplib turns a socket timeout into SMTPServerDisconnected; the cause tells."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class EmailConnector:
    config_keys = ("recipients", "from_email", "smtp_username", "smtp_password")

    def clean_config(self, config: dict) -> dict:
        check = ConfigCheck(config, self.config_keys)
        check.emails("recipients", required=True)
        sender = check.emails("from_email", required=False, max_count=1)
        if sender:
            check.cleaned["from_email"] = sender[0]
        username = check.text("smtp_username", required=False, max_length=256)
        password = check.text("smtp_password", required=False, max_length=256)
        if password and not username:
            check.add("smtp_password", "Set the SMTP username too, or neither.")
        return check.result()

    def send(self, *, config: dict, message: AlertMessage, timeout_seconds: float) -> SendOutcome:
        recipients = config.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            return config_error("email connector has no recipients")
        sender = config.get("from_email") or settings.DEFAULT_FROM_EMAIL
        email = render(alert_view(message), sender=sender, recipients=recipients)
        fingerprint = request_fingerprint(
            message, canonical_json({"subject": email.subject, "body": email.body})
        )
        started = time.monotonic()

        def outcome(*, error_class: str = "", detail: str = "") -> SendOutcome:
            return SendOutcome(
                delivered=not error_class,
                error_class=error_class,
                error_detail=detail,
                latency_ms=int((time.monotonic() - started) * 1000),
                request_fingerprint=fingerprint,
            )

        # Exception messages quote the server's reply, which can name the account or the
        # recipients: only the exception's type is kept.
        try:
            backend = mailer(config, timeout_seconds=timeout_seconds)
        except (InvalidMailer, ImproperlyConfigured, ImportError) as exc:
            return outcome(error_class=ErrorClass.CONFIG_ERROR, detail=type(exc).__name__)
        try:
            sent = backend.send_messages([email])
        except (
            smtplib.SMTPAuthenticationError,
            smtplib.SMTPSenderRefused,
            smtplib.SMTPRecipientsRefused,
        ) as exc:
            return outcome(error_class=ErrorClass.CONFIG_ERROR, detail=type(exc).__name__)
        except (smtplib.SMTPException, OSError) as exc:
            if _timed_out(exc):
                return outcome(error_class=ErrorClass.TIMEOUT, detail="smtp timed out")
            return outcome(error_class=ErrorClass.CONNECTION_ERROR, detail=type(exc).__name__)
        if sent != 1:
            return outcome(error_class=ErrorClass.CONNECTION_ERROR, detail="message not sent")
        return outcome()
