"""`manage.py run_retry_worker`: a dry run unless --execute, and refusals as command errors."""

import json

import pytest
from django.core.management import CommandError, call_command

from closure.choices import MetadataKind
from closure.models import AlertDelivery, Evidence, ExecutionRecord, WorkerRun

pytestmark = pytest.mark.django_db


def test_run_retry_worker_is_a_dry_run_unless_execute(operator, due_retry, receiver, capsys):
    call_command("run_retry_worker", "--user", "olivia")

    line = json.loads(capsys.readouterr().out)
    run = WorkerRun.objects.get()
    assert run.dry_run is True
    assert line["run_id"] == run.run_id
    assert line["status"] == "succeeded"
    assert line["selected_retry_count"] == 1
    assert len(receiver.log) == 0
    assert ExecutionRecord.objects.filter(trigger="retry").count() == 0


def test_run_retry_worker_execute_delivers_through_the_receiver(
    operator, due_retry, receiver, capsys
):
    receiver.expect_oneshot_request("/hook", method="POST").respond_with_data("ok")

    call_command("run_retry_worker", "--user", "olivia", "--execute")

    line = json.loads(capsys.readouterr().out)
    assert line["status"] == "succeeded"
    assert line["delivered_count"] == 1
    assert len(receiver.log) == 1
    assert AlertDelivery.objects.get().status == "delivered"
    assert Evidence.objects.filter(metadata_kind=MetadataKind.WORKER_RUN).count() == 1


def test_run_retry_worker_refuses_live_runs_without_execute_retry(planner_only):
    with pytest.raises(CommandError, match="lacks the execute_retry permission"):
        call_command("run_retry_worker", "--user", "paula", "--execute")
    assert WorkerRun.objects.count() == 0


def test_run_retry_worker_turns_an_unknown_provider_into_a_command_error(operator):
    with pytest.raises(CommandError, match="unknown provider: nope"):
        call_command("run_retry_worker", "--user", "olivia", "--provider", "nope")
    assert WorkerRun.objects.count() == 0
