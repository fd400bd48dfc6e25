"""Throttling of writes: every write counts against one budget per user (anonymous: per address).

A write is any request that is not a read (not GET, HEAD or OPTIONS): API POSTs, console
forms, admin change forms, actions and recorded exports, signing in and out. Each takes one
unit of the same budget, `CAVRA_API_POST_RATE`, counted by `closure.ops.throttle.write_budget_take`,
whichever way it came: `PostRateThrottle` counts API writes once the bearer token or session is
known, and `closure.ops.throttle.WriteThrottleMiddleware` counts every other write before its
view runs.

The counters live in Django's default cache, which settings point at a cache shared by every
app server (the database cache or Redis), so the limit holds for the whole deployment. Reads
are not throttled. A throttled API request gets a 429 problem with `Retry-After`.
"""

from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import BaseThrottle

from closure.ops.throttle import write_budget_key, write_budget_take


class PostRateThrottle(BaseThrottle):
    """The API's entry to the write budget (DRF turns a refusal into a 429 problem)."""

    def allow_request(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        self.retry_after = write_budget_take(write_budget_key(request))
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after
