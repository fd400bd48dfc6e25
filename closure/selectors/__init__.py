"""Every non-trivial read: dashboards, release readiness and the querysets behind lists.

No writes here. The dashboards are re-exported; readiness is imported from
`closure.selectors.readiness`, as it reads the evidence chain too.
"""

from closure.selectors.alerts import alert_dashboard
from closure.selectors.dashboard import (
    CLOSURE_SCHEMA_VERSION,
    MAX_REFS,
    A,
    B,
    R,
    closure_dashboard,
    closure_summary,
    unacknowledged_deliveries,
    unconfirmed_deliveries,
)

__all__ = [
    "CLOSURE_SCHEMA_VERSION",
    "MAX_REFS",
    "A",
    "B",
    "R",
    "alert_dashboard",
    "closure_dashboard",
    "closure_summary",
    "unacknowledged_deliveries",
    "unconfirmed_deliveries",
]
