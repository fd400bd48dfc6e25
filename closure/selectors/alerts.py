"""The alert dashboard's counts."""

from django.db.models import Count

from closure import models
from closure.choices import DeliveryStatus
from closure.selectors.dashboard import unacknowledged_deliveries


def _counts_by(queryset, field: str, choices) -> dict:
    counts = dict.fromkeys(choices.values, 0)
    for row in queryset.order_by().values(field).annotate(n=Count("pk")):
        counts[row[field]] = row["n"]
    return counts


def alert_dashboard() -> dict:
    """Counts for the alert dashboard: alerts, deliveries by status, acknowledgements."""
    return {
        "alerts": models.HealthAlert.objects.count(),
        "deliveries": _counts_by(models.AlertDelivery.objects, "status", DeliveryStatus),
        "acknowledgements": models.Acknowledgement.objects.count(),
        "outstanding_acknowledgements": unacknowledged_deliveries().count(),
    }
