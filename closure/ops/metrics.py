"""Prometheus metrics at `/metrics`.

Two sources:
- request latency, a histogram this process records. Under gunicorn set
  `PROMETHEUS_MULTIPROC_DIR` (cavra/gunicorn.conf.py does): every worker then writes its samples
  to files there and a scrape adds them up, whichever worker answers it.
- the state of the reporting loop, read from the database at scrape time (a fixed number of
  grouped queries): attempts by connector and outcome, deliveries by status, retry decisions
  by action, worker runs by status, the closure state. The database is shared by every app
  server and worker, so these figures are the same whichever process is scraped.

The endpoint needs `Authorization: Bearer <CAVRA_METRICS_TOKEN>` or a staff session.
"""

import hmac
import os
import time

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from closure.ops.errors import problem_json

REQUEST_LATENCY = Histogram(
    "cavra_http_request_duration_seconds",
    "Time to answer an HTTP request, by route (URL name) and status class.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class RequestLatencyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        # The URL name, not the path: paths carry public IDs, which would explode the series.
        route = (match.view_name if match else "") or "unmatched"
        REQUEST_LATENCY.labels(request.method, route, f"{response.status_code // 100}xx").observe(
            time.perf_counter() - started
        )
        return response


def _label(value) -> str:
    # Worker runs are labelled by mode, which is stored as the boolean `dry_run`.
    if isinstance(value, bool):
        return "dry_run" if value else "live"
    return value


def _grouped_families():
    """The families read as one grouped count each: (family, name, help, model, label →
    field), in the order they are scraped."""
    from closure import models

    return (
        (
            CounterMetricFamily,
            "cavra_connector_attempts",
            "Delivery attempts (execution records) by connector and outcome.",
            models.ExecutionRecord,
            {"provider": "provider", "outcome": "execution_status"},
        ),
        (
            GaugeMetricFamily,
            "cavra_alert_deliveries",
            "Alert deliveries by current status.",
            models.AlertDelivery,
            {"status": "status"},
        ),
        (
            CounterMetricFamily,
            "cavra_retry_decisions",
            "Retry decisions ever planned, by action and current status.",
            models.RetryDecision,
            {"action": "action", "status": "status"},
        ),
        (
            CounterMetricFamily,
            "cavra_worker_runs",
            "Retry worker runs by status and mode.",
            models.WorkerRun,
            {"status": "status", "mode": "dry_run"},
        ),
    )


class ReportingLoopCollector:
    """The reporting loop's state, from the database, at scrape time."""

    def collect(self):
        from closure.selectors import closure_dashboard

        for family_class, name, documentation, model, fields in _grouped_families():
            family = family_class(name, documentation, labels=list(fields))
            for row in model.objects.values(*fields.values()).annotate(n=Count("id")):
                family.add_metric([_label(row[field]) for field in fields.values()], row["n"])
            yield family

        dashboard = closure_dashboard()
        closed = GaugeMetricFamily(
            "cavra_closure_closed", "1 when the reporting loop is closed, 0 while risks are open."
        )
        closed.add_metric([], 1 if dashboard["closure_state"] == "closed" else 0)
        yield closed
        open_risks = GaugeMetricFamily(
            "cavra_closure_open_risks",
            "Records behind each open closure risk.",
            labels=["code", "severity"],
        )
        for risk in dashboard["risks"]:
            open_risks.add_metric([risk["code"], risk["severity"]], risk["count"])
        yield open_risks


def scrape_allowed(request) -> bool:
    expected = settings.CAVRA_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if expected and header.startswith("Bearer "):
        return hmac.compare_digest(header.removeprefix("Bearer ").strip(), expected)
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_LATENCY)
    registry.register(ReportingLoopCollector())
    return registry


@login_not_required
@never_cache
def metrics(request):
    # Authentication first: an anonymous caller learns nothing, not even the allowed methods.
    if not scrape_allowed(request):
        return problem_json(
            status=401,
            code="not_authenticated",
            title="Authentication required",
            detail="Send the metrics bearer token, or sign in as staff.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if request.method != "GET":
        return problem_json(
            status=405,
            code="method_not_allowed",
            title="Method not allowed",
            detail=f'Method "{request.method}" not allowed.',
            headers={"Allow": "GET"},
        )
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
