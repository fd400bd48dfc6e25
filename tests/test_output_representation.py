"""One output representation per record: a list, a detail, an action's answer and the evidence
show an execution record (and a worker run) the same way, from one function."""

from datetime import UTC, datetime

import pytest

from closure.api.serializers import ExecutionRecordSerializer, WorkerRunSerializer
from closure.choices import MetadataKind
from closure.models import Evidence, ExecutionRecord, WorkerRun
from closure.services.attempts import execution_serialize
from closure.services.worker_runs import worker_run_serialize
from closure.worker import WorkerOptions, worker_run_execute
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

WHOLE_SECOND = datetime(2026, 11, 27, 9, 17, tzinfo=UTC)


@pytest.fixture
def live_run(operator, due_retry):
    """A live run that sent one retry to the local receiver."""
    return worker_run_execute(
        actor=operator, options=WorkerOptions(execute=True, retry_plan_id=due_retry.retry_plan_id)
    )


def test_execution_records_look_the_same_in_lists_details_answers_and_evidence(
    operator, auditor, live_run
):
    # given the execution record of a live run's retry, whose evidence records it as it is
    [result] = live_run.results
    record = ExecutionRecord.objects.get(execution_id=result.execution.execution_id)
    evidence = Evidence.objects.get(
        metadata_kind=MetadataKind.EXECUTION_RECORD, session_id=record.execution_id
    )
    assert evidence.payload["subject"] == execution_serialize(record)
    # (moved to a whole second: where a second way of writing timestamps would show)
    ExecutionRecord.objects.filter(pk=record.pk).update(executed_at=WHOLE_SECOND)
    expected = execution_serialize(ExecutionRecord.objects.get(pk=record.pk))
    assert expected["executed_at"] == "2026-11-27T09:17:00.000000Z"

    # when the API lists it and shows it
    listed = client_for(auditor).get("/api/v1/execution-records/", {"trigger": "retry"}).json()
    detail = client_for(auditor).get(f"/api/v1/execution-records/{record.execution_id}/").json()

    # then both are the one representation
    assert listed["results"] == [expected]
    assert detail == expected
    # and the schema's fields are exactly its keys, in its order
    assert list(ExecutionRecordSerializer.Meta.fields) == list(expected)


def test_worker_runs_look_the_same_in_lists_details_and_answers(operator, auditor, live_run):
    # given a finished live run, whose evidence records it as it is
    run = WorkerRun.objects.get(run_id=live_run.run.run_id)
    evidence = Evidence.objects.get(metadata_kind=MetadataKind.WORKER_RUN, session_id=run.run_id)
    expected = worker_run_serialize(run)
    assert {key: evidence.payload["subject"][key] for key in expected} == expected
    # (moved to whole seconds: where a second way of writing timestamps would show)
    WorkerRun.objects.filter(pk=run.pk).update(started_at=WHOLE_SECOND, finished_at=WHOLE_SECOND)
    expected = worker_run_serialize(WorkerRun.objects.get(pk=run.pk))

    # when the API lists it and shows it
    listed = client_for(auditor).get("/api/v1/worker-runs/").json()
    detail = client_for(auditor).get(f"/api/v1/worker-runs/{run.run_id}/").json()

    # then both are the one representation
    assert listed["results"] == [expected]
    assert detail == expected
    assert list(WorkerRunSerializer.Meta.fields) == list(expected)
