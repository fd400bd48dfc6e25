"""The write budget outside the API: console forms, admin change forms, actions and exports,
signing in and out.

API views count their writes themselves (`closure.api.throttling.PostRateThrottle`, after the
bearer token is authenticated), so this middleware leaves them alone: every write is counted
once, against the same budget. A refused write never reaches its view, so nothing is done.
"""

import math
import time
from datetime import timedelta

from axes.helpers import get_client_ip_address
from django.conf import settings
from django.core.cache import cache
from django.shortcuts import render
from django.utils import timezone
from rest_framework.permissions import SAFE_METHODS

from closure.ops.errors import is_api_request
from closure.ops.problems import problem_json
from closure.services.security import address_fingerprint

_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def write_rate() -> tuple[int, int]:
    """`CAVRA_API_POST_RATE` as (writes, seconds), read per request so a changed setting
    applies at once (and tests can lower it)."""
    count, period = settings.CAVRA_API_POST_RATE.split("/")
    return int(count), _PERIOD_SECONDS[period[0]]


def write_budget_key(request) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"throttle_post_user-{user.pk}"
    # The same address django-axes uses, kept only as its keyed fingerprint: an address is
    # personal data.
    return f"throttle_post_addr-{address_fingerprint(get_client_ip_address(request) or '')}"


def write_budget_take(key: str) -> float | None:
    """Count one write against the budget `key`, in a sliding window.

    Returns None when the budget allows it, otherwise the seconds until the oldest counted
    write leaves the window; a refused write is not counted, so retrying early costs nothing.
    """
    limit, window = write_rate()
    now = time.time()
    history = [moment for moment in cache.get(key, []) if moment > now - window]  # newest first
    if len(history) >= limit:
        return window - (now - history[-1])
    cache.set(key, [now, *history], window)
    return None


_WINDOW_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def _is_api_view(view_func) -> bool:
    # Imported here: loading APIView loads the API's throttle class, which imports this module.
    from rest_framework.views import APIView

    view_class = getattr(view_func, "cls", None)
    return isinstance(view_class, type) and issubclass(view_class, APIView)


def throttled_response(request, wait: float):
    """A 429 that says when to try again: problem+json for API clients, a page for people."""
    seconds = max(1, math.ceil(wait))
    if is_api_request(request):
        response = problem_json(
            status=429,
            code="throttled",
            title="Too many requests",
            detail=f"Request was throttled. Expected available in {seconds} seconds.",
        )
    else:
        limit, window = write_rate()
        response = render(
            request,
            "429.html",
            {
                "seconds": seconds,
                "retry_at": timezone.now() + timedelta(seconds=seconds),
                "limit": limit,
                "window": _WINDOW_NAMES[window],
            },
            status=429,
        )
    response["Retry-After"] = str(seconds)
    return response


class WriteThrottleMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.method in SAFE_METHODS or _is_api_view(view_func):
            return None
        wait = write_budget_take(write_budget_key(request))
        return None if wait is None else throttled_response(request, wait)
