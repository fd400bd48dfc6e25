from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", login_not_required(RedirectView.as_view(url="/console/", permanent=False))),
    # Browsers ask for /favicon.ico on pages that name no icon (the admin's).
    path(
        "favicon.ico",
        login_not_required(RedirectView.as_view(url=static("closure/favicon.svg"))),
    ),
    path("console/", include("closure.console.urls")),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("", include("closure.api.urls")),
]
