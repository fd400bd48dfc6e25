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
from django.http import HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from closure.console import charts, selectors
from closure.console.forms import AlertSendForm, HealthBuildForm
from closure.inputs.filtersets import HealthReportFilterSet
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


def form_action(request, form, call, done) -> tuple[HttpResponse | None, int]:
    """The POST half of an action page: validate `form`, pass its validated values to `call`
    (the one service of the action) and answer with `done(result)`.

    Returns (response, status). The response is None when the page is to be shown: on GET
    (200), or again with the form's errors (400, 409 for a conflict). `done` turns a result
    away by putting an error on the form and returning None (400).
    """
    if request.method != "POST":
        return None, 200
    if not form.is_valid():
        return None, INVALID
    result, status = service_call(form, lambda: call(form.validated))
    if result is None:
        return None, status
    response = done(result)
    return response, INVALID if response is None else status


def announce(request, message: str, to: str, *args, **kwargs) -> HttpResponse:
    """Say what an action did on the page the redirect leads to (`redirect(to, ...)`), so a
    reload does not repeat the action."""
    messages.success(request, message)
    return redirect(to, *args, **kwargs)


def list_page(request, template: str, filterset_class, queryset, context: dict, *, status=200):
    """A filtered, paginated list page (see `filtered_page`) with its own `context`."""
    page = filtered_page(request, filterset_class, queryset)
    return render(request, template, {**page, **context}, status=status)


def timeline_context(request, executions) -> dict:
    """A list page's chart of the attempts among `executions`, over the period the page asks
    for (`span`), with the page's other query parameters for the links that change only the
    period. One query."""
    span = request.GET.get("span") if request.GET.get("span") in selectors.SPANS else "24h"
    params = request.GET.copy()
    params.pop("span", None)
    params.pop("page", None)
    return {
        "timeline": charts.attempts_timeline_chart(
            selectors.attempts_over_time(executions, span=span), span=span
        ),
        "span": span,
        "span_query": params.urlencode(),
    }


def offered_form(request, permission: str, form_class, **kwargs):
    """A fresh form for a user who may submit it; None (no form on the page) for the others."""
    return form_class(**kwargs) if request.user.has_perm(permission) else None


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
            "send_form": offered_form(request, "closure.add_healthalert", AlertSendForm),
            "nav": "flow",
        },
    )


# -- health reports -----------------------------------------------------------------------------


@console_view(get="closure.view_healthreport", post="closure.add_healthreport")
def health_list(request):
    """GET: the reports, filtered and paginated. POST: build a health report."""
    form = HealthBuildForm(request.POST or None)
    response, status = form_action(
        request,
        form,
        lambda data: health_report_build(actor=request.user, parameters=HealthParameters(**data)),
        lambda report: announce(
            request,
            f"Health report built: {report.alert_level}, {plural(report.alert_count, 'finding')}.",
            "console:health-detail",
            health_id=report.health_id,
        ),
    )
    if response is not None:
        return response
    return list_page(
        request,
        "closure/console/health_list.html",
        HealthReportFilterSet,
        HealthReport.objects.select_related("generated_by").newest_first(),
        {"form": form, "nav": "health"},
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
        .newest_first()[:20]
    )
    return render(
        request,
        "closure/console/health_detail.html",
        {
            "report": report,
            "alerts": alerts,
            "send_form": offered_form(
                request,
                "closure.add_healthalert",
                AlertSendForm,
                initial={"health_id": report.health_id},
            ),
            "alerts_url": reverse("console:alert-list") + f"?health_id={report.health_id}",
            "nav": "health",
        },
    )
