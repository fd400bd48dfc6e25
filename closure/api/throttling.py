"""Throttling of writes: every write counts against one budget per user (anonymous: per address).

A write is any request that is not a read (not GET, HEAD or OPTIONS): API POSTs, console
forms, admin change forms, actions and recorded exports, signing in and out. Each takes one
unit of the same budget, `CAVRA_API_POST_RATE`, counted by `write_budget_take`, whichever way
it came: `PostRateThrottle` counts API writes once the bearer token or session is known, and
`closure.ops.throttle.WriteThrottleMiddleware` counts every other write before its view runs.

The counters live in Django's default cache, which settings point at a cache shared by every
app server (the database cache or Redis), so the limit holds for the whole deployment. Reads
are not throttled. A throttled API request gets a 429 problem with `Retry-After`.
"""

import time

from axes.helpers import get_client_ip_address
from django.conf import settings
from django.core.cache import cache
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import BaseThrottle

from closure.ops.lockout import address_fingerprint

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


class PostRateThrottle(BaseThrottle):
    """The API's entry to the write budget (DRF turns a refusal into a 429 problem)."""

    def allow_request(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        self.retry_after = write_budget_take(write_budget_key(request))
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after
