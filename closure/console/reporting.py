"""Console pages for the end of the loop: the closure dashboard and its reviews, and the
evidence ledger with its integrity."""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import urlencode

from closure.console.forms import ClosureReviewForm, HealthBuildForm
from closure.console.views import announce, console_view, filtered_page, form_action, list_page
from closure.evidence.canonical import canonical_json, sha256_hex
from closure.evidence.chain import GENESIS_HASH, chain_hash
from closure.evidence.ledger import evidence_verify, stored_payload_bytes, stored_row_problem
from closure.evidence.records import evidence_records_verify
from closure.inputs.filtersets import ClosureReviewFilterSet, EvidenceFilterSet
from closure.models import AlertDelivery, ClosureReview, Evidence
from closure.public_ids import public_id_kind
from closure.selectors import closure_dashboard
from closure.services.reviews import closure_review_create

CLOSURE_URL = "console:closure"


@dataclass
class RiskAction:
    """What closes a risk: a link to the page that does it, or a one-click POST form."""

    label: str
    url: str
    method: str = "get"  # "post": a form with CSRF to `url`
    fields: dict = field(default_factory=dict)


# (public ID or name, console URL or None)
Refs = list[tuple[str, str | None]]


@dataclass
class RiskView:
    risk: dict
    refs: Refs
    actions: list[RiskAction]


def console_url(value: str) -> str | None:
    """The console page of the record a public ID names, if it has one."""
    kind = public_id_kind(value)
    if kind is None:
        return None
    if kind.console_page == "console:acknowledgement-list":
        return reverse(kind.console_page)
    return reverse(kind.console_page, args=[value])


def _ack_url(health_id: str, provider: str) -> str:
    query = urlencode({"health_id": health_id, "provider": provider, "next": reverse(CLOSURE_URL)})
    return f"{reverse('console:acknowledgement-list')}?{query}"


def _build_health(risk: dict, refs: Refs) -> list[RiskAction]:
    fields = {"expected_interval_minutes": 60, "stale_metadata_minutes": 180}
    return [RiskAction("Build health", reverse("console:health-list"), "post", fields)]


def _send_alert(risk: dict, refs: Refs) -> list[RiskAction]:
    health_id = risk["refs"][0] if risk["refs"] else ""
    fields = {"health_id": health_id, "suppression_window_minutes": 60}
    return [RiskAction("Send the alert", reverse("console:alert-list"), "post", fields)]


def _plan_retries(risk: dict, refs: Refs) -> list[RiskAction]:
    return [
        RiskAction("Plan retries", reverse("console:plan-list")),
        RiskAction("Run the worker", reverse("console:run-list")),
    ]


def _retry_or_waive(risk: dict, refs: Refs) -> list[RiskAction]:
    return [RiskAction(f"Retry or waive {ref}", url) for ref, url in refs if url]


def _run_worker(risk: dict, refs: Refs) -> list[RiskAction]:
    return [RiskAction("Run the worker", reverse("console:run-list"))]


def _inspect_runs(risk: dict, refs: Refs) -> list[RiskAction]:
    return [
        *(RiskAction(f"Inspect run {ref}", url) for ref, url in refs if url),
        RiskAction("Run the worker again", reverse("console:run-list")),
    ]


def _check_connectors(risk: dict, refs: Refs) -> list[RiskAction]:
    return [RiskAction("Check the connectors", reverse("admin:closure_connector_changelist"))]


# The actions that close a risk, by its code.
RISK_ACTIONS: dict[str, Callable[[dict, Refs], list[RiskAction]]] = {
    "executive_retry_health_missing_or_stale": _build_health,
    "executive_retry_health_alert_not_sent": _send_alert,
    "executive_retry_health_alert_delivery_failed": _plan_retries,
    "executive_retry_health_alert_delivery_exhausted": _retry_or_waive,
    "executive_retry_health_alert_delivery_unconfirmed": _retry_or_waive,
    "executive_retry_health_alert_retry_execution_failed": _retry_or_waive,
    "executive_retry_health_alert_retry_overdue": _run_worker,
    "executive_retry_health_alert_retry_worker_failed": _inspect_runs,
    "executive_retry_health_alert_connector_circuit_open": _check_connectors,
}
# Risks a recipient's acknowledgement closes: one action per (report, connector) of the
# deliveries they name, after the risk's own actions.
ACKNOWLEDGEABLE_RISKS = (
    "executive_retry_health_alert_acknowledgement_outstanding",
    "executive_retry_health_alert_delivery_unconfirmed",
    "executive_retry_health_alert_retry_execution_failed",
)


def _risk_deliveries(risks: list[dict]) -> dict[str, AlertDelivery]:
    """The deliveries among all the risks' refs, by delivery ID (one query, none without)."""
    delivery_refs = [
        ref
        for risk in risks
        for ref in risk["refs"]
        if (kind := public_id_kind(ref)) and kind.model_name == "alertdelivery"
    ]
    if not delivery_refs:
        return {}
    return {
        d.delivery_id: d
        for d in AlertDelivery.objects.filter(delivery_id__in=delivery_refs).select_related(
            "alert__health"
        )
    }


def _acknowledge(risk: dict, deliveries: dict[str, AlertDelivery]) -> list[RiskAction]:
    pairs = dict.fromkeys(
        (d.alert.health.health_id, d.provider) for ref in risk["refs"] if (d := deliveries.get(ref))
    )
    return [
        RiskAction(f"Acknowledge on {provider}", _ack_url(health_id, provider))
        for health_id, provider in pairs
    ]


