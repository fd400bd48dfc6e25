"""RFC 9457 problem details for every API error."""

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from closure.api.filtering import UnknownQueryParameter
from closure.api.parsers import DuplicateKey, InvalidUnicode, TooDeeplyNested
from closure.ops.problems import PROBLEM_CONTENT_TYPE, database_unavailable_problem, problem_body
from closure.services.errors import ServiceError

# Subclasses before their base: the first class that matches gives the code.
_CODES = {
    TooDeeplyNested: ("too_deeply_nested", "Request body nested too deeply"),
    InvalidUnicode: ("invalid_unicode", "Request body is not valid Unicode"),
    DuplicateKey: ("duplicate_key", "Request body repeats a key"),
    exceptions.ParseError: ("malformed_request", "Malformed request body"),
    UnknownQueryParameter: ("unknown_query_parameter", "Unknown query parameter"),
    exceptions.ValidationError: ("validation_error", "Invalid input"),
    exceptions.NotAuthenticated: ("not_authenticated", "Authentication required"),
    exceptions.AuthenticationFailed: ("authentication_failed", "Authentication failed"),
    exceptions.PermissionDenied: ("permission_denied", "Permission denied"),
    exceptions.NotFound: ("not_found", "Not found"),
    exceptions.MethodNotAllowed: ("method_not_allowed", "Method not allowed"),
    exceptions.NotAcceptable: ("not_acceptable", "Not acceptable"),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", "Unsupported media type"),
    exceptions.Throttled: ("throttled", "Too many requests"),
}


def flatten_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error detail into {"dotted.path": [messages]}."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key in ("non_field_errors",) else str(key)
            path = f"{prefix}.{name}" if prefix and name else (name or prefix)
            for sub_path, messages in flatten_errors(value, path).items():
                flat.setdefault(sub_path, []).extend(messages)
    elif isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            flat.setdefault(prefix or "body", []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                if item:
                    path = f"{prefix}.{index}" if prefix else str(index)
                    for sub_path, messages in flatten_errors(item, path).items():
                        flat.setdefault(sub_path, []).extend(messages)
    else:
        flat.setdefault(prefix or "body", []).append(str(detail))
    return flat


def _without_nul(text: str) -> str:
    # A message may echo the client's input ('"\x00" is not a valid choice.'). PostgreSQL
    # cannot store a NUL (the response kept for an Idempotency-Key replay), and a log or a
    # terminal would hide it: it is written out as the six characters \u0000.
    return text.replace("\x00", "\\u0000")


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: dict | None = None,
    headers: dict | None = None,
) -> Response:
    body = problem_body(status=status, code=code, title=title, detail=_without_nul(detail))
    if errors:
        body["errors"] = {
            _without_nul(path): [_without_nul(str(message)) for message in messages]
            for path, messages in errors.items()
        }
    return Response(body, status=status, content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def problem_exception_handler(exc, context):
    if isinstance(exc, OperationalError | InterfaceError):
        # The database went away (or refused us): nothing was committed, the client may retry.
        return problem_response(**database_unavailable_problem())
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return problem_response(
            status=413,
            code="request_too_large",
            title="Request body too large",
            detail=f"The request body is larger than {limit} bytes, the most this server reads.",
        )
    if isinstance(exc, ServiceError):
        return problem_response(
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            errors=exc.errors,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    code, title = next(
        (value for klass, value in _CODES.items() if isinstance(exc, klass)),
        ("error", "Error"),
    )
    errors = None
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        detail = "; ".join(f"{path}: {msgs[0]}" for path, msgs in errors.items())
    else:
        detail = str(exc.detail) if hasattr(exc, "detail") else str(exc)
    headers = {
        k: v
        for k, v in response.headers.items()
        if k in ("WWW-Authenticate", "Retry-After", "Allow")
    }
    return problem_response(
        status=response.status_code,
        code=code,
        title=title,
        detail=detail,
        errors=errors,
        headers=headers,
    )
