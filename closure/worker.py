"""The retry worker: executes due `retry` decisions, dry run unless told to go live.

Live runs claim due decisions in batches with `SELECT … FOR UPDATE SKIP LOCKED` in a short
transaction, take each delivery's attempt lease, call connectors outside any transaction in
waves of `send_concurrency`, and record each wave's outcomes together through the attempt
service (one transaction per wave, each attempt fenced by its lease version). Any number of
workers can share one PostgreSQL: they coordinate only through these row locks and leases. The
API's POST retry-worker-run and `manage.py run_retry_worker` both run this `Worker`.

The worker only orchestrates: every write, and every transaction, is a service
(`closure.services.worker_runs`, `closure.services.attempts`), so no lock or transaction is
ever held across a connector call.
"""

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from django.utils import timezone

from closure import models
from closure.choices import (
    DecisionAction,
    ExecutionStatus,
    HoldReason,
    MetadataKind,
    WorkerRunStatus,
)
from closure.connectors import SendOutcome
from closure.services.attempts import (
    ClaimedAttempt,
    attempts_prepare,
    attempts_record,
    attempts_release,
)
from closure.services.circuits import circuit_would_admit
from closure.services.errors import NotFound
from closure.services.retries import (
    RetryPolicy,
    retry_plan_compute,
    retry_plan_create,
    retry_scope_validate,
)
from closure.services.worker_runs import (
    WorkerRunEnding,
    WorkerRunSetup,
    retry_decision_serialize,
    retry_skip_reason,
    worker_run_claim,
    worker_run_create,
    worker_run_finish,
    worker_run_record_dry,
    worker_run_renew,
    worker_run_start,
    worker_runs_reap,
)


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
    execution: models.ExecutionRecord | None = None
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
    run: models.WorkerRun
    run_evidence: models.Evidence
    plan_public: dict | None
    plan_evidence: models.Evidence | None
    results: list[RetryResult]


def _dry_verdict(delivery: models.AlertDelivery, now) -> tuple[str, str]:
    """What a live run's claim would do with a due retry of this delivery: ("send", ""),
    ("skip", the skip reason it would record) or ("hold", why it would stay pending)."""
    if delivery.lease_is_held(now):
        return "hold", HoldReason.ATTEMPT_IN_FLIGHT
    skip_reason = retry_skip_reason(delivery)
    if skip_reason:
        return "skip", skip_reason
    circuit = getattr(delivery.connector, "circuit", None)
    if circuit is not None and not circuit_would_admit(
        circuit.state,
        open_until=circuit.open_until,
        probe_in_flight=circuit.probe_in_flight,
        now=now,
    ):
        return "hold", HoldReason.CIRCUIT_OPEN
    return "send", ""


def _plan_counts(plan: models.RetryPlan) -> dict:
    return {
        "retryable_count": plan.retryable_count,
        "waiting_retry_count": plan.waiting_count,
        "suppressed_retry_count": plan.suppressed_count,
    }


