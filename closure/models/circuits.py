"""Per-connector circuit breakers, shared by every worker through the database."""

from django.db import models
from django.db.models import Q

from closure.choices import CircuitState
from closure.models.base import choices_constraint


class ConnectorCircuit(models.Model):
    """A connector's circuit: after repeated failures no calls for a cool-down, then one probe.

    Runtime state, kept apart from the connector's configuration; every transition is evidence.
    """

    connector = models.OneToOneField(
        "closure.Connector", on_delete=models.CASCADE, related_name="circuit"
    )
    state = models.CharField(
        max_length=16, choices=CircuitState.choices, default=CircuitState.CLOSED
    )
    consecutive_failures = models.PositiveIntegerField(default=0)
    open_until = models.DateTimeField(null=True, blank=True)
    # A half-open circuit lets exactly one probe through; this marks it as taken.
    probe_in_flight = models.BooleanField(default=False)
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["connector_id"]
        constraints = [
            choices_constraint("state", CircuitState, "circuit_state_valid"),
            models.CheckConstraint(
                condition=~Q(state=CircuitState.OPEN) | Q(open_until__isnull=False),
                name="circuit_open_has_deadline",
            ),
        ]
        indexes = [
            # Closure dashboard: circuits that are not closed.
            models.Index(fields=["state"], name="circuit_state_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.connector_id}:{self.state}"
