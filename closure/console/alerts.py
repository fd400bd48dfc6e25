"""Console pages for alerts, their deliveries and acknowledgements."""

from django.db.models import Prefetch
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from closure.choices import RECOVERABLE_DELIVERY_STATUSES, DeliveryStatus, MetadataKind
from closure.console import charts, selectors
from closure.console.forms import AcknowledgementForm, AlertSendForm, ManualRetryForm, WaiveForm
from closure.console.views import (
    announce,
    console_view,
    filtered_page,
    form_action,
    list_page,
    plural,
    safe_next,
    timeline_context,
)
from closure.evidence.ledger import evidence_written
from closure.inputs.filtersets import (
    AcknowledgementFilterSet,
    AlertDeliveryFilterSet,
    HealthAlertFilterSet,
)
from closure.models import Acknowledgement, AlertDelivery, Evidence, ExecutionRecord, HealthAlert
from closure.services.alerts import (
    acknowledgement_create,
    delivery_retry_now,
    delivery_waive,
    health_alert_send,
)


def _send_summary(result) -> str:
    statuses = [delivery.status for delivery, _ in result.attempts]
    parts = [
        f"{statuses.count(DeliveryStatus.DELIVERED)} delivered",
        f"{statuses.count(DeliveryStatus.FAILED)} failed",
    ]
    if statuses.count(DeliveryStatus.ACCEPTED):
        parts.append(f"{statuses.count(DeliveryStatus.ACCEPTED)} accepted (not confirmed)")
    suppressed = result.alert.suppressed_providers
    parts.append(
        f"{len(suppressed)} suppressed"
        + (
            f" ({', '.join(s['provider'] + ': ' + s['reason'] for s in suppressed)})"
            if suppressed
            else ""
        )
    )
    return f"Alert sent to {plural(len(statuses), 'connector')}: {', '.join(parts)}."


@console_view(get="closure.view_healthalert", post="closure.add_healthalert")
def alert_list(request):
    """GET: the alert history. POST: send a health report's alert."""
    form = AlertSendForm(request.POST or None)

    def sent(result):
        if result.alert is None:
            form.add_error(
                "force", "Not sent: the health report is healthy. Tick force to send it anyway."
            )
            return None
        return announce(
            request, _send_summary(result), "console:alert-detail", alert_id=result.alert.alert_id
        )

    response, status = form_action(
        request,
        form,
        lambda data: health_alert_send(
            actor=request.user,
            health_id=data["health_id"] or None,
            provider=data["provider"],
            force=data["force"],
            suppression_window_minutes=data["suppression_window_minutes"],
        ),
        sent,
    )
    if response is not None:
        return response
    return list_page(
        request,
        "closure/console/alert_list.html",
        HealthAlertFilterSet,
        HealthAlert.objects.select_related("health", "created_by")
        .prefetch_related(
            Prefetch("deliveries", queryset=AlertDelivery.objects.order_by("provider", "id"))
        )
        .newest_first(),
        {"form": form, "nav": "alerts"},
        status=status,
    )


@console_view(get="closure.view_healthalert")
def alert_detail(request, alert_id: str):
    alert = get_object_or_404(
        HealthAlert.objects.select_related("health", "created_by"), alert_id=alert_id
    )
    deliveries = list(alert.deliveries.select_related("connector").order_by("provider", "id"))
    counts = dict.fromkeys(DeliveryStatus.values, 0)
    for delivery in deliveries:
        counts[delivery.status] += 1
    return render(
        request,
        "closure/console/alert_detail.html",
        {
            "alert": alert,
            "deliveries": deliveries,
            "counts": counts,
            "acknowledgements": alert.acknowledgements.select_related(
                "acknowledged_by"
            ).newest_first(),
            "nav": "alerts",
        },
    )


@console_view(get="closure.view_alertdelivery")
def delivery_list(request):
    """The deliveries, with the two charts drawn from the same filtered set."""
    context = filtered_page(
        request,
        AlertDeliveryFilterSet,
        AlertDelivery.objects.select_related("alert__health").newest_first(),
    )
    filtered = context["filterset"].qs if context["filterset"].is_valid() else None
    executions = ExecutionRecord.objects.all()
    if filtered is not None:
        executions = executions.filter(delivery__in=filtered.values("pk"))
    timeline = timeline_context(request, executions)
    histogram = charts.attempts_per_delivery_chart(
        selectors.attempts_per_delivery(
            filtered if filtered is not None else AlertDelivery.objects.none()
        )
    )
    return render(
        request,
        "closure/console/delivery_list.html",
        {
            **context,
            **timeline,
            "histogram": histogram,
            "nav": "deliveries",
        },
    )


