import pytest
from django.urls import reverse

from tests.conftest import client_for
from tests.factories import (
    make_decision,
    make_retry_plan,
    make_worker_run,
)

pytestmark = pytest.mark.django_db


def test_every_console_page_renders_for_an_operator(operator, report, failed_delivery, offline_webhook):
    plan = make_retry_plan(actor=operator)
    make_decision(plan=plan, delivery=failed_delivery)
    run = make_worker_run(actor=operator, retry_plan=plan)
    c = client_for(operator)
    ex = failed_delivery.executions.get()
    urls = [
        reverse("console:flow"),
        reverse("console:health-list"),
        reverse("console:health-detail", args=[report.health_id]),
        reverse("console:alert-list"),
        reverse("console:alert-detail", args=[failed_delivery.alert.alert_id]),
        reverse("console:delivery-list"),
        reverse("console:delivery-detail", args=[failed_delivery.delivery_id]),
        reverse("console:acknowledgement-list"),
        reverse("console:plan-list"),
        reverse("console:plan-detail", args=[plan.retry_plan_id]),
        reverse("console:run-list"),
        reverse("console:run-detail", args=[run.run_id]),
        reverse("console:run-execute", args=[run.run_id]),
        reverse("console:execution-list"),
        reverse("console:execution-detail", args=[ex.execution_id]),
        reverse("console:closure"),
        reverse("console:review-list"),
        reverse("console:evidence-list"),
        reverse("console:evidence-verify"),
        reverse("console:delivery-list") + "?span=14d",
        reverse("console:execution-list") + "?execution_status=failed",
    ]
    for u in urls:
        r = c.get(u)
        assert r.status_code == 200, (u, r.status_code, r.content[:3000])
