"""Console routes, under /console/ (kebab-case, like the API)."""

from django.urls import path

from closure.console import alerts, readiness, reporting, retries, tokens, views

app_name = "console"

urlpatterns = [
    path("login/", views.console_login, name="login"),
    path("logout/", views.console_logout, name="logout"),
    path("", views.flow, name="flow"),
    path("health/", views.health_list, name="health-list"),
    path("health/<str:health_id>/", views.health_detail, name="health-detail"),
    path("alerts/", alerts.alert_list, name="alert-list"),
    path("alerts/<str:alert_id>/", alerts.alert_detail, name="alert-detail"),
    path("deliveries/", alerts.delivery_list, name="delivery-list"),
    path("deliveries/<str:delivery_id>/", alerts.delivery_detail, name="delivery-detail"),
    path("deliveries/<str:delivery_id>/waive/", alerts.delivery_waive_view, name="delivery-waive"),
    path("deliveries/<str:delivery_id>/retry/", alerts.delivery_retry_view, name="delivery-retry"),
    path("acknowledgements/", alerts.acknowledgement_list, name="acknowledgement-list"),
    path("retry-plans/", retries.plan_list, name="plan-list"),
    path("retry-plans/<str:retry_plan_id>/", retries.plan_detail, name="plan-detail"),
    path("worker-runs/", retries.run_list, name="run-list"),
    path("worker-runs/<str:run_id>/", retries.run_detail, name="run-detail"),
    path("worker-runs/<str:run_id>/execute/", retries.run_execute, name="run-execute"),
    path("executions/", retries.execution_list, name="execution-list"),
    path("executions/<str:execution_id>/", retries.execution_detail, name="execution-detail"),
    path("closure/", reporting.closure_view, name="closure"),
    path("readiness/", readiness.readiness_view, name="readiness"),
    path("readiness/runbook/", readiness.runbook_export_view, name="runbook-export"),
    path("reviews/", reporting.review_list, name="review-list"),
    path("reviews/<str:review_id>/", reporting.review_detail, name="review-detail"),
    path("evidence/", reporting.evidence_list, name="evidence-list"),
    path("evidence/verify/", reporting.evidence_verify_view, name="evidence-verify"),
    path("evidence/<int:sequence>/", reporting.evidence_detail, name="evidence-detail"),
    path("api-tokens/", tokens.api_token_list, name="api-token-list"),
    path(
        "api-tokens/<int:token_pk>/revoke/",
        tokens.api_token_revoke_view,
        name="api-token-revoke",
    ),
]