def _delivery_context(request, delivery, *, waive_form=None, retry_form=None) -> dict:
    """The delivery's page. A submitted form is always shown again with its errors (even when
    the delivery is no longer recoverable); a fresh one only when its action is possible."""
    recoverable = delivery.status in RECOVERABLE_DELIVERY_STATUSES
    user = request.user
    if waive_form is None and recoverable and user.has_perm("closure.waive_delivery"):
        waive_form = WaiveForm()
    can_retry = recoverable and delivery.connector.enabled
    if retry_form is None and can_retry and user.has_perm("closure.execute_retry"):
        retry_form = ManualRetryForm()
    return {
        "delivery": delivery,
        "executions": delivery.executions.select_related("worker_run", "executed_by").order_by(
            "attempt_number", "id"
        ),
        "decisions": delivery.decisions.select_related("plan").order_by("-id")[:20],
        "recoverable": recoverable,
        "waive_form": waive_form,
        "retry_form": retry_form,
        "nav": "deliveries",
    }


def _delivery(delivery_id: str) -> AlertDelivery:
    return get_object_or_404(
        AlertDelivery.objects.select_related("alert__health", "connector"), delivery_id=delivery_id
    )


@console_view(get="closure.view_alertdelivery")
def delivery_detail(request, delivery_id: str):
    delivery = _delivery(delivery_id)
    return render(
        request, "closure/console/delivery_detail.html", _delivery_context(request, delivery)
    )


def _delivery_action(request, delivery_id: str, form_class, form_name: str, call, message):
    """POST only: one action on a delivery, back to the page it came from with `message(result)`
    or to the delivery's page with the form (as `form_name`) and its errors."""
    delivery = _delivery(delivery_id)
    if request.method == "GET":
        return redirect("console:delivery-detail", delivery_id=delivery_id)
    form = form_class(request.POST)
    response, status = form_action(
        request,
        form,
        call,
        lambda result: announce(
            request,
            message(result),
            safe_next(request, reverse("console:delivery-detail", args=[delivery_id])),
        ),
    )
    if response is not None:
        return response
    return render(
        request,
        "closure/console/delivery_detail.html",
        _delivery_context(request, delivery, **{form_name: form}),
        status=status,
    )


@console_view(get="closure.view_alertdelivery", post="closure.waive_delivery")
def delivery_waive_view(request, delivery_id: str):
    """POST: close a failed or exhausted delivery without delivering it, with a reason."""

    def waive(data):
        return delivery_waive(actor=request.user, delivery_id=delivery_id, reason=data["reason"])

    return _delivery_action(request, delivery_id, WaiveForm, "waive_form", waive, _waive_summary)


def _waive_summary(waived: AlertDelivery) -> str:
    return (
        f"Delivery {waived.delivery_id} waived: now {waived.status} "
        f"({waived.suppression_reason}). Nothing was sent."
    )


def _retry_summary(outcome) -> str:
    retried, record = outcome
    sent = 1 if record and record.execution_status != "skipped" else 0
    detail = (
        f"attempt {record.attempt_number} {record.execution_status}"
        + (f" ({record.error_class})" if record.error_class else "")
        if record
        else "no attempt recorded"
    )
    return f"Manual retry: {sent} sent, {detail}; the delivery is now {retried.status}."


@console_view(get="closure.view_alertdelivery", post="closure.execute_retry")
def delivery_retry_view(request, delivery_id: str):
    """POST: retry one failed or exhausted delivery by hand, now (one connector call)."""

    def retry(data):
        return delivery_retry_now(
            actor=request.user, delivery_id=delivery_id, timeout_seconds=data["timeout_seconds"]
        )

    return _delivery_action(
        request, delivery_id, ManualRetryForm, "retry_form", retry, _retry_summary
    )


@console_view(get="closure.view_acknowledgement", post="closure.acknowledge_alert")
def acknowledgement_list(request):
    """GET: the acknowledgements. POST: record a recipient's acknowledgement."""
    initial = {key: request.GET[key] for key in ("health_id", "provider") if request.GET.get(key)}
    form = AcknowledgementForm(request.POST or None, initial=initial)
    # The summary counts the deliveries the acknowledgement closed, from the evidence row its
    # service wrote.
    with evidence_written() as written:
        response, status = form_action(
            request,
            form,
            lambda data: acknowledgement_create(
                actor=request.user,
                health_id=data["health_id"],
                provider=data["provider"],
                state=data["acknowledgement_state"],
                external_ref=data["external_ref"],
                notes=data["notes"],
            ),
            lambda ack: announce(
                request,
                _acknowledgement_summary(ack, written),
                safe_next(request, reverse("console:acknowledgement-list")),
            ),
        )
    if response is not None:
        return response
    return list_page(
        request,
        "closure/console/acknowledgement_list.html",
        AcknowledgementFilterSet,
        Acknowledgement.objects.select_related("alert", "health", "acknowledged_by").newest_first(),
        {
            "form": form if request.user.has_perm("closure.acknowledge_alert") else None,
            "next": safe_next(request, ""),
            "nav": "acknowledgements",
        },
        status=status,
    )


def _acknowledgement_summary(ack: Acknowledgement, written: list[Evidence]) -> str:
    [evidence] = [
        row
        for row in written
        if row.metadata_kind == MetadataKind.ALERT_ACK and row.session_id == ack.ack_id
    ]
    suppressed = evidence.payload["subject"]["suppressed_delivery_ids"]
    return (
        f"Acknowledgement recorded: {ack.state} on {ack.provider} for {ack.health.health_id}; "
        f"{plural(len(suppressed), 'open delivery', 'open deliveries')} closed."
    )
