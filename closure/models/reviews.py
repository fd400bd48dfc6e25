"""Recorded reviews of the final reporting closure dashboard."""

from django.db import models

from closure.choices import ClosureState, ReviewDecision
from closure.models.base import NewestFirstQuerySet, choices_constraint, public_id_field, user_field
from closure.models.evidence import AppendOnlyModel, AppendOnlyQuerySet

REVIEW_ID_PREFIX = "gordackfinalclosurereview-"


# What a review concludes, named as its evidence and the API name it.
REVIEW_OUTCOME_FIELDS = (
    "decision",
    "closure_state",
    "alert_level",
    "open_items",
    "risk_notes",
    "note",
)


class ClosureReviewQuerySet(AppendOnlyQuerySet, NewestFirstQuerySet):
    """Reviews are never changed, and are listed newest first."""


class ClosureReview(AppendOnlyModel):
    """An operator's or auditor's review of the closure dashboard, as it was when reviewed.

    `snapshot` is the dashboard they saw and `snapshot_sha256` the hash of its canonical JSON.
    `confirm_closed` is only possible for a closed dashboard; `accept_open_risks` carries a note
    for every open risk code (`risk_notes`). Written once with its evidence, never changed.
    """

    review_id = public_id_field(REVIEW_ID_PREFIX)
    reviewed_at = models.DateTimeField()
    reviewer = user_field()
    decision = models.CharField(max_length=32, choices=ReviewDecision.choices)
    closure_state = models.CharField(max_length=16, choices=ClosureState.choices)
    alert_level = models.CharField(max_length=16)
    open_items = models.JSONField(default=list)
    risk_notes = models.JSONField(default=dict)
    note = models.TextField(blank=True, default="")
    snapshot = models.JSONField()
    snapshot_sha256 = models.CharField(max_length=64)

    append_only_noun = "closure reviews"
    objects = ClosureReviewQuerySet.as_manager()

    class Meta(AppendOnlyModel.Meta):
        ordering = ["-reviewed_at", "-id"]
        constraints = [
            choices_constraint("decision", ReviewDecision, "closure_review_decision_valid"),
            choices_constraint("closure_state", ClosureState, "closure_review_state_valid"),
            # Confirming closure of an open loop is impossible, not just refused by the API.
            models.CheckConstraint(
                condition=~models.Q(decision=ReviewDecision.CONFIRM_CLOSED)
                | models.Q(closure_state=ClosureState.CLOSED),
                name="closure_review_confirm_needs_closed",
            ),
        ]
        indexes = [
            # The review list (newest first) and readiness's "latest closure review".
            models.Index(fields=["-reviewed_at", "-id"], name="closure_review_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.review_id} {self.decision}"
