from rest_framework.pagination import PageNumberPagination


class StablePageNumberPagination(PageNumberPagination):
    """`{count, next, previous, results}`; every list view has a deterministic ordering."""

    page_size_query_param = "page_size"
    max_page_size = 500
