"""RFC 9457 problem details: the body every error answer shares, from a DRF view or not."""

from django.conf import settings
from django.http import JsonResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://cavra.invalid/problems/"


def problem_body(*, status: int, code: str, title: str, detail: str) -> dict:
    """The members every problem has; the type is the code as a URL path segment."""
    return {
        "type": PROBLEM_TYPE_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }


def problem_json(*, status: int, code: str, title: str, detail: str, headers=None):
    """A problem answered outside DRF (middleware, error handlers, probes)."""
    body = problem_body(status=status, code=code, title=title, detail=detail)
    response = JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def database_unavailable_problem() -> dict:
    """A database outage: nothing was committed, so the client may retry after the pause."""
    return {
        "status": 503,
        "code": "database_unavailable",
        "title": "Service unavailable",
        "detail": "The database is unavailable. Nothing was changed; retry later.",
        "headers": {"Retry-After": str(settings.CAVRA_DB_UNAVAILABLE_RETRY_AFTER)},
    }
