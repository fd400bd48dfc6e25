"""The retry worker: executes due `retry` decisions, dry run unless told to go live.

Live runs claim due decisions in batches with `SELECT … FOR UPDATE SKIP LOCKED` in a short
transaction, take each delivery's attempt lease, call connectors outside any transaction in
waves of `send_concurrency`, and record each wave's outcomes together through the attempt
service (one transaction per wave, each attempt fenced by its lease version). Any number of
workers can share one PostgreSQL: they coordinate only through these row locks and leases. The
API's POST retry-worker-run and `manage.py run_retry_worker` both run this `Worker`.
"""

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from closure.choices import (
    DecisionAction,
    DecisionStatus,
    DeliveryStatus,
    ExecutionStatus,
    ExecutionTrigger,
    HoldReason,
    MetadataKind,
    SkipReason,
    WorkerRunStatus,
)
from closure.connectors import SendOutcome
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
    attempts_prepare,
    attempts_record,
    attempts_renew,
    execution_skip,
)
from closure.services.circuits import (
    circuit_admit,
    circuit_would_admit,
    circuits_ensure,
    circuits_locked,
)
from closure.services.common import signer_of
from closure.services.errors import NotFound
from closure.services.retries import (
    RetryPolicy,
    retry_plan_compute,
    retry_plan_create,
    retry_scope_validate,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    execute: bool = False
    retry_plan_id: str = ""
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    max_retry_deliveries: int = 25
    # How many decisions one claim transaction takes; defaults to max_retry_deliveries.
    batch_size: int = 0
    providers: tuple[str, ...] = ()
    timeout_seconds: float = 10
    # Connector calls in flight at once within one worker (threads doing network I/O only).
    send_concurrency: int = 8
    schedule: dict = field(default_factory=dict)


@dataclass
class RetryResult:
    decision: dict
    execution: ExecutionRecord | None = None
    skipped: str = ""


@dataclass
class Wave:
    """Attempts sent together: those whose lease was lost (not sent) and those in flight."""

    lost: list[RetryResult] = field(default_factory=list)
    live: list[tuple[ClaimedAttempt, dict]] = field(default_factory=list)
    sends: list[Future] = field(default_factory=list)
    outcomes: list[SendOutcome] | None = None

    def wait(self) -> list[SendOutcome]:
        """The outcomes of the sends, in the order of `live`, once all have been answered."""
        if self.outcomes is None:
            self.outcomes = [send.result() for send in self.sends]
        return self.outcomes


@dataclass
class WorkerOutcome:
    run: WorkerRun
    run_evidence: Evidence
    plan_public: dict | None
    plan_evidence: Evidence | None
    results: list[RetryResult]


def _decision_public(decision: RetryDecision) -> dict:
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


def _dry_verdict(delivery: AlertDelivery, now) -> tuple[str, str]:
    """What a live run's claim would do with a due retry of this delivery: ("send", ""),
    ("skip", the skip reason it would record) or ("hold", why it would stay pending)."""
    if delivery.lease_is_held(now):
        return "hold", HoldReason.ATTEMPT_IN_FLIGHT
    if delivery.status == DeliveryStatus.DELIVERED:
        return "skip", SkipReason.ALREADY_DELIVERED
    if delivery.status != DeliveryStatus.FAILED:
        return "skip", SkipReason.NO_LONGER_FAILED
    if not delivery.connector.enabled:
        return "skip", SkipReason.CONNECTOR_DISABLED
    circuit = getattr(delivery.connector, "circuit", None)
    if circuit is not None and not circuit_would_admit(
        circuit.state,
        open_until=circuit.open_until,
        probe_in_flight=circuit.probe_in_flight,
        now=now,
    ):
        return "hold", HoldReason.CIRCUIT_OPEN
    return "send", ""


def _run_status(delivered: int, failed: int, skipped: int, selected: int) -> str:
    if selected == 0:
        return WorkerRunStatus.NO_WORK
    if failed == 0 and skipped == 0:
        return WorkerRunStatus.SUCCEEDED
    if delivered == 0 and failed > 0:
        return WorkerRunStatus.FAILED
    return WorkerRunStatus.PARTIAL


def _never() -> bool:
    return False


class Worker:
    """One worker run for one actor with one set of options.

    `on_result` is called after each decision is handled (live counts on a terminal);
    `should_stop` is polled between attempts (SIGTERM: finish the current attempt, release
    the rest of the batch, record the run).
    """

    def __init__(
        self,
        *,
        actor,
        options: WorkerOptions,
        on_result: Callable[[RetryResult], None] | None = None,
        should_stop: Callable[[], bool] = _never,
    ) -> None:
        self.actor = actor
        self.options = options
        self.on_result = on_result or (lambda result: None)
        self.should_stop = should_stop
        # Connector configurations decrypted during this run, by ciphertext (attempts_prepare).
        self.configs: dict[str, dict] = {}

    # -- plan -----------------------------------------------------------------------------

    def _plan(self) -> tuple[RetryPlan | None, dict | None, Evidence | None]:
        options = self.options
        if options.retry_plan_id:
            try:
                plan = RetryPlan.objects.select_related("generated_by").get(
                    retry_plan_id=options.retry_plan_id
                )
            except RetryPlan.DoesNotExist:
                raise NotFound(f"retry plan {options.retry_plan_id!r} does not exist") from None
            evidence = Evidence.objects.filter(
                metadata_kind=MetadataKind.RETRY_PLAN, session_id=plan.retry_plan_id
            ).first()
            return plan, evidence.payload["subject"] if evidence else None, evidence
        if not options.execute:
            return None, None, None
        plan, public = retry_plan_create(
            actor=self.actor, policy=options.retry_policy, providers=list(options.providers)
        )
        evidence = Evidence.objects.get(
            metadata_kind=MetadataKind.RETRY_PLAN, session_id=plan.retry_plan_id
        )
        return plan, public, evidence

    def _due_decisions(self, now):
        """Due `retry` decisions: of the named plan, or of any plan when none was named (a
        newer plan supersedes older pending decisions, so each delivery has at most one)."""
        queryset = RetryDecision.objects.filter(
            status=DecisionStatus.PENDING,
            action=DecisionAction.RETRY,
            next_retry_at__lte=now,
        )
        if self.options.retry_plan_id:
            queryset = queryset.filter(plan__retry_plan_id=self.options.retry_plan_id)
        if self.options.providers:
            queryset = queryset.filter(delivery__provider__in=self.options.providers)
        return queryset.order_by("next_retry_at", "id")

    # -- run ------------------------------------------------------------------------------

    def run(self) -> WorkerOutcome:
        providers = retry_scope_validate(providers=list(self.options.providers), health_id="")
        self.options = replace(self.options, providers=tuple(providers))
        if self.options.execute:
            worker_runs_reap(actor=self.actor)
        plan, plan_public, plan_evidence = self._plan()
        if self.options.execute:
            return self._run_live(plan, plan_public, plan_evidence)
        return self._run_dry(plan, plan_public, plan_evidence)

    def _run_dry(self, plan, plan_public, plan_evidence) -> WorkerOutcome:
        """Report what a live run would do; calls no connector and changes no record.

        Each due retry is judged as a live run's claim judges it (`_dry_verdict`): sent,
        skipped with the reason the live run would record, or held (its connector's circuit
        is open, or another attempt is in flight) with the reason it would stay pending.
        """
        now = timezone.now()
        options = self.options
        if plan is not None:
            due = list(
                self._due_decisions(now).select_related(
                    "plan", "delivery__alert__health", "delivery__connector__circuit"
                )[: options.max_retry_deliveries]
            )
            judged = [(_decision_public(d), _dry_verdict(d.delivery, now)) for d in due]
            counts = {
                "retryable_count": plan.retryable_count,
                "waiting_retry_count": plan.waiting_count,
                "suppressed_retry_count": plan.suppressed_count,
            }
        else:
            preview = retry_plan_compute(
                policy=options.retry_policy,
                providers=list(options.providers),
                health_id="",
                now=now,
            )
            retryable = [p for p in preview if p.action == DecisionAction.RETRY]
            candidates = retryable[: options.max_retry_deliveries]
            deliveries = AlertDelivery.objects.select_related("connector__circuit").in_bulk(
                [p.delivery.pk for p in candidates]
            )
            judged = [
                (
                    {**p.as_dict(options.retry_policy), "retry_plan_id": None},
                    _dry_verdict(deliveries[p.delivery.pk], now),
                )
                for p in candidates
            ]
            counts = {
                "retryable_count": len(retryable),
                "waiting_retry_count": sum(p.action == DecisionAction.WAIT for p in preview),
                "suppressed_retry_count": sum(p.action == DecisionAction.SUPPRESS for p in preview),
            }
        selected = [decision for decision, (verdict, _) in judged if verdict == "send"]
        results = [
            RetryResult(decision=decision, skipped=reason) for decision, (_, reason) in judged
        ]
        skipped = sum(verdict == "skip" for _, (verdict, _) in judged)
        summary = {
            **counts,
            "selected_retry_count": len(selected),
            "delivered_count": 0,
            "accepted_count": 0,
            "failed_count": 0,
            "skipped_count": skipped,
            "held_retry_count": len(judged) - len(selected) - skipped,
        }
        status = WorkerRunStatus.SUCCEEDED if selected else WorkerRunStatus.NO_WORK
        with transaction.atomic(durable=True):
            run = self._create_run(plan, now, dry_run=True)
            evidence = self._finish_run(run, status=status, summary=summary, selected=selected)
        return WorkerOutcome(run, evidence, plan_public, plan_evidence, results)

    def _create_run(self, plan, now, *, dry_run: bool) -> WorkerRun:
        options = self.options
        return WorkerRun.objects.create(
            dry_run=dry_run,
            started_at=now,
            heartbeat_at=now,
            started_by=self.actor,
            retry_plan=plan,
            schedule=options.schedule,
            parameters={
                "max_retry_deliveries": options.max_retry_deliveries,
                "batch_size": self._batch_size(),
                "provider": list(options.providers),
                "timeout_seconds": options.timeout_seconds,
                "retry_plan_id": plan.retry_plan_id if plan else None,
            },
        )

    def _batch_size(self) -> int:
        return min(
            self.options.batch_size or self.options.max_retry_deliveries,
            self.options.max_retry_deliveries,
        )

    def _finish_run(
        self, run: WorkerRun, *, status: str, summary: dict, selected: list
    ) -> Evidence:
        now = timezone.now()
        run.status = status
        run.finished_at = now
        run.heartbeat_at = now
        run.summary = summary
        run.selected_retries = selected
        run.save(
            update_fields=["status", "finished_at", "heartbeat_at", "summary", "selected_retries"]
        )
        return evidence_append(
            kind=MetadataKind.WORKER_RUN,
            session_id=run.run_id,
            signer=signer_of(self.actor),
            subject=worker_run_serialize(run),
            filters=EvidenceFilters(provider=",".join(self.options.providers), dry_run=run.dry_run),
            decision_count=summary["selected_retry_count"],
            blocked_count=summary["failed_count"] + summary["skipped_count"],
            approval_required_count=summary["selected_retry_count"] if run.dry_run else 0,
            now=now,
        )

    def _claim(
        self, run: WorkerRun, limit: int
    ) -> tuple[list[tuple[ClaimedAttempt, dict]], list[RetryResult]]:
        """Claim up to `limit` due decisions in one short transaction.

        Lock order: pending decisions (SKIP LOCKED: another worker's claim is simply passed
        over), then their deliveries, then the connectors' circuits. A decision whose delivery
        changed is recorded as skipped; one whose connector's circuit is open stays pending.
        The admitted decisions and their leases are taken with one statement each.
        """
        claims: list[tuple[ClaimedAttempt, dict]] = []
        skipped: list[RetryResult] = []
        admitted: list[RetryDecision] = []
        now = timezone.now()
        with transaction.atomic(durable=True):
            decisions = list(
                self._due_decisions(now)
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
                delivery = deliveries[decision.delivery_id]
                decision.delivery = delivery
                if delivery.lease_is_held(now):
                    continue  # a manual retry is in flight; the decision stays pending
                skip_reason = ""
                if delivery.status == DeliveryStatus.DELIVERED:
                    skip_reason = SkipReason.ALREADY_DELIVERED
                elif delivery.status != DeliveryStatus.FAILED:
                    skip_reason = SkipReason.NO_LONGER_FAILED
                elif not delivery.connector.enabled:
                    skip_reason = SkipReason.CONNECTOR_DISABLED
                if skip_reason:
                    record = execution_skip(
                        delivery=delivery,
                        decision=decision,
                        actor=self.actor,
                        reason=skip_reason,
                        worker_run_pk=run.pk,
                        now=now,
                    )
                    skipped.append(
                        RetryResult(
                            _decision_public(decision), execution=record, skipped=skip_reason
                        )
                    )
                    continue
                if not circuit_admit(circuits[delivery.connector_id], actor=self.actor, now=now):
                    continue  # circuit open: the decision waits for the cool-down
                admitted.append(decision)
            if admitted:
                WorkerRun.objects.filter(pk=run.pk).update(heartbeat_at=now)
                RetryDecision.objects.filter(pk__in=[d.pk for d in admitted]).update(
                    status=DecisionStatus.IN_FLIGHT, claimed_by_run=run
                )
                leases = attempts_claim(
                    deliveries=[d.delivery for d in admitted],
                    owner=run.run_id,
                    trigger=ExecutionTrigger.RETRY,
                    now=now,
                    decision_pks=[d.pk for d in admitted],
                    worker_run_pk=run.pk,
                )
                claims = [
                    (claim, _decision_public(decision))
                    for claim, decision in zip(leases, admitted, strict=True)
                ]
        return claims, skipped

    def _attempt(self, run: WorkerRun, claim: ClaimedAttempt, decision: dict) -> RetryResult:
        """One attempt on its own: renew the lease, send, record."""
        wave = self._send_wave(run, [(claim, decision)], pool=None, renew=True)
        [result] = self._record_wave(run, wave)
        return result

    def _send_wave(self, run: WorkerRun, claims: list, pool, *, renew: bool) -> Wave:
        """Renew the wave's leases and start its sends (no transaction, no lock).

        `renew=False` is for the wave sent right after its claim: the claim has just taken
        the leases and updated the run's heartbeat, so renewing would change nothing.
        """
        renewed = [True] * len(claims)
        if renew:
            # One commit for both: every commit waits for the disk.
            with transaction.atomic(durable=True):
                WorkerRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
                renewed = attempts_renew([claim for claim, _ in claims])
        wave = Wave()
        for (claim, decision), held in zip(claims, renewed, strict=True):
            if held:
                wave.live.append((claim, decision))
            else:
                wave.lost.append(RetryResult(decision, skipped="lease_lost"))
        if wave.live:
            prepared = attempts_prepare([claim for claim, _ in wave.live], configs=self.configs)
            timeout = self.options.timeout_seconds
            if pool is None:
                wave.outcomes = [p.send(timeout_seconds=timeout) for p in prepared]
            else:
                wave.sends = [pool.submit(p.send, timeout_seconds=timeout) for p in prepared]
        return wave

    def _record_wave(self, run: WorkerRun, wave: Wave) -> list[RetryResult]:
        """Wait for the wave's sends, then record every outcome in one short transaction."""
        results = list(wave.lost)
        if not wave.live:
            return results
        outcomes = wave.wait()
        records = attempts_record(
            sent=[
                (claim, outcome) for (claim, _), outcome in zip(wave.live, outcomes, strict=True)
            ],
            actor=self.actor,
            worker_run=run,
        )
        for (_, decision), record in zip(wave.live, records, strict=True):
            lost = record.execution_status == ExecutionStatus.SUPERSEDED
            results.append(RetryResult(decision, execution=record, skipped="lease_lost" * lost))
        return results

    def _run_live(self, plan, plan_public, plan_evidence) -> WorkerOutcome:
        with transaction.atomic(durable=True):
            run = self._create_run(plan, timezone.now(), dry_run=False)
        results: list[RetryResult] = []
        stopped = False
        concurrency = max(1, self.options.send_concurrency)

        def emit(batch: list[RetryResult]) -> None:
            for result in batch:
                results.append(result)
                self.on_result(result)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            while len(results) < self.options.max_retry_deliveries and not stopped:
                limit = min(self._batch_size(), self.options.max_retry_deliveries - len(results))
                claims, skipped = self._claim(run, limit)
                emit(skipped)
                if not claims and not skipped:
                    break
                # While one wave is recorded, the next one is already on the network: at most
                # `concurrency` sends are in flight, since a wave starts only once the one
                # before it has been answered.
                previous: Wave | None = None
                for start in range(0, len(claims), concurrency):
                    if self.should_stop():
                        attempts_release([claim for claim, _ in claims[start:]])
                        stopped = True
                        break
                    if previous is not None:
                        previous.wait()
                    wave = self._send_wave(
                        run, claims[start : start + concurrency], pool, renew=start > 0
                    )
                    if previous is not None:
                        emit(self._record_wave(run, previous))
                    previous = wave
                if previous is not None:
                    emit(self._record_wave(run, previous))
        statuses = [r.execution.execution_status for r in results if r.execution and not r.skipped]
        delivered = statuses.count(ExecutionStatus.DELIVERED)
        # Taken by the connector but not confirmed (a Teams 202): not a failure of the run.
        accepted = statuses.count(ExecutionStatus.ACCEPTED)
        failed = statuses.count(ExecutionStatus.FAILED)
        skipped_count = len(results) - delivered - accepted - failed
        summary = {
            "retryable_count": plan.retryable_count,
            "waiting_retry_count": plan.waiting_count,
            "suppressed_retry_count": plan.suppressed_count,
            "selected_retry_count": len(results),
            "delivered_count": delivered,
            "accepted_count": accepted,
            "failed_count": failed,
            "skipped_count": skipped_count,
            "stopped_early": stopped,
        }
        with transaction.atomic(durable=True):
            run = (
                WorkerRun.objects.select_for_update(of=("self",))
                .select_related("started_by", "retry_plan")
                .get(pk=run.pk)
            )
            evidence = self._finish_run(
                run,
                status=_run_status(delivered + accepted, failed, skipped_count, len(results)),
                summary=summary,
                selected=[r.decision for r in results],
            )
        return WorkerOutcome(run, evidence, plan_public, plan_evidence, results)


def attempts_release(claims: list[ClaimedAttempt]) -> None:
    """Give claimed but unsent attempts back (the worker is stopping): the decisions return to
    `pending` and the leases are cleared, so another worker takes them at once."""
    with transaction.atomic(durable=True):
        for claim in sorted(claims, key=lambda c: c.decision_pk):
            RetryDecision.objects.filter(
                pk=claim.decision_pk, status=DecisionStatus.IN_FLIGHT
            ).update(status=DecisionStatus.PENDING, claimed_by_run=None)
        for claim in sorted(claims, key=lambda c: c.delivery_pk):
            AlertDelivery.objects.filter(
                pk=claim.delivery_pk, lease_version=claim.lease_version
            ).update(lease_owner="", leased_until=None)


def worker_runs_reap(*, actor, now=None) -> list[str]:
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
            WorkerRun.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("started_by", "retry_plan")
            .filter(status=WorkerRunStatus.RUNNING, dry_run=False, heartbeat_at__lt=stale_before)
            .order_by("pk")
        )
        for run in stale_runs:
            released_count = RetryDecision.objects.filter(
                claimed_by_run=run, status=DecisionStatus.IN_FLIGHT
            ).count()
            run.status = WorkerRunStatus.ABANDONED
            run.finished_at = max(now, run.started_at)
            run.summary = {**run.summary, "in_flight_decision_count": released_count}
            run.save(update_fields=["status", "finished_at", "summary"])
            evidence_append(
                kind=MetadataKind.WORKER_RUN,
                session_id=run.run_id,
                signer=signer_of(actor),
                subject=worker_run_serialize(run),
                filters=EvidenceFilters(dry_run=False),
                decision_count=released_count,
                blocked_count=released_count,
                now=now,
            )
            reaped.append(run.run_id)
        # In-flight decisions of runs that are no longer running, once their delivery's lease
        # has expired, go back to `pending` for the next run to claim.
        RetryDecision.objects.filter(status=DecisionStatus.IN_FLIGHT).exclude(
            claimed_by_run__status=WorkerRunStatus.RUNNING
        ).exclude(delivery__leased_until__gt=now).update(
            status=DecisionStatus.PENDING, claimed_by_run=None
        )
    return reaped


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


def worker_run_execute(*, actor, options: WorkerOptions, **hooks) -> WorkerOutcome:
    """The use case behind POST retry-worker-run and `manage.py run_retry_worker`."""
    return Worker(actor=actor, options=options, **hooks).run()
