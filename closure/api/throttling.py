"""Throttling of writes: every POST counts against its user (or, anonymous, its address).

The counters live in Django's default cache, which settings point at a cache shared by every
app server (the database cache or Redis), so the limit holds for the whole deployment. Reads
are not throttled. A throttled request gets a 429 problem with `Retry-After`.
"""

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class PostRateThrottle(SimpleRateThrottle):
    scope = "post"

    def get_rate(self):
        return settings.CAVRA_API_POST_RATE

    def allow_request(self, request, view):
        if request.method != "POST":
            return True
        # The rate is read per request, so a changed setting applies without a restart of
        # the class (and tests can lower it).
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"addr-{self.get_ident(request)}"
        return f"throttle_{self.scope}_{ident}"
