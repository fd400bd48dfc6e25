"""Structured logs: one JSON object per line, each carrying the id of its request.

The request id comes from a well-formed `X-Request-ID` header (a proxy's) or is made here; it
is echoed in the response header, in every log line of the request and in its access line.
Anything that looks like a credential is replaced by `[redacted]` before a line is written.
"""

import contextvars
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# Bearer values, API tokens, `key=value` credentials, passwords in URLs, webhook secrets.
_CREDENTIAL = re.compile(
    r"(?i)(bearer\s+\S+|cavra_[\w-]{8,}|whsec_\S+|xox[a-z]-[\w-]+"
    r"|(?:token|key|secret|password|passwd|signature|sig)=[^\s&]+|://[^/\s:@]+:[^/\s@]+@)"
)

access_logger = logging.getLogger("cavra.request")


def redact(text: str) -> str:
    return _CREDENTIAL.sub("[redacted]", text)


def current_request_id() -> str:
    return request_id_var.get()


class RequestIdMiddleware:
    """Gives every request an id, and writes one access line per request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _INCOMING_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            user = getattr(request, "user", None)
            access_logger.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "user_id": user.pk if user is not None and user.is_authenticated else None,
                },
            )
            return response
        finally:
            request_id_var.reset(token)


class RequestIdFilter(logging.Filter):
    """Gives records made before this module was loaded a request id too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


_make_record = logging.getLogRecordFactory()


def _record_with_request_id(*args, **kwargs) -> logging.LogRecord:
    # Taken when the record is made, in the request's context: a handler may format it later
    # (or in another thread), when the context is gone.
    record = _make_record(*args, **kwargs)
    record.request_id = request_id_var.get()
    return record


logging.setLogRecordFactory(_record_with_request_id)


# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as is.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


evidence_logger = logging.getLogger("cavra.evidence")


def log_evidence_appended(sender, instance, created, **kwargs):
    """One log line per evidence row, with the request id of the request that wrote it: the
    link from a request's log lines to its evidence (and back, by sequence)."""
    if created:
        evidence_logger.info(
            "evidence appended",
            extra={
                "sequence": instance.sequence,
                "metadata_kind": instance.metadata_kind,
                "session_id": instance.session_id,
                "signer": instance.signer,
            },
        )