def _live_ending(
    plan: models.RetryPlan, results: list[RetryResult], *, stopped: bool
) -> WorkerRunEnding:
    statuses = [r.execution.execution_status for r in results if r.execution and not r.skipped]
    delivered = statuses.count(ExecutionStatus.DELIVERED)
    # Taken by the connector but not confirmed (a Teams 202): not a failure of the run.
    accepted = statuses.count(ExecutionStatus.ACCEPTED)
    failed = statuses.count(ExecutionStatus.FAILED)
    skipped_count = len(results) - delivered - accepted - failed
    summary = {
        **_plan_counts(plan),
        "selected_retry_count": len(results),
        "delivered_count": delivered,
        "accepted_count": accepted,
        "failed_count": failed,
        "skipped_count": skipped_count,
        "stopped_early": stopped,
    }
    return WorkerRunEnding(
        status=_run_status(delivered + accepted, failed, skipped_count, len(results)),
        summary=summary,
        selected=[r.decision for r in results],
    )


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

    def _plan(self) -> tuple[models.RetryPlan | None, dict | None, models.Evidence | None]:
        options = self.options
        if options.retry_plan_id:
            try:
                plan = models.RetryPlan.objects.select_related("generated_by").get(
                    retry_plan_id=options.retry_plan_id
                )
            except models.RetryPlan.DoesNotExist:
                raise NotFound(f"retry plan {options.retry_plan_id!r} does not exist") from None
            evidence = models.Evidence.objects.filter(
                metadata_kind=MetadataKind.RETRY_PLAN, session_id=plan.retry_plan_id
            ).first()
            return plan, evidence.payload["subject"] if evidence else None, evidence
        if not options.execute:
            return None, None, None
        plan, public = retry_plan_create(
            actor=self.actor, policy=options.retry_policy, providers=list(options.providers)
        )
        evidence = models.Evidence.objects.get(
            metadata_kind=MetadataKind.RETRY_PLAN, session_id=plan.retry_plan_id
        )
        return plan, public, evidence

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
        if plan is not None:
            judged, counts = self._judge_plan(plan, now), _plan_counts(plan)
        else:
            judged, counts = self._judge_preview(now)
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
        run, evidence = worker_run_record_dry(
            setup=self._run_setup(plan),
            now=now,
            ending=WorkerRunEnding(status=status, summary=summary, selected=selected),
        )
        return WorkerOutcome(run, evidence, plan_public, plan_evidence, results)

    def _judge_plan(self, plan: models.RetryPlan, now) -> list[tuple[dict, tuple[str, str]]]:
        """The plan's due decisions, each with its verdict."""
        options = self.options
        due = models.RetryDecision.objects.due(
            now, retry_plan_id=options.retry_plan_id, providers=options.providers
        ).select_related("plan", "delivery__alert__health", "delivery__connector__circuit")
        return [
            (retry_decision_serialize(d), _dry_verdict(d.delivery, now))
            for d in due[: options.max_retry_deliveries]
        ]

    def _judge_preview(self, now) -> tuple[list[tuple[dict, tuple[str, str]]], dict]:
        """With no plan named: the retries a plan made now would decide, each with its verdict,
        and that plan's counts."""
        options = self.options
        preview = retry_plan_compute(
            policy=options.retry_policy,
            providers=list(options.providers),
            health_id="",
            now=now,
        )
        retryable = [p for p in preview if p.action == DecisionAction.RETRY]
        candidates = retryable[: options.max_retry_deliveries]
        deliveries = models.AlertDelivery.objects.select_related("connector__circuit").in_bulk(
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
        return judged, counts

    def _run_setup(self, plan: models.RetryPlan | None) -> WorkerRunSetup:
        options = self.options
        return WorkerRunSetup(
            actor=self.actor,
            plan=plan,
            schedule=options.schedule,
            parameters={
                "max_retry_deliveries": options.max_retry_deliveries,
                "batch_size": self._batch_size(),
                "provider": list(options.providers),
                "timeout_seconds": options.timeout_seconds,
                "retry_plan_id": plan.retry_plan_id if plan else None,
            },
        )

    def _create_run(self, plan, now, *, dry_run: bool) -> models.WorkerRun:
        return worker_run_create(setup=self._run_setup(plan), now=now, dry_run=dry_run)

    def _batch_size(self) -> int:
        return min(
            self.options.batch_size or self.options.max_retry_deliveries,
            self.options.max_retry_deliveries,
        )

    def _claim(
        self, run: models.WorkerRun, limit: int
    ) -> tuple[list[tuple[ClaimedAttempt, dict]], list[RetryResult]]:
        """Claim up to `limit` due decisions; those whose delivery changed come back skipped."""
        claims, skipped = worker_run_claim(
            run=run,
            actor=self.actor,
            limit=limit,
            retry_plan_id=self.options.retry_plan_id,
            providers=self.options.providers,
        )
        return claims, [
            RetryResult(decision, execution=record, skipped=record.skip_reason)
            for decision, record in skipped
        ]

    def _attempt(self, run: models.WorkerRun, claim: ClaimedAttempt, decision: dict) -> RetryResult:
        """One attempt on its own: renew the lease, send, record."""
        wave = self._send_wave(run, [(claim, decision)], pool=None, renew=True)
        [result] = self._record_wave(run, wave)
        return result

    def _send_wave(self, run: models.WorkerRun, claims: list, pool, *, renew: bool) -> Wave:
        """Renew the wave's leases and start its sends (no transaction, no lock).

        `renew=False` is for the wave sent right after its claim: the claim has just taken
        the leases and updated the run's heartbeat, so renewing would change nothing.
        """
        renewed = [True] * len(claims)
        if renew:
            renewed = worker_run_renew(run=run, claims=[claim for claim, _ in claims])
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

    def _record_wave(self, run: models.WorkerRun, wave: Wave) -> list[RetryResult]:
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
        run = worker_run_start(setup=self._run_setup(plan), now=timezone.now())
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
        ending = _live_ending(plan, results, stopped=stopped)
        run, evidence = worker_run_finish(run=run, actor=self.actor, ending=ending)
        return WorkerOutcome(run, evidence, plan_public, plan_evidence, results)


def worker_run_execute(*, actor, options: WorkerOptions, **hooks) -> WorkerOutcome:
    """The use case behind POST retry-worker-run and `manage.py run_retry_worker`."""
    return Worker(actor=actor, options=options, **hooks).run()
