"""An operator without execute_retry may dry-run, but cannot run the worker live."""

from django.contrib.auth.models import Permission

from closure.models import ExecutionRecord, WorkerRun
from closure.roles import OPERATORS, ROLE_PERMISSIONS
from tests.e2e.conftest import follow, log_in
from tests.factories import make_user


def test_operator_without_execute_retry_cannot_run_live(roles, open_session, due_retry):
    # given a user with every operator permission but execute_retry, and a due retry
    user = make_user("paula")
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="closure",
            codename__in=[p for p in ROLE_PERMISSIONS[OPERATORS] if p != "execute_retry"],
        )
    )
    session = open_session("no-live-run")
    page = session.page
    log_in(session, "/console/", "paula")

    # when they dry-run the plan
    page.goto("/console/worker-runs/")
    follow(page.locator("#run-form").get_by_role("button", name="Dry run"))
    assert page.locator(".message-success").inner_text().startswith("Dry run: 1 alert would be")
    session.shot("dry-run-without-execute")

    # then the page offers no live run, and says why
    assert page.get_by_role("link", name="Execute live…").count() == 0
    assert "needs the execute_retry permission" in page.locator(".callout").inner_text()
    # and the confirmation page and its POST both refuse them
    run = WorkerRun.objects.get()
    execute_url = f"/console/worker-runs/{run.run_id}/execute/"
    assert page.request.get(execute_url).status == 403
    token = page.context.cookies()
    csrf = next(c["value"] for c in token if c["name"] == "csrftoken")
    refused = page.request.post(
        execute_url,
        form={"confirm": "on", "selection_sha256": "0" * 64},
        headers={"X-CSRFToken": csrf, "Referer": page.url},
    )
    assert refused.status == 403
    # and nothing was sent
    assert list(WorkerRun.objects.values_list("dry_run", flat=True)) == [True]
    assert ExecutionRecord.objects.filter(worker_run__isnull=False).count() == 0
    page.goto("/console/")
    assert page.get_by_role("link", name="Execute live…").count() == 0
    session.shot("flow-without-execute")
    assert session.problems == []
