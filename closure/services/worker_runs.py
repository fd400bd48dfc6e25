"""The writes of the retry worker: a run's record from start to finish, its claims of due
decisions, its heartbeat, and the reaping of runs whose worker died.

Each function is one short transaction (or runs inside the caller's, where it says so); none
calls a connector. Lock order, as everywhere: pending decisions, their deliveries, then the
connectors' circuits.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from closure.choices import (
    DecisionStatus,
    DeliveryStatus,
    ExecutionTrigger,
    MetadataKind,
    SkipReason,
    WorkerRunStatus,
)
from closure.evidence.canonical import isoformat
from closure.evidence.ledger import EvidenceFilters, evidence_append
from closure.models import (
    AlertDelivery,
    Evidence,
    ExecutionRecord,
    RetryDecision,
    RetryPlan,
    WorkerRun,
)
from closure.services.attempts import (
    DELIVERY_LOCKED_FIELDS,
    ClaimedAttempt,
    attempts_claim,
    attempts_renew,
    execution_skip,
)
from closure.services.circuits import circuit_admit, circuits_ensure, circuits_locked
from closure.services.common import signer_of


def retry_decision_serialize(decision: RetryDecision) -> dict:
    """The public view of a due decision, as a run reports what it selected."""
    delivery = decision.delivery
    return {
        "retry_plan_id": decision.plan.retry_plan_id,
        "delivery_id": delivery.delivery_id,
        "health_id": delivery.alert.health.health_id,
        "alert_id": delivery.alert.alert_id,
        "provider": delivery.provider,
        "action": decision.action,
        "reason": decision.reason,
        "retry_count": decision.retry_count,
        "next_retry_at": isoformat(decision.next_retry_at),
    }


def worker_run_serialize(run: WorkerRun) -> dict:
    return {
        "run_id": run.run_id,
        "dry_run": run.dry_run,
        "status": run.status,
        "started_at": isoformat(run.started_at),
        "finished_at": isoformat(run.finished_at),
        "started_by": run.started_by.get_username(),
        "retry_plan_id": run.retry_plan.retry_plan_id if run.retry_plan_id else None,
        "parameters": run.parameters,
        "schedule": run.schedule,
        "summary": run.summary,
        "selected_retries": run.selected_retries,
    }


WORKER_RUN_SCHEMA_VERSION = (
    "cavra.go-backend-pilot.rollback-drill-executive-health-alert-delivery-retry-worker-run.v1"
)
WORKER_RUN_CONTROLS = [
    "A dry run calls no connector and changes no record; a live run needs execute=true.",
    "Due retries are claimed under row locks, so two runs never send the same retry.",
    "Connector calls happen outside any transaction; each outcome is recorded with its "
    "evidence row in the hash-chained ledger.",
    "The actor is the authenticated user; connector secrets never appear.",
]


def worker_run_present(run: WorkerRun, *, follow_up_actions: list[dict] | None = None) -> dict:
    """A run as the API shows it: its stored view (the one its evidence holds) plus the
    reference implementation's fields that have a true value here."""
    body = worker_run_serialize(run)
    body["schema_version"] = WORKER_RUN_SCHEMA_VERSION
    # A run has at most one plan: the one it built or was given (a dry run without
    # retry_plan_id previews and stores none).
    body["summary"] = {**run.summary, "retry_plan_count": 1 if run.retry_plan_id else 0}
    if follow_up_actions is not None:
        body["follow_up_actions"] = follow_up_actions
    body["controls"] = WORKER_RUN_CONTROLS
    return body


@dataclass(frozen=True)
class WorkerRunSetup:
    """What a run records about itself when it starts: who started it, for which plan, with
    which parameters (its provider scope among them) and on which schedule."""

    actor: Any
    plan: RetryPlan | None
    parameters: dict
    schedule: dict


@dataclass(frozen=True)
class WorkerRunEnding:
    """How a run ends: its status, the counts of its summary and the decisions it selected."""

    status: str
    summary: dict
    selected: list


def worker_run_create(*, setup: WorkerRunSetup, now: datetime, dry_run: bool) -> WorkerRun:
    """A new run, `running` until it is finished. Runs inside the caller's transaction."""
    return WorkerRun.objects.create(
        dry_run=dry_run,
        started_at=now,
        heartbeat_at=now,
        started_by=setup.actor,
        retry_plan=setup.plan,
        schedule=setup.schedule,
        parameters=setup.parameters,
    )


