"""Every status of the closure domain as TextChoices, plus the sets the rules are written in."""

from django.db import models

METADATA_KIND_PREFIX = "go-backend-rollback-drill-acknowledgement-audit-delivery"
_RECOVERY = f"{METADATA_KIND_PREFIX}-recovery-executive-report-delivery"


class MetadataKind(models.TextChoices):
    """The kind of an evidence row; the family is fixed by the design (section 3)."""

    EVENT_INGEST = f"{_RECOVERY}-event-ingest", "Delivery event ingest"
    HEALTH = f"{_RECOVERY}-retry-health", "Retry health report"
    ALERT_PLAN = f"{_RECOVERY}-retry-health-alert-plan", "Health alert plan"
    ALERT_DELIVERY = f"{_RECOVERY}-retry-health-alert-delivery", "Initial alert delivery"
    ALERT_ACK = f"{_RECOVERY}-retry-health-alert-ack", "Alert acknowledgement"
    DELIVERY_WAIVER = f"{_RECOVERY}-retry-health-alert-delivery-waiver", "Delivery waiver"
    RETRY_PLAN = f"{_RECOVERY}-retry-health-alert-delivery-retry-plan", "Retry plan"
    WORKER_RUN = f"{_RECOVERY}-retry-health-alert-delivery-retry-worker-run", "Retry worker run"
    EXECUTION_RECORD = (
        f"{_RECOVERY}-retry-health-alert-delivery-retry-execution-record",
        "Retry execution record",
    )
    CONNECTOR_CHANGE = f"{_RECOVERY}-retry-health-alert-connector-change", "Connector change"
    CONNECTOR_CIRCUIT = (
        f"{_RECOVERY}-retry-health-alert-connector-circuit",
        "Connector circuit transition",
    )
    CLOSURE_REVIEW = f"{METADATA_KIND_PREFIX}-final-reporting-closure-review", "Closure review"
    READINESS_SUMMARY = (
        f"{METADATA_KIND_PREFIX}-final-reporting-release-readiness-summary",
        "Release readiness summary",
    )
    RUNBOOK_EXPORT = (
        f"{METADATA_KIND_PREFIX}-final-reporting-operator-runbook-export",
        "Operator runbook export",
    )
    EVIDENCE_EXPORT = (
        f"{METADATA_KIND_PREFIX}-final-reporting-evidence-export",
        "Evidence export",
    )
    # An auditor's CSV or JSON Lines export of a filtered admin changelist (closure/admin.py).
    ADMIN_EXPORT = (
        f"{METADATA_KIND_PREFIX}-final-reporting-admin-export",
        "Admin changelist export",
    )
    # A username locked out after repeated failed logins (closure/services/security.py).
    LOGIN_LOCKOUT = f"{METADATA_KIND_PREFIX}-access-login-lockout", "Login lockout"
    # An API token created or revoked (closure/services/tokens.py).
    API_TOKEN = f"{METADATA_KIND_PREFIX}-access-api-token", "API token change"


class EventKind(models.TextChoices):
    REPORT_DELIVERY = "report_delivery", "Report delivery"
    RETRY_PLAN = "retry_plan", "Retry plan"
    RETRY_WORKER_RUN = "retry_worker_run", "Retry worker run"
    RETRY_EXECUTION = "retry_execution", "Retry execution"


class EventStatus(models.TextChoices):
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    SUCCEEDED = "succeeded", "Succeeded"


# Which statuses an upstream event of each kind may carry.
EVENT_STATUSES_BY_KIND = {
    EventKind.REPORT_DELIVERY: {EventStatus.DELIVERED, EventStatus.FAILED, EventStatus.SKIPPED},
    EventKind.RETRY_PLAN: {EventStatus.SUCCEEDED, EventStatus.FAILED},
    EventKind.RETRY_WORKER_RUN: {EventStatus.SUCCEEDED, EventStatus.FAILED, EventStatus.SKIPPED},
    EventKind.RETRY_EXECUTION: {EventStatus.DELIVERED, EventStatus.FAILED, EventStatus.SKIPPED},
}


class AlertLevel(models.TextChoices):
    HEALTHY = "healthy", "Healthy"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


ALERT_LEVEL_RANK = {AlertLevel.HEALTHY: 0, AlertLevel.WARNING: 1, AlertLevel.CRITICAL: 2}


class Severity(models.TextChoices):
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class ConnectorKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    SLACK = "slack", "Slack"
    TEAMS = "teams", "Microsoft Teams"
    EMAIL = "email", "E-mail"
    PAGERDUTY = "pagerduty", "PagerDuty"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    # The connector took the message for later processing (a Teams workflow's 202): not proof
    # that anyone received it. Never retried by the planner; closed by an acknowledgement, a
    # waiver, or the connector's `accepted_counts_as_delivered`.
    ACCEPTED = "accepted", "Accepted (not confirmed)"
    FAILED = "failed", "Failed"
    EXHAUSTED = "exhausted", "Exhausted"
    SUPPRESSED = "suppressed", "Suppressed"


