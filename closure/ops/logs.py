"""Structured logs: one JSON object per line, each carrying the id of its request.

The request id comes from a well-formed `X-Request-ID` header (a proxy's) or is made here; it
is echoed in the response header, in every log line of the request and in its access line.
It stays set until the response is closed, so the lines Django writes after the middleware has
returned (`django.request` for a returned 4xx/5xx, `django.server`) carry it too.

Anything that looks like a credential is replaced by `[redacted]` by the formatters, in every
field of every line: the message, each extra field (the `request` Django attaches is written as
its redacted repr, query string included), the traceback and the stack.
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
# Bearer values, API tokens, webhook and Slack secrets, passwords in URLs. Values stop at quotes
# and angle brackets, so a redacted request repr (`<WSGIRequest: GET '/x?token=…'>`) keeps its
# shape.
_CREDENTIAL = re.compile(
    r"(?i)bearer\s+[^\s'\"<>]+|cavra_[\w-]{8,}|whsec_[^\s'\"<>&]+|xox[a-z]-[\w-]+"
    r"|://[^/\s:@'\"]+:[^/\s@'\"]+@"
)
# `name=value` (query strings, form bodies, cookies, free text) and `"name": "value"` (dicts and
# JSON in messages). The name is judged apart (`_is_secret_name`): one pattern that looked for
# the secret words inside the name would backtrack quadratically on a long word.
_NAMED_VALUE = re.compile(r"(?<![\w.-])([\w.-]+)=[^\s&'\"<>;,]+")
_QUOTED_PAIR = re.compile(r"""(["'])([\w.-]+)\1(\s*:\s*)(["'])[^"'\n]*\4""")
# Found anywhere in a name: access_token, client_secret, new_password, X-Amz-Signature, ...
_SECRET_WORDS = re.compile(r"token|secret|passw|pwd|signature|credential|auth|apikey|sessionid")
# Only as a whole part of a name (`api_key`, `x-api-key`, `sig`), so `monkey` and `design`
# stay readable; `code` (an OAuth code) only as the whole name, so `status_code` does too.
_SECRET_PARTS = frozenset({"key", "sig", "otp", "jwt", "pass"})

access_logger = logging.getLogger("cavra.request")


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    if lowered == "code" or _SECRET_WORDS.search(lowered):
        return True
    return not _SECRET_PARTS.isdisjoint(re.split(r"[^a-z0-9]+", lowered))


def _redact_named_value(match: re.Match) -> str:
    return "[redacted]" if _is_secret_name(match.group(1)) else match.group(0)


def _redact_quoted_pair(match: re.Match) -> str:
    quote, name, colon, value_quote = match.groups()
    if not _is_secret_name(name):
        return match.group(0)
    return f"{quote}{name}{quote}{colon}{value_quote}[redacted]{value_quote}"


def redact(text: str) -> str:
    """`text` with every credential it shows replaced by `[redacted]`."""
    text = _CREDENTIAL.sub("[redacted]", text)
    text = _QUOTED_PAIR.sub(_redact_quoted_pair, text)
    return _NAMED_VALUE.sub(_redact_named_value, text)


def redacted_value(value):
    """A log field as JSON can hold it, with every string in it redacted and every value under
    a secret name (`{"access_token": …}`) replaced; any other object (the `request` Django
    attaches to its lines, an exception) is written as its redacted text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            redact(str(key)): "[redacted]" if _is_secret_name(str(key)) else redacted_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redacted_value(item) for item in value]
    return redact(str(value))


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
        # Not reset on the way out: Django logs a returned error response, and the development
        # server its request line, after the middleware chain. `forget_request_id` resets it
        # when the response is closed.
        request_id_var.set(request_id)
        started = time.perf_counter()
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


def forget_request_id(**kwargs) -> None:
    """`request_finished` receiver: lines after the response belong to no request."""
    request_id_var.set("-")


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
    """One JSON object per line; every field is redacted (`redacted_value`)."""

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
                line[key] = redacted_value(value)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line)


class PlainFormatter(logging.Formatter):
    """Readable lines for a terminal; the whole line (message, traceback, stack) is redacted.
    Extra fields are not shown, so the request repr never reaches a plain line."""

    def __init__(
        self, fmt: str = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
    ) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


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
