"""API routes: the closure flow under its runtime path, and the /api/v1/ resource lists."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from closure.api import evidence_views, final_reporting, views

B = "runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
R = f"{B}/recovery-executive-report"
A = f"{R}/delivery-retry-health-alerts"

router = DefaultRouter(trailing_slash=True)
router.register("delivery-events", views.DeliveryEventViewSet)
router.register("health-reports", views.HealthReportViewSet)
router.register("connectors", views.ConnectorViewSet)
router.register("alerts", views.HealthAlertViewSet)
router.register("deliveries", views.AlertDeliveryViewSet)
router.register("acknowledgements", views.AcknowledgementViewSet)
router.register("retry-plans", views.RetryPlanViewSet)
router.register("worker-runs", views.WorkerRunViewSet)
router.register("execution-records", views.ExecutionRecordViewSet)
router.register("evidence", views.EvidenceViewSet)

urlpatterns = [
    path(f"{R}/delivery-events", views.DeliveryEventIngestView.as_view(), name="delivery-events"),
    path(f"{R}/delivery-retry-health", views.HealthView.as_view(), name="delivery-retry-health"),
    path(
        f"{R}/delivery-retry-health-alert-dashboard",
        views.AlertDashboardView.as_view(),
        name="alert-dashboard",
    ),
    path(A, views.AlertHistoryView.as_view({"get": "list"}), name="alert-history"),
    path(f"{A}/deliver", views.AlertDeliverView.as_view(), name="alert-deliver"),
    path(f"{A}/retry-plan", views.RetryPlanView.as_view(), name="retry-plan"),
    path(f"{A}/retry-worker-run", views.RetryWorkerRunView.as_view(), name="retry-worker-run"),
    path(
        f"{A}/deliveries/<str:delivery_id>/waive",
        views.DeliveryWaiveView.as_view(),
        name="delivery-waive",
    ),
    path(
        f"{A}/deliveries/<str:delivery_id>/retry",
        views.DeliveryRetryView.as_view(),
        name="delivery-retry",
    ),
    path(
        f"{A}/<str:health_id>/acknowledgements",
        views.AcknowledgementCreateView.as_view(),
        name="acknowledgements",
    ),
    path(
        f"{B}/final-reporting-closure-dashboard",
        views.ClosureDashboardView.as_view(),
        name="closure-dashboard",
    ),
    # Closure reviews, release readiness and the runbook export (closure/api/final_reporting.py).
    path(
        f"{B}/final-reporting-closure-reviews",
        final_reporting.ClosureReviewView.as_view(),
        name="closure-reviews",
    ),
    path(
        f"{B}/final-reporting-closure-reviews/<str:review_id>",
        final_reporting.ClosureReviewDetailView.as_view(),
        name="closure-review-detail",
    ),
    path(
        f"{B}/final-reporting-release-readiness",
        final_reporting.ReleaseReadinessView.as_view(),
        name="release-readiness",
    ),
    path(
        f"{B}/final-reporting-operator-runbook-export",
        final_reporting.RunbookExportView.as_view(),
        name="runbook-export",
    ),
    # A recorded export by its id; the suffixed routes first, as `<str:…>` would take them.
    path(
        f"{B}/final-reporting-operator-runbook-export/<str:runbook_id>.md",
        final_reporting.RunbookDocumentView.as_view(document="markdown"),
        name="runbook-markdown",
    ),
    path(
        f"{B}/final-reporting-operator-runbook-export/<str:runbook_id>.html",
        final_reporting.RunbookDocumentView.as_view(document="printable"),
        name="runbook-printable",
    ),
    path(
        f"{B}/final-reporting-operator-runbook-export/<str:runbook_id>",
        final_reporting.RunbookDocumentView.as_view(),
        name="runbook-detail",
    ),
    # The ledger's export, public key and checkpoints (closure/api/evidence_views.py); before
    # the router, whose evidence detail route would otherwise take these names as sequences.
    path(
        "api/v1/evidence/export/",
        evidence_views.EvidenceExportView.as_view(),
        name="evidence-export",
    ),
    path(
        "api/v1/evidence/public-key/",
        evidence_views.EvidencePublicKeyView.as_view(),
        name="evidence-public-key",
    ),
    path(
        "api/v1/evidence/checkpoints/",
        evidence_views.EvidenceCheckpointListView.as_view(),
        name="evidence-checkpoints",
    ),
    path("api/v1/", include(router.urls)),
]
