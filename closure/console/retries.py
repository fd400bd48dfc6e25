"""Console pages for retry plans, worker runs (dry run, then a confirmed live run) and
execution records."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from closure.console import selectors
from closure.console.forms import DryRunForm, ExecuteLiveForm, RetryPlanForm
from closure.console.views import (
    CONFLICT,
    INVALID,
    announce,
    console_view,
    filtered_page,
    form_action,
    list_page,
    offered_form,
    plural,
    service_call,
    timeline_context,
)
from closure.evidence.canonical import canonical_json, sha256_hex
from closure.inputs.filtersets import (
    ExecutionRecordFilterSet,
    RetryPlanFilterSet,
    WorkerRunFilterSet,
)
from closure.models import ExecutionRecord, RetryDecision, RetryPlan, WorkerRun
from closure.services.retries import RetryPolicy, retry_plan_create
from closure.worker import WorkerOptions, worker_run_execute

# -- retry plans --------------------------------------------------------------------------------


@console_view(get="closure.view_retryplan", post="closure.plan_retry")
def plan_list(request):
    """GET: the plans. POST: plan retries of the failed deliveries with a policy."""
    form = RetryPlanForm(request.POST or None)
    response, status = form_action(
        request,
        form,
        lambda data: retry_plan_create(
            actor=request.user,
            policy=RetryPolicy(**data.get("retry_policy", {})),
            providers=[p for p in data["provider"].split(",") if p],
            health_id=data["health_id"],
        ),
        lambda outcome: _plan_made(request, outcome[0]),
    )
    if response is not None:
        return response
    return list_page(
        request,
        "closure/console/plan_list.html",
        RetryPlanFilterSet,
        RetryPlan.objects.select_related("generated_by").newest_first(),
        {"form": form, "nav": "plans"},
        status=status,
    )


def _plan_made(request, plan: RetryPlan):
    return announce(
        request,
        f"Retry plan made: {plural(plan.decision_count, 'decision')} — "
        f"{plan.retryable_count} retry, {plan.waiting_count} wait, "
        f"{plan.suppressed_count} suppress. Nothing was sent.",
        "console:plan-detail",
        retry_plan_id=plan.retry_plan_id,
    )


@console_view(get="closure.view_retryplan")
def plan_detail(request, retry_plan_id: str):
    plan = get_object_or_404(
        RetryPlan.objects.select_related("generated_by"), retry_plan_id=retry_plan_id
    )
    decisions = (
        RetryDecision.objects.filter(plan=plan)
        .select_related("delivery__alert__health", "latest_execution")
        .order_by("id")
    )
    return render(
        request,
        "closure/console/plan_detail.html",
        {
            "plan": plan,
            "decisions": decisions,
            "dry_run_form": offered_form(
                request,
                "closure.plan_retry",
                DryRunForm,
                initial={"retry_plan_id": plan.retry_plan_id},
            ),
            "nav": "plans",
        },
    )


# -- worker runs --------------------------------------------------------------------------------


def _run_summary(run: WorkerRun) -> str:
    summary = run.summary
    if run.dry_run:
        held = summary.get("held_retry_count", 0)
        skipped = summary.get("skipped_count", 0)
        return (
            f"Dry run: {plural(summary.get('selected_retry_count', 0), 'alert')} would be sent"
            + (f", {skipped} would be skipped" if skipped else "")
            + (f", {held} would wait (connector circuit open or attempt in flight)" if held else "")
            + "; 0 sent, 0 failed, 0 skipped. Nothing was changed."
        )
    accepted = summary.get("accepted_count", 0)
    return (
        f"Live run {run.status}: {summary.get('delivered_count', 0)} sent and delivered, "
        f"{summary.get('failed_count', 0)} failed, {summary.get('skipped_count', 0)} skipped"
        + (f", {accepted} accepted (not confirmed)" if accepted else "")
        + "."
    )


@console_view(get="closure.view_workerrun", post="closure.plan_retry")
def run_list(request):
    """GET: the worker runs. POST: a dry run of a retry plan (never sends anything)."""
    form = DryRunForm(request.POST or None, initial=_latest_plan_initial())
    response, status = form_action(
        request,
        form,
        lambda data: worker_run_execute(
            actor=request.user,
            options=WorkerOptions(
                execute=False,
                retry_plan_id=data["retry_plan_id"],
                max_retry_deliveries=data["max_retry_deliveries"],
                providers=tuple(p for p in data["provider"].split(",") if p),
                timeout_seconds=data["timeout_seconds"],
            ),
        ),
        lambda outcome: _run_done(request, outcome.run),
    )
    if response is not None:
        return response
    return list_page(
        request,
        "closure/console/run_list.html",
        WorkerRunFilterSet,
        WorkerRun.objects.select_related("started_by", "retry_plan").newest_first(),
        {"form": form, "nav": "runs"},
        status=status,
    )


def _run_done(request, run: WorkerRun):
    return announce(request, _run_summary(run), "console:run-detail", run_id=run.run_id)


def _latest_plan_initial() -> dict:
    plan = selectors.recent_plans().first()
    return {"retry_plan_id": plan.retry_plan_id} if plan else {}


@console_view(get="closure.view_workerrun")
def run_detail(request, run_id: str):
    run = get_object_or_404(
        WorkerRun.objects.select_related("started_by", "retry_plan"), run_id=run_id
    )
    return render(
        request,
        "closure/console/run_detail.html",
        {
            "run": run,
            "summary_text": _run_summary(run) if run.finished_at else "",
            "executions": run.executions.select_related("delivery").order_by("executed_at", "id"),
            "can_execute": request.user.has_perm("closure.execute_retry"),
            "nav": "runs",
        },
    )


def live_selection(run: WorkerRun) -> tuple[WorkerOptions, list[RetryDecision], str]:
    """What a live run with this dry run's options would send now, and its digest.

    The decisions come from the worker's own selection (`RetryDecision.objects.due`, in its
    order), so the page shows exactly the rows the live run claims; the digest lets the POST
    check that the list did not change between reading and confirming.
    """
    parameters = run.parameters
    options = WorkerOptions(
        execute=True,
        retry_plan_id=run.retry_plan.retry_plan_id,
        max_retry_deliveries=parameters.get("max_retry_deliveries", 25),
        providers=tuple(parameters.get("provider") or ()),
        timeout_seconds=parameters.get("timeout_seconds", 10),
    )
    decisions = list(
        RetryDecision.objects.due(
            timezone.now(), retry_plan_id=options.retry_plan_id, providers=options.providers
        ).select_related("plan", "delivery__alert__health", "delivery__connector")[
            : options.max_retry_deliveries
        ]
    )
    digest = sha256_hex(
        canonical_json(
            [[d.plan.retry_plan_id, d.delivery.delivery_id, d.retry_count] for d in decisions]
        )
    )
    return options, decisions, digest


@console_view(get=("closure.view_workerrun", "closure.execute_retry"), post="closure.execute_retry")
def run_execute(request, run_id: str):
    """GET: the explicit confirmation of a live run, listing exactly what it will send.
    POST: run it live, if the list is still the one that was confirmed."""
    run = get_object_or_404(WorkerRun.objects.select_related("retry_plan"), run_id=run_id)
    if not run.dry_run or run.retry_plan is None:
        messages.error(request, "A live run starts from a dry run of a stored retry plan.")
        return redirect("console:run-detail", run_id=run.run_id)
    options, decisions, digest = live_selection(run)
    form = ExecuteLiveForm(request.POST or None, initial={"selection_sha256": digest})
    status = 200
    selection_changed = False
    if request.method == "POST":
        status = INVALID
        if form.is_valid():
            if form.cleaned_data["selection_sha256"] != digest:
                # Show the new list, unconfirmed, with its own digest.
                form = ExecuteLiveForm(initial={"selection_sha256": digest})
                selection_changed = True
                status = CONFLICT
            elif not decisions:
                form.add_error(None, "Nothing is due: a live run would send nothing.")
                status = CONFLICT
            else:
                live = WorkerOptions(
                    execute=True,
                    retry_plan_id=options.retry_plan_id,
                    max_retry_deliveries=len(decisions),
                    providers=options.providers,
                    timeout_seconds=options.timeout_seconds,
                )
                outcome, status = service_call(
                    form, lambda: worker_run_execute(actor=request.user, options=live)
                )
                if outcome is not None:
                    return _run_done(request, outcome.run)
    return render(
        request,
        "closure/console/run_execute.html",
        {
            "run": run,
            "options": options,
            "decisions": decisions,
            "form": form,
            "selection_changed": selection_changed,
            "nav": "runs",
        },
        status=status,
    )


# -- execution records --------------------------------------------------------------------------


@console_view(get="closure.view_executionrecord")
def execution_list(request):
    context = filtered_page(
        request,
        ExecutionRecordFilterSet,
        ExecutionRecord.objects.select_related(
            "delivery__alert__health", "worker_run", "executed_by"
        ).newest_first(),
    )
    rows = (
        context["filterset"].qs
        if context["filterset"].is_valid()
        else ExecutionRecord.objects.none()
    )
    return render(
        request,
        "closure/console/execution_list.html",
        {
            **context,
            **timeline_context(request, rows),
            "admin_url": reverse("admin:closure_executionrecord_changelist"),
            "nav": "executions",
        },
    )


@console_view(get="closure.view_executionrecord")
def execution_detail(request, execution_id: str):
    record = get_object_or_404(
        ExecutionRecord.objects.select_related(
            "delivery__alert__health", "worker_run", "decision__plan", "executed_by"
        ),
        execution_id=execution_id,
    )
    return render(
        request,
        "closure/console/execution_detail.html",
        {"record": record, "nav": "executions"},
    )
