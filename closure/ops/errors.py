"""Problem+json for errors that happen outside a DRF view, and for an unavailable database.

API clients (paths under /api/ and /runtime/, the probes, or an `Accept` that asks for JSON)
never get an HTML error page or a traceback: unknown paths are a 404 problem, crashes a 500
problem, and a database that cannot be reached a 503 problem with `Retry-After`. Browsers
keep Django's pages.
"""

import logging

from django.db import DatabaseError, InterfaceError, OperationalError
from django.views import defaults

from closure.ops.problems import database_unavailable_problem, problem_json

logger = logging.getLogger("cavra.errors")

API_PREFIXES = ("/api/", "/runtime/", "/healthz", "/readyz", "/metrics")


def is_api_request(request) -> bool:
    if request.path.startswith(API_PREFIXES):
        return True
    accept = request.headers.get("Accept", "")
    return "json" in accept and "text/html" not in accept


def is_database_unavailable(exc: BaseException) -> bool:
    """A lost or refused connection, or a cancelled statement: not a bug in the request."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DatabaseError) and "connection" in str(exc).lower()
    )


class DatabaseUnavailableMiddleware:
    """Turns a database outage during a view into a 503 problem (API) and logs it once."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc):
        if not is_database_unavailable(exc):
            return None
        logger.warning("database unavailable: %s", type(exc).__name__)
        if is_api_request(request):
            return problem_json(**database_unavailable_problem())
        return None


def page_not_found(request, exception=None):
    if is_api_request(request):
        return problem_json(
            status=404, code="not_found", title="Not found", detail="No such resource."
        )
    return defaults.page_not_found(request, exception)


def server_error(request):
    if is_api_request(request):
        return problem_json(
            status=500,
            code="server_error",
            title="Internal server error",
            detail="The server failed to answer; the error was logged with the request id.",
        )
    return defaults.server_error(request)


def permission_denied(request, exception=None):
    if is_api_request(request):
        return problem_json(
            status=403, code="permission_denied", title="Permission denied", detail="Forbidden."
        )
    return defaults.permission_denied(request, exception)


def bad_request(request, exception=None):
    if is_api_request(request):
        return problem_json(
            status=400, code="bad_request", title="Bad request", detail="Bad request."
        )
    return defaults.bad_request(request, exception)
