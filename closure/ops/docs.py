"""The API's documentation: the OpenAPI schema, Swagger UI and Redoc, from local static files.

The schema needs an authenticated API client (token or session; 401 problem otherwise); the
two pages are behind the console login like every other page. Their scripts come from this
origin only (the Swagger UI initialiser is a separate script, not inline), so the strict
Content-Security-Policy holds for scripts; only their styles and data: images are allowed,
which the bundled UIs need.
"""

from django.contrib.auth.decorators import login_not_required, login_required
from django.utils.csp import CSP
from django.utils.decorators import method_decorator
from django.views.decorators.csp import csp_override
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

DOCS_CSP = {
    "default-src": [CSP.NONE],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "worker-src": [CSP.SELF, "blob:"],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "object-src": [CSP.NONE],
}

schema_view = login_not_required(SpectacularAPIView.as_view())


@method_decorator(csp_override(DOCS_CSP), name="dispatch")
class SwaggerView(SpectacularSwaggerSplitView):
    pass


@method_decorator(csp_override(DOCS_CSP), name="dispatch")
class RedocView(SpectacularRedocView):
    template_name = "ops/redoc.html"


# DRF marks its views exempt from the login middleware; the pages send a browser to sign in.
swagger_view = login_required(SwaggerView.as_view(url_name="api-schema"))
redoc_view = login_required(RedocView.as_view(url_name="api-schema"))