def risk_views(dashboard: dict) -> list[RiskView]:
    """Each open risk with its linked records and the actions that close it.

    One query whatever the risks: the deliveries among all refs, to build per-delivery actions.
    """
    deliveries = _risk_deliveries(dashboard["risks"])
    views = []
    for risk in dashboard["risks"]:
        refs = [(ref, console_url(ref)) for ref in risk["refs"]]
        build = RISK_ACTIONS.get(risk["code"])
        actions = build(risk, refs) if build else []
        if risk["code"] in ACKNOWLEDGEABLE_RISKS:
            actions += _acknowledge(risk, deliveries)
        views.append(RiskView(risk, refs, actions))
    return views


@console_view(
    get=("closure.view_healthreport", "closure.view_alertdelivery"), post="closure.review_closure"
)
def closure_view(request):
    """GET: the closure dashboard with its open risks and what closes each. POST: record a
    review of the dashboard as it is now."""
    dashboard = closure_dashboard()
    form = ClosureReviewForm(request.POST or None, open_items=dashboard["open_items"])
    response, status = form_action(
        request,
        form,
        lambda data: closure_review_create(
            actor=request.user,
            decision=data["decision"],
            risk_notes=dict(data.get("risk_notes", {})),
            note=data["note"],
        ),
        lambda review: announce(
            request,
            f"Review recorded: {review.get_decision_display()} "
            f"(closure {review.closure_state}, {len(review.open_items)} open risks).",
            "console:review-detail",
            review_id=review.review_id,
        ),
    )
    if response is not None:
        return response
    return render(
        request,
        "closure/console/closure.html",
        {
            "dashboard": dashboard,
            "risks": risk_views(dashboard),
            "form": form if request.user.has_perm("closure.review_closure") else None,
            "health_form": HealthBuildForm(),
            "reviews": ClosureReview.objects.select_related("reviewer").newest_first()[:5],
            "nav": "closure",
        },
        status=status,
    )


@console_view(get="closure.view_closurereview")
def review_list(request):
    return list_page(
        request,
        "closure/console/review_list.html",
        ClosureReviewFilterSet,
        ClosureReview.objects.select_related("reviewer").newest_first(),
        {"nav": "closure"},
    )


@console_view(get="closure.view_closurereview")
def review_detail(request, review_id: str):
    review = get_object_or_404(
        ClosureReview.objects.select_related("reviewer"), review_id=review_id
    )
    evidence = Evidence.objects.filter(session_id=review.review_id).order_by("sequence").first()
    return render(
        request,
        "closure/console/review_detail.html",
        {
            "review": review,
            "evidence": evidence,
            "snapshot_ok": sha256_hex(canonical_json(review.snapshot)) == review.snapshot_sha256,
            "nav": "closure",
        },
    )


# -- evidence -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowIntegrity:
    # the stored bytes hash to payload_sha256; the jsonb copy and copied columns agree
    payload_ok: bool
    chain_ok: bool  # chain_hash = sha256(previous_hash + payload_sha256)
    link_ok: bool | None  # previous_hash is the chain_hash of the row before (when on the page)

    @property
    def ok(self) -> bool:
        return self.payload_ok and self.chain_ok and self.link_ok is not False


def _integrity(row: Evidence, linked: str | None) -> RowIntegrity:
    """One row checked as the ledger's verification checks it: its stored payload, its chain
    hash, and its link to `linked` (the chain hash of the row before, when known)."""
    return RowIntegrity(
        payload_ok=not stored_row_problem(row),
        chain_ok=chain_hash(row.previous_hash, row.payload_sha256) == row.chain_hash,
        link_ok=None if linked is None else row.previous_hash == linked,
    )


def row_integrity(rows: list[Evidence]) -> list[tuple[Evidence, RowIntegrity]]:
    """Recompute each row's hashes, and the links between rows of consecutive sequence."""
    chain_of = {row.sequence: row.chain_hash for row in rows}
    return [(row, _integrity(row, chain_of.get(row.sequence - 1))) for row in rows]


@console_view(get="closure.view_evidence")
def evidence_list(request):
    context = filtered_page(request, EvidenceFilterSet, Evidence.objects.order_by("-sequence"))
    context["rows"] = [
        (row, integrity, console_url(row.session_id))
        for row, integrity in row_integrity(list(context["page"].object_list))
    ]
    return render(request, "closure/console/evidence_list.html", {**context, "nav": "evidence"})


@console_view(get="closure.view_evidence")
def evidence_detail(request, sequence: int):
    row = get_object_or_404(Evidence, sequence=sequence)
    before = (
        Evidence.objects.filter(sequence=sequence - 1).values_list("chain_hash", flat=True).first()
    )
    if sequence == 1:
        before = GENESIS_HASH
    return render(
        request,
        "closure/console/evidence_detail.html",
        {
            "row": row,
            "integrity": _integrity(row, before),
            "subject_url": console_url(row.session_id),
            "payload_json": stored_payload_bytes(row).decode(),
            "nav": "evidence",
        },
    )


@console_view(get="closure.view_evidence")
def evidence_verify_view(request):
    """Recompute the whole chain (streaming, reads only) and show the result; with
    `?records=1`, also check every evidence-bearing record against its latest evidence row."""
    records = evidence_records_verify() if request.GET.get("records") == "1" else None
    # A retry decision ("<plan>/<delivery>") is shown on its plan's page.
    mismatches = (
        [(m, console_url(m.public_id.partition("/")[0])) for m in records.mismatches]
        if records
        else []
    )
    return render(
        request,
        "closure/console/evidence_verify.html",
        {
            "verification": evidence_verify().as_dict(),
            "records": records,
            "mismatches": mismatches,
            "nav": "evidence",
        },
    )
