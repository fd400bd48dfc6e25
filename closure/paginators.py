"""Paginators shared by the admin changelists and the console's list pages."""

from functools import cached_property

from django.core.paginator import Paginator


class BoundedCountPaginator(Paginator):
    """Counts at most `count_limit` rows (`SELECT COUNT(*) FROM (… LIMIT n+1)`), never a whole
    million-row table; beyond it a page says "more than n" and filters narrow the list down."""

    count_limit = 10_000
    capped = False

    @cached_property
    def count(self) -> int:
        counted = self.object_list.order_by()[: self.count_limit + 1].count()
        self.capped = counted > self.count_limit
        return min(counted, self.count_limit)
