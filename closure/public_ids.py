"""Which record a public ID names, from its prefix: for links from evidence and dashboards."""

from dataclasses import dataclass

from closure.models.alerts import ACK_ID_PREFIX, ALERT_ID_PREFIX, DELIVERY_ID_PREFIX
from closure.models.events import HEALTH_ID_PREFIX
from closure.models.retries import RETRY_PLAN_ID_PREFIX
from closure.models.reviews import REVIEW_ID_PREFIX
from closure.models.runs import EXECUTION_ID_PREFIX, WORKER_RUN_ID_PREFIX


@dataclass(frozen=True)
class PublicIdKind:
    prefix: str
    model_name: str  # closure's model, lower case (admin URL names)
    field: str  # the model's public ID field
    console_page: str  # the console's detail route name


# Every prefix ends with "-", so no prefix is the start of another ("…alert-" is not a start of
# "…alertdelivery-…").
KINDS = (
    PublicIdKind(HEALTH_ID_PREFIX, "healthreport", "health_id", "console:health-detail"),
    PublicIdKind(ALERT_ID_PREFIX, "healthalert", "alert_id", "console:alert-detail"),
    PublicIdKind(DELIVERY_ID_PREFIX, "alertdelivery", "delivery_id", "console:delivery-detail"),
    PublicIdKind(ACK_ID_PREFIX, "acknowledgement", "ack_id", "console:acknowledgement-list"),
    PublicIdKind(RETRY_PLAN_ID_PREFIX, "retryplan", "retry_plan_id", "console:plan-detail"),
    PublicIdKind(WORKER_RUN_ID_PREFIX, "workerrun", "run_id", "console:run-detail"),
    PublicIdKind(
        EXECUTION_ID_PREFIX, "executionrecord", "execution_id", "console:execution-detail"
    ),
    PublicIdKind(REVIEW_ID_PREFIX, "closurereview", "review_id", "console:review-detail"),
)


def public_id_kind(value: str) -> PublicIdKind | None:
    """The kind of record `value` names, or None when it is no known public ID."""
    for kind in KINDS:
        if value.startswith(kind.prefix):
            return kind
    return None