def worker_run_start(*, setup: WorkerRunSetup, now: datetime) -> WorkerRun:
    """Record a live run before its first claim, so its claims and attempts can name it."""
    with transaction.atomic(durable=True):
        return worker_run_create(setup=setup, now=now, dry_run=False)


def _run_evidence(
    run: WorkerRun,
    *,
    actor,
    provider: str,
    decision_count: int,
    blocked_count: int,
    approval_required_count: int,
    now: datetime,
) -> Evidence:
    return evidence_append(
        kind=MetadataKind.WORKER_RUN,
        session_id=run.run_id,
        signer=signer_of(actor),
        subject=worker_run_serialize(run),
        filters=EvidenceFilters(provider=provider, dry_run=run.dry_run),
        decision_count=decision_count,
        blocked_count=blocked_count,
        approval_required_count=approval_required_count,
        now=now,
    )


def _run_finish(run: WorkerRun, *, actor, ending: WorkerRunEnding) -> Evidence:
    """Close the run with its outcome and append its evidence row (caller's transaction)."""
    now = timezone.now()
    summary = ending.summary
    run.status = ending.status
    run.finished_at = now
    run.heartbeat_at = now
    run.summary = summary
    run.selected_retries = ending.selected
    run.save(update_fields=["status", "finished_at", "heartbeat_at", "summary", "selected_retries"])
    return _run_evidence(
        run,
        actor=actor,
        provider=",".join(run.parameters["provider"]),
        decision_count=summary["selected_retry_count"],
        blocked_count=summary["failed_count"] + summary["skipped_count"],
        approval_required_count=summary["selected_retry_count"] if run.dry_run else 0,
        now=now,
    )


def worker_run_record_dry(
    *, setup: WorkerRunSetup, now: datetime, ending: WorkerRunEnding
) -> tuple[WorkerRun, Evidence]:
    """Record a finished dry run and its evidence together: both or neither."""
    with transaction.atomic(durable=True):
        run = worker_run_create(setup=setup, now=now, dry_run=True)
        evidence = _run_finish(run, actor=setup.actor, ending=ending)
    return run, evidence


def worker_run_finish(
    *, run: WorkerRun, actor, ending: WorkerRunEnding
) -> tuple[WorkerRun, Evidence]:
    """Close a live run with its outcome and evidence; the run is re-read under its lock, so
    a reaper that took it for dead meanwhile is waited for."""
    with transaction.atomic(durable=True):
        run = (
            WorkerRun.objects.select_for_update(of=("self",))
            .select_related("started_by", "retry_plan")
            .get(pk=run.pk)
        )
        evidence = _run_finish(run, actor=actor, ending=ending)
    return run, evidence


def retry_skip_reason(delivery: AlertDelivery) -> str:
    """Why a due retry of this delivery is recorded as skipped rather than sent ("": it is
    sent, unless its lease is held or its circuit is open)."""
    if delivery.status == DeliveryStatus.DELIVERED:
        return SkipReason.ALREADY_DELIVERED
    if delivery.status != DeliveryStatus.FAILED:
        return SkipReason.NO_LONGER_FAILED
    if not delivery.connector.enabled:
        return SkipReason.CONNECTOR_DISABLED
    return ""


def _lock_due(
    *, now: datetime, limit: int, retry_plan_id: str, providers: Sequence[str]
) -> tuple[list[RetryDecision], dict]:
    """Lock up to `limit` due decisions (SKIP LOCKED: another worker's claim is simply passed
    over), then their deliveries, then their connectors' circuits (created if missing)."""
    decisions = list(
        RetryDecision.objects.due(now, retry_plan_id=retry_plan_id, providers=providers)
        .select_for_update(skip_locked=True, of=("self",))
        .select_related("plan")
        .defer("plan__policy", "plan__provider_filter")[:limit]
    )
    deliveries = {
        d.pk: d
        for d in AlertDelivery.objects.select_for_update(of=("self",))
        .select_related("alert__health", "connector")
        .only(*DELIVERY_LOCKED_FIELDS, "connector__enabled")
        .filter(pk__in=[decision.delivery_id for decision in decisions])
        .order_by("pk")
    }
    circuits_ensure([d.connector_id for d in deliveries.values()])
    circuits = circuits_locked([d.connector_id for d in deliveries.values()])
    for decision in decisions:
        decision.delivery = deliveries[decision.delivery_id]
    return decisions, circuits