TERMINAL_DELIVERY_STATUSES = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.SUPPRESSED})
# Deliveries an operator may waive or retry by hand.
RECOVERABLE_DELIVERY_STATUSES = frozenset(
    {DeliveryStatus.FAILED, DeliveryStatus.EXHAUSTED, DeliveryStatus.ACCEPTED}
)
# Deliveries an acknowledgement leaves as they are: the connector's own answer stays on record
# (an accepted delivery that is acknowledged counts as confirmed, see the closure dashboard).
ACK_KEEPS_DELIVERY_STATUSES = TERMINAL_DELIVERY_STATUSES | {DeliveryStatus.ACCEPTED}


class SuppressionReason(models.TextChoices):
    ACKNOWLEDGED = "acknowledged", "Acknowledged by the recipient"
    CONNECTOR_DISABLED = "connector_disabled", "Connector disabled"
    WAIVED = "waived", "Waived by an operator"


class AcknowledgementState(models.TextChoices):
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    DISMISSED = "dismissed", "Dismissed"
    ESCALATED = "escalated", "Escalated"
    RESOLVED = "resolved", "Resolved"


# Acknowledgement states that close the loop on a connector.
CLOSING_ACK_STATES = frozenset({AcknowledgementState.ACKNOWLEDGED, AcknowledgementState.RESOLVED})


class DecisionAction(models.TextChoices):
    RETRY = "retry", "Retry"
    WAIT = "wait", "Wait"
    SUPPRESS = "suppress", "Suppress"


class DecisionReason(models.TextChoices):
    RETRY_DUE = "retry_due", "Retry is due"
    BACKOFF_PENDING = "backoff_pending", "Waiting for the backoff delay"
    RETRY_AFTER_PENDING = "retry_after_pending", "Waiting for the connector's Retry-After"
    ALERT_ACKNOWLEDGED = "alert_acknowledged", "Alert acknowledged on the connector"
    CONNECTOR_DISABLED = "connector_disabled", "Connector disabled or removed"
    MAX_ATTEMPTS_REACHED = "max_attempts_reached", "Maximum attempts reached"


class DecisionStatus(models.TextChoices):
    """Where a decision is in its life: only `pending` and `in_flight` decisions are open."""

    PENDING = "pending", "Pending"
    IN_FLIGHT = "in_flight", "In flight"
    EXECUTED = "executed", "Executed"
    SKIPPED = "skipped", "Skipped"
    SUPERSEDED = "superseded", "Superseded"
    APPLIED = "applied", "Applied"


OPEN_DECISION_STATUSES = frozenset({DecisionStatus.PENDING, DecisionStatus.IN_FLIGHT})


class WorkerRunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partial"
    FAILED = "failed", "Failed"
    NO_WORK = "no_work", "No work"
    ABANDONED = "abandoned", "Abandoned"


class ExecutionStatus(models.TextChoices):
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    ACCEPTED = "accepted", "Accepted (not confirmed)"
    # The attempt ran, but its worker had lost the lease: recorded, and it changed nothing.
    SUPERSEDED = "superseded", "Superseded"


class CircuitState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Half open (one probe allowed)"


class ExecutionTrigger(models.TextChoices):
    INITIAL = "initial", "Initial send"
    RETRY = "retry", "Retry worker"
    MANUAL = "manual", "Manual retry"


class ErrorClass(models.TextChoices):
    TIMEOUT = "timeout", "Timeout"
    CONNECTION_ERROR = "connection_error", "Connection error"
    HTTP_4XX = "http_4xx", "HTTP 4xx"
    HTTP_5XX = "http_5xx", "HTTP 5xx"
    RATE_LIMITED = "rate_limited", "Rate limited"
    REJECTED_BY_POLICY = "rejected_by_policy", "Rejected by policy"
    CONFIG_ERROR = "config_error", "Configuration error"


class SkipReason(models.TextChoices):
    ALREADY_DELIVERED = "already_delivered", "Already delivered"
    NO_LONGER_FAILED = "no_longer_failed", "No longer failed"
    CONNECTOR_DISABLED = "connector_disabled", "Connector disabled"


class HoldReason(models.TextChoices):
    """Why a due retry stays pending in a run without being sent or skipped (no record)."""

    CIRCUIT_OPEN = "circuit_open", "Connector circuit open"
    ATTEMPT_IN_FLIGHT = "attempt_in_flight", "Another attempt in flight"


class ApiTokenState(models.TextChoices):
    """An API token's state, derived from its revocation and expiry times (never stored)."""

    ACTIVE = "active", "Active"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class ReviewDecision(models.TextChoices):
    """What a closure review concludes about the dashboard it saw."""

    CONFIRM_CLOSED = "confirm_closed", "Confirm the loop is closed"
    ACCEPT_OPEN_RISKS = "accept_open_risks", "Accept the open risks, with a note on each"


class ClosureState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"


# Evidence kinds that record reading, reviewing or exporting the ledger, or access to the app,
# rather than a change to the reporting loop: a closure review still covers the current state
# after them.
LEDGER_READ_KINDS = frozenset(
    {
        MetadataKind.LOGIN_LOCKOUT,
        MetadataKind.API_TOKEN,
        MetadataKind.CLOSURE_REVIEW,
        MetadataKind.READINESS_SUMMARY,
        MetadataKind.RUNBOOK_EXPORT,
        MetadataKind.EVIDENCE_EXPORT,
        MetadataKind.ADMIN_EXPORT,
    }
)
