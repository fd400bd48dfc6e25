"""Console pages for the end of the loop: the closure dashboard and its reviews, and the
evidence ledger with its integrity."""

from dataclasses import dataclass, field

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode

from closure.api.filtersets import EvidenceFilterSet
from closure.api.final_reporting import ClosureReviewFilterSet
from closure.console.forms import ClosureReviewForm, HealthBuildForm
from closure.console.views import INVALID, console_view, filtered_page, service_call
from closure.evidence.canonical import canonical_json, sha256_hex
from closure.evidence.chain import GENESIS_HASH, chain_hash
from closure.evidence.ledger import evidence_verify, stored_payload_bytes, stored_row_problem
from closure.evidence.records import evidence_records_verify
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


@dataclass
class RiskView:
    risk: dict
    refs: list[tuple[str, str | None]]  # (public ID or name, console URL or None)
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


def risk_views(dashboard: dict) -> list[RiskView]:
    """Each open risk with its linked records and the actions that close it.

    One query whatever the risks: the deliveries among all refs, to build per-delivery actions.
    """
    delivery_refs = [
        ref
        for risk in dashboard["risks"]
        for ref in risk["refs"]
        if (kind := public_id_kind(ref)) and kind.model_name == "alertdelivery"
    ]
    deliveries = (
        {
            d.delivery_id: d
            for d in AlertDelivery.objects.filter(delivery_id__in=delivery_refs).select_related(
                "alert__health"
            )
        }
        if delivery_refs
        else {}
    )
    views = []
    for risk in dashboard["risks"]:
        code = risk["code"]
        refs = [(ref, console_url(ref)) for ref in risk["refs"]]
        actions: list[RiskAction] = []
        if code == "executive_retry_health_missing_or_stale":
            actions.append(
                RiskAction(
                    "Build health",
                    reverse("console:health-list"),
                    "post",
                    {"expected_interval_minutes": 60, "stale_metadata_minutes": 180},
                )
            )
        elif code == "executive_retry_health_alert_not_sent":
            actions.append(
                RiskAction(
                    "Send the alert",
                    reverse("console:alert-list"),
                    "post",
                    {
                        "health_id": risk["refs"][0] if risk["refs"] else "",
                        "suppression_window_minutes": 60,
                    },
                )
            )
        elif code == "executive_retry_health_alert_delivery_failed":
            actions.append(RiskAction("Plan retries", reverse("console:plan-list")))
            actions.append(RiskAction("Run the worker", reverse("console:run-list")))
        elif code in (
            "executive_retry_health_alert_delivery_exhausted",
            "executive_retry_health_alert_delivery_unconfirmed",
        ):
            for ref, url in refs:
                if url:
                    actions.append(RiskAction(f"Retry or waive {ref}", url))
        elif code == "executive_retry_health_alert_retry_overdue":
            actions.append(RiskAction("Run the worker", reverse("console:run-list")))
        elif code == "executive_retry_health_alert_retry_worker_failed":
            for ref, url in refs:
                if url:
                    actions.append(RiskAction(f"Inspect run {ref}", url))
            actions.append(RiskAction("Run the worker again", reverse("console:run-list")))
        elif code == "executive_retry_health_alert_connector_circuit_open":
            actions.append(
                RiskAction("Check the connectors", reverse("admin:closure_connector_changelist"))
            )
        if code in (
            "executive_retry_health_alert_acknowledgement_outstanding",
            "executive_retry_health_alert_delivery_unconfirmed",
        ):
            pairs = dict.fromkeys(
                (d.alert.health.health_id, d.provider)
                for ref in risk["refs"]
                if (d := deliveries.get(ref))
            )
            for health_id, provider in pairs:
                actions.append(
                    RiskAction(f"Acknowledge on {provider}", _ack_url(health_id, provider))
                )
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
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.validated
            review, status = service_call(
                form,
                lambda: closure_review_create(
                    actor=request.user,
                    decision=data["decision"],
                    risk_notes=dict(data.get("risk_notes", {})),
                    note=data["note"],
                ),
            )
            if review is not None:
                messages.success(
                    request,
                    f"Review recorded: {review.get_decision_display()} "
                    f"(closure {review.closure_state}, {len(review.open_items)} open risks).",
                )
                return redirect("console:review-detail", review_id=review.review_id)
        else:
            status = INVALID
    return render(
        request,
        "closure/console/closure.html",
        {
            "dashboard": dashboard,
            "risks": risk_views(dashboard),
            "form": form if request.user.has_perm("closure.review_closure") else None,
            "health_form": HealthBuildForm(),
            "reviews": ClosureReview.objects.select_related("reviewer").order_by(
                "-reviewed_at", "-id"
            )[:5],
            "nav": "closure",
        },
        status=status,
    )


@console_view(get="closure.view_closurereview")
def review_list(request):
    context = filtered_page(
        request,
        ClosureReviewFilterSet,
        ClosureReview.objects.select_related("reviewer").order_by("-reviewed_at", "-id"),
    )
    return render(request, "closure/console/review_list.html", {**context, "nav": "closure"})


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


def row_integrity(rows: list[Evidence]) -> list[tuple[Evidence, RowIntegrity]]:
    """Recompute each row's hashes, and the links between rows of consecutive sequence."""
    by_sequence = {row.sequence: row for row in rows}
    checked = []
    for row in rows:
        before = by_sequence.get(row.sequence - 1)
        checked.append(
            (
                row,
                RowIntegrity(
                    payload_ok=not stored_row_problem(row),
                    chain_ok=chain_hash(row.previous_hash, row.payload_sha256) == row.chain_hash,
                    link_ok=(before.chain_hash == row.previous_hash) if before else None,
                ),
            )
        )
    return checked


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
    [(_, checked)] = row_integrity([row])
    integrity = RowIntegrity(
        checked.payload_ok,
        checked.chain_ok,
        (row.previous_hash == before) if before is not None else None,
    )
    return render(
        request,
        "closure/console/evidence_detail.html",
        {
            "row": row,
            "integrity": integrity,
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
