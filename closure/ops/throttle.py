"""The write budget outside the API: console forms, admin change forms, actions and exports,
signing in and out.

API views count their writes themselves (`closure.api.throttling.PostRateThrottle`, after the
bearer token is authenticated), so this middleware leaves them alone: every write is counted
once, against the same budget. A refused write never reaches its view, so nothing is done.
"""

import math
from datetime import timedelta

from django.shortcuts import render
from django.utils import timezone
from rest_framework.permissions import SAFE_METHODS
from rest_framework.views import APIView

from closure.api.throttling import write_budget_key, write_budget_take, write_rate
from closure.ops.errors import is_api_request, problem_json

_WINDOW_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def _is_api_view(view_func) -> bool:
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
