import json
import random
import signal
import sys
import threading
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError, connections

from closure.management.accounts import command_user
from closure.services.errors import ServiceError
from closure.services.retries import RetryPolicy
from closure.services.worker_runs import worker_run_serialize
from closure.worker import RetryResult, WorkerOptions, worker_run_execute

# How long a looping worker waits before trying again after the database went away.
DATABASE_RETRY_SECONDS = 5.0


class Command(BaseCommand):
    help = (
        "Run the retry worker: a dry run unless --execute. With --loop it re-plans due work and "
        "runs again every --interval seconds (with jitter) until SIGTERM or SIGINT, finishing "
        "the attempt in progress first."
    )

    def add_arguments(self, parser):
        parser.add_argument("--execute", action="store_true", help="call connectors (live run)")
        parser.add_argument("--user", required=True, help="the account the runs are signed by")
        parser.add_argument("--provider", default="", help="comma list of connector names")
        parser.add_argument("--retry-plan-id", default="", help="run this plan's decisions only")
        parser.add_argument("--max-retry-deliveries", type=int, default=25)
        parser.add_argument("--batch", type=int, default=0, help="decisions per claim")
        parser.add_argument("--timeout-seconds", type=int, default=10)
        parser.add_argument("--loop", action="store_true")
        parser.add_argument(
            "--drain", action="store_true", help="run again at once until a run finds no work"
        )
        parser.add_argument("--interval", type=float, default=60.0)

    def handle(self, *args, **options):
        actor = _actor(options["user"], execute=options["execute"])
        worker_options = _worker_options(options)
        stop = threading.Event()

        def request_stop(signum, frame):
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        interactive = sys.stdout.isatty()
        while True:
            outcome = self._run_once(
                actor, worker_options, stop, loop=options["loop"], interactive=interactive
            )
            if stop.is_set():
                return
            if options["drain"] and outcome is not None and outcome.run.status != "no_work":
                continue
            if not options["loop"]:
                return
            # Jitter spreads many workers' polls apart so they do not claim in lockstep. After a
            # database error the wait is capped, so the worker is back soon after the database.
            wait = options["interval"]
            if outcome is None:
                wait = min(wait, DATABASE_RETRY_SECONDS)
            stop.wait(wait * random.uniform(0.8, 1.2))  # noqa: S311
            if stop.is_set():
                return

    def _run_once(
        self, actor, worker_options: WorkerOptions, stop: threading.Event, *, loop, interactive
    ):
        """One run, its outcome printed as one JSON line; None when a looping worker lost the
        database (it tries again next cycle)."""
        try:
            outcome = worker_run_execute(
                actor=actor,
                options=worker_options,
                on_result=self._progress(interactive),
                should_stop=stop.is_set,
            )
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc
        except OperationalError as exc:
            if not loop:
                raise CommandError(f"database error: {str(exc).splitlines()[0]}") from exc
            # The database went away: drop the broken connection and try again next cycle.
            connections.close_all()
            self.stderr.write(json.dumps({"event": "database_unavailable"}))
            return None
        run = worker_run_serialize(outcome.run)
        if interactive:
            self.stdout.write("")
        self.stdout.write(
            json.dumps({"run_id": run["run_id"], "status": run["status"], **run["summary"]})
        )
        return outcome

    def _progress(self, interactive: bool) -> Callable[[RetryResult], None]:
        """Counts the run's attempts as they finish, redrawn on one line on a terminal."""
        counts = {"delivered": 0, "failed": 0, "skipped": 0}

        def on_result(result: RetryResult) -> None:
            if result.execution is not None and not result.skipped:
                counts[result.execution.execution_status] += 1
            else:
                counts["skipped"] += 1
            if interactive:
                self.stdout.write(
                    f"\r  delivered {counts['delivered']}  failed {counts['failed']}  "
                    f"skipped {counts['skipped']}",
                    ending="",
                )
                self.stdout.flush()

        return on_result


def _actor(username: str, *, execute: bool):
    permissions = ("closure.execute_retry",) if execute else ()
    return command_user(username, permissions=permissions, lacking="execute_retry permission")


def _worker_options(options: dict) -> WorkerOptions:
    if not 1 <= options["max_retry_deliveries"] <= 500:
        raise CommandError("--max-retry-deliveries must be between 1 and 500")
    if not 0 <= options["batch"] <= 500:
        raise CommandError("--batch must be between 1 and 500 (0: one claim per run)")
    if not 1 <= options["timeout_seconds"] <= 30:
        raise CommandError("--timeout-seconds must be between 1 and 30")
    if options["interval"] <= 0:
        raise CommandError("--interval must be positive")
    return WorkerOptions(
        execute=options["execute"],
        retry_plan_id=options["retry_plan_id"],
        retry_policy=RetryPolicy(),
        max_retry_deliveries=options["max_retry_deliveries"],
        batch_size=options["batch"],
        providers=tuple(p.strip() for p in options["provider"].split(",") if p.strip()),
        timeout_seconds=options["timeout_seconds"],
    )
