"""The console: sign-in, the flow page, health reports, and what every page shares.

A console view authenticates (the login-required middleware sends anonymous visitors to the
sign-in page), checks the permission of the request's method, validates a form, calls ONE
service (the same one as the API), and redirects to a page that says what happened. Reads go
through FilterSets and selectors, in a fixed number of queries. No GET writes anything.
"""

from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from closure.api.filtersets import HealthReportFilterSet
from closure.console import selectors
from closure.console.forms import AlertSendForm, HealthBuildForm
from closure.models import HealthReport
from closure.paginators import BoundedCountPaginator
from closure.selectors import closure_dashboard
from closure.services.errors import ServiceError
from closure.services.health import HealthParameters, health_report_build

PAGE_SIZE = 25
# Status codes of a form page shown again with its errors.
INVALID, CONFLICT = 400, 409


def console_view(*, get: str | tuple[str, ...], post: str | tuple[str, ...] | None = None):
    """Allow GET (and HEAD) with the permission(s) `get`, POST with `post`; 405 otherwise."""
    required = {"GET": get, "HEAD": get, "POST": post}

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            perms = required.get(request.method)
            if perms is None:
                allowed = [method for method, needed in required.items() if needed is not None]
                return HttpResponseNotAllowed(allowed)
            if not request.user.has_perms((perms,) if isinstance(perms, str) else perms):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def filtered_page(request, filterset_class, queryset, *, page_size: int = PAGE_SIZE) -> dict:
    """Filter `queryset` with the API's FilterSet and cut one page of it.

    Two queries: a bounded count and the page. Invalid filters show their errors and no rows.
    """
    filterset = filterset_class(data=request.GET, queryset=queryset)
    for name, field in filterset.form.fields.items():
        # Labels are the API's query parameters, so the page also documents the API.
        field.label = filter_label(name)
        if isinstance(field.widget, forms.DateTimeInput):
            field.widget.input_type = "datetime-local"
    rows = filterset.qs if filterset.is_valid() else queryset.none()
    paginator = BoundedCountPaginator(rows, page_size)
    page = paginator.get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return {
        "filterset": filterset,
        "page": page,
        "paginator": paginator,
        "query": params.urlencode(),
        "filtered": any(value for key, value in request.GET.items() if key != "page"),
    }


def filter_label(name: str) -> str:
    """`executed_after` → "Executed after", `health_id` → "Health ID"."""
    words = name.replace("_", " ").split()
    return (
        " ".join("ID" if word == "id" else word for word in words)
        .capitalize()
        .replace(" id", " ID")
    )


def safe_next(request, default: str) -> str:
    """The `next` URL of the request if it is one of ours, else `default`."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def service_call(form, call, *, conflict_status: int = CONFLICT):
    """Run `call()`; a service refusal goes onto the form. Returns (result, status)."""
    try:
        return call(), 200
    except ServiceError as exc:
        form.add_service_error(exc)
        return None, conflict_status if exc.status == 409 else INVALID


def plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else (plural or noun + 's')}"


# -- sign-in ------------------------------------------------------------------------------------


class ConsoleLoginView(auth_views.LoginView):
    template_name = "closure/console/login.html"
    redirect_authenticated_user = True


console_login = login_not_required(ConsoleLoginView.as_view())
console_logout = auth_views.LogoutView.as_view()


# -- the flow -----------------------------------------------------------------------------------


def flow_statuses(state: selectors.FlowState, dashboard: dict) -> dict[str, str]:
    """Each step's status: `done`, `attention` (its action is needed now) or `waiting` (an
    earlier step comes first)."""
    open_items = set(dashboard["open_items"])
    deliveries = dashboard["summary"]["deliveries"]
    report = state.latest_report
    failed_now = deliveries.get("failed", 0) + deliveries.get("pending", 0)
    open_decisions = sum(state.open_decisions.values())
    health = (
        "attention"
        if report is None or "executive_retry_health_missing_or_stale" in open_items
        else "done"
    )
    if report is None:
        alert = "waiting"
    elif "executive_retry_health_alert_not_sent" in open_items:
        alert = "attention"
    else:
        alert = "done"
    if alert != "done":
        plan = "waiting"
    else:
        plan = "attention" if failed_now and not open_decisions else "done"
    if state.open_decisions["retry_due"] or (
        "executive_retry_health_alert_retry_worker_failed" in open_items
    ):
        worker = "attention"
    elif plan != "done":
        worker = "waiting"
    else:
        worker = "done"
    closure = "done" if dashboard["closure_state"] == "closed" else "attention"
    return {"health": health, "alert": alert, "plan": plan, "worker": worker, "closure": closure}


@console_view(get="closure.view_healthreport")
def flow(request):
    """The five steps in order, each with its state and its action."""
    state = selectors.flow_state()
    dashboard = closure_dashboard()
    return render(
        request,
        "closure/console/flow.html",
        {
            "state": state,
            "statuses": flow_statuses(state, dashboard),
            "dashboard": dashboard,
            "health_form": HealthBuildForm(),
            "send_form": AlertSendForm()
            if request.user.has_perm("closure.add_healthalert")
            else None,
            "nav": "flow",
        },
    )


# -- health reports -----------------------------------------------------------------------------


@console_view(get="closure.view_healthreport", post="closure.add_healthreport")
def health_list(request):
    """GET: the reports, filtered and paginated. POST: build a health report."""
    form = HealthBuildForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            report, status = service_call(
                form,
                lambda: health_report_build(
                    actor=request.user, parameters=HealthParameters(**form.validated)
                ),
            )
            if report is not None:
                messages.success(
                    request,
                    f"Health report built: {report.alert_level}, "
                    f"{plural(report.alert_count, 'finding')}.",
                )
                return redirect("console:health-detail", health_id=report.health_id)
        else:
            status = INVALID
    context = filtered_page(
        request,
        HealthReportFilterSet,
        HealthReport.objects.select_related("generated_by").order_by("-generated_at", "-id"),
    )
    return render(
        request,
        "closure/console/health_list.html",
        {**context, "form": form, "nav": "health"},
        status=status,
    )


@console_view(get="closure.view_healthreport")
def health_detail(request, health_id: str):
    report = get_object_or_404(
        HealthReport.objects.select_related("generated_by"), health_id=health_id
    )
    alerts = (
        report.alerts.select_related("created_by")
        .prefetch_related("deliveries")
        .order_by("-created_at", "-id")[:20]
    )
    return render(
        request,
        "closure/console/health_detail.html",
        {
            "report": report,
            "alerts": alerts,
            "send_form": AlertSendForm(initial={"health_id": report.health_id})
            if request.user.has_perm("closure.add_healthalert")
            else None,
            "alerts_url": reverse("console:alert-list") + f"?health_id={report.health_id}",
            "nav": "health",
        },
    )
