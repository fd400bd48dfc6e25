"""The closure records, one module per topic."""

from closure.models.accounts import ApiToken
from closure.models.alerts import Acknowledgement, AlertDelivery, HealthAlert
from closure.models.circuits import ConnectorCircuit
from closure.models.connectors import Connector
from closure.models.events import DeliveryEvent, HealthReport
from closure.models.evidence import Evidence, EvidenceCheckpoint, EvidenceImmutableError
from closure.models.idempotency import IdempotencyRecord
from closure.models.retries import RetryDecision, RetryPlan
from closure.models.reviews import ClosureReview
from closure.models.runs import ExecutionRecord, WorkerRun

__all__ = [
    "Acknowledgement",
    "AlertDelivery",
    "ApiToken",
    "ClosureReview",
    "Connector",
    "ConnectorCircuit",
    "DeliveryEvent",
    "Evidence",
    "EvidenceCheckpoint",
    "EvidenceImmutableError",
    "ExecutionRecord",
    "HealthAlert",
    "HealthReport",
    "IdempotencyRecord",
    "RetryDecision",
    "RetryPlan",
    "WorkerRun",
]