def _take(run: WorkerRun, admitted: list[RetryDecision], now: datetime) -> list[ClaimedAttempt]:
    """Mark the admitted decisions in flight for `run` and take their deliveries' leases."""
    WorkerRun.objects.filter(pk=run.pk).update(heartbeat_at=now)
    RetryDecision.objects.filter(pk__in=[d.pk for d in admitted]).update(
        status=DecisionStatus.IN_FLIGHT, claimed_by_run=run
    )
    return attempts_claim(
        deliveries=[d.delivery for d in admitted],
        owner=run.run_id,
        trigger=ExecutionTrigger.RETRY,
        now=now,
        decision_pks=[d.pk for d in admitted],
        worker_run_pk=run.pk,
    )


def worker_run_claim(
    *,
    run: WorkerRun,
    actor,
    limit: int,
    retry_plan_id: str = "",
    providers: Sequence[str] = (),
) -> tuple[list[tuple[ClaimedAttempt, dict]], list[tuple[dict, ExecutionRecord]]]:
    """Claim up to `limit` due decisions for `run` in one short transaction.

    Lock order: pending decisions, their deliveries, then the connectors' circuits. A decision
    whose delivery changed is recorded as skipped; one whose delivery another attempt holds,
    or whose connector's circuit is open, stays pending. The admitted decisions and their
    leases are taken with one statement each.

    Returns the claimed attempts with their decisions, and the skipped decisions with their
    `skipped` execution records.
    """
    claims: list[tuple[ClaimedAttempt, dict]] = []
    skipped: list[tuple[dict, ExecutionRecord]] = []
    admitted: list[RetryDecision] = []
    now = timezone.now()
    with transaction.atomic(durable=True):
        decisions, circuits = _lock_due(
            now=now, limit=limit, retry_plan_id=retry_plan_id, providers=providers
        )
        for decision in decisions:
            delivery = decision.delivery
            if delivery.lease_is_held(now):
                continue  # a manual retry is in flight; the decision stays pending
            skip_reason = retry_skip_reason(delivery)
            if skip_reason:
                record = execution_skip(
                    delivery=delivery,
                    decision=decision,
                    actor=actor,
                    reason=skip_reason,
                    worker_run_pk=run.pk,
                    now=now,
                )
                skipped.append((retry_decision_serialize(decision), record))
                continue
            if not circuit_admit(circuits[delivery.connector_id], actor=actor, now=now):
                continue  # circuit open: the decision waits for the cool-down
            admitted.append(decision)
        if admitted:
            claims = [
                (claim, retry_decision_serialize(decision))
                for claim, decision in zip(_take(run, admitted, now), admitted, strict=True)
            ]
    return claims, skipped


def worker_run_renew(*, run: WorkerRun, claims: list[ClaimedAttempt]) -> list[bool]:
    """Beat the run's heartbeat and extend the leases of its next wave; False for each lease
    that was lost. One commit for both: every commit waits for the disk."""
    with transaction.atomic(durable=True):
        WorkerRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
        return attempts_renew(claims)


def worker_runs_reap(*, actor, now: datetime | None = None) -> list[str]:
    """Mark live runs whose heartbeat is older than the attempt lease as `abandoned`.

    Their in-flight decisions whose delivery lease has expired go back to `pending`, so the
    next run claims them again. Each abandoned run gets its evidence row.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.CAVRA_ATTEMPT_LEASE_SECONDS)
    reaped = []
    with transaction.atomic(durable=True):
        # Lock only the run rows: PostgreSQL refuses FOR UPDATE on the nullable side of the
        # outer join that select_related("retry_plan") adds.
        stale_runs = list(
            WorkerRun.objects.stale(stale_before)
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("started_by", "retry_plan")
            .order_by("pk")
        )
        for run in stale_runs:
            released_count = RetryDecision.objects.in_flight().filter(claimed_by_run=run).count()
            run.status = WorkerRunStatus.ABANDONED
            run.finished_at = max(now, run.started_at)
            run.summary = {**run.summary, "in_flight_decision_count": released_count}
            run.save(update_fields=["status", "finished_at", "summary"])
            _run_evidence(
                run,
                actor=actor,
                provider="",
                decision_count=released_count,
                blocked_count=released_count,
                approval_required_count=0,
                now=now,
            )
            reaped.append(run.run_id)
        # In-flight decisions of runs that are no longer running, once their delivery's lease
        # has expired, go back to `pending` for the next run to claim.
        RetryDecision.objects.in_flight().exclude(
            claimed_by_run__status=WorkerRunStatus.RUNNING
        ).exclude(delivery__leased_until__gt=now).update(
            status=DecisionStatus.PENDING, claimed_by_run=None
        )
    return reaped
