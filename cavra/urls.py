from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from closure.ops import docs, health, metrics


@login_not_required
def favicon(request):
    # Resolved per request, not at import: with hashed static names the manifest exists only
    # after collectstatic, and management commands (migrate first) must work without it.
    return redirect(static("closure/favicon.svg"))


urlpatterns = [
    path("", login_not_required(RedirectView.as_view(url="/console/", permanent=False))),
    # Browsers ask for /favicon.ico on pages that name no icon (the admin's).
    path("favicon.ico", favicon),
    # Probes and the scrape (closure/ops/): no session, no login redirect.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    # The OpenAPI schema (committed as openapi.yaml) and its two renderings.
    path("api/schema/", docs.schema_view, name="api-schema"),
    path("api/docs/", docs.swagger_view, name="api-docs"),
    path("api/redoc/", docs.redoc_view, name="api-redoc"),
    path("console/", include("closure.console.urls")),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("", include("closure.api.urls")),
]

# API clients get problem+json, never an HTML page (closure/ops/errors.py).
handler400 = "closure.ops.errors.bad_request"
handler403 = "closure.ops.errors.permission_denied"
handler404 = "closure.ops.errors.page_not_found"
handler500 = "closure.ops.errors.server_error"
