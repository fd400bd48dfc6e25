import json
import signal
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from closure.services.errors import ServiceError
from closure.services.retries import RetryPolicy
from closure.worker import WorkerOptions, worker_run_execute, worker_run_serialize


class Command(BaseCommand):
    help = (
        "Run the retry worker: a dry run unless --execute. With --loop it plans and runs again "
        "every --interval seconds until SIGTERM/SIGINT, finishing the current run first."
    )

    def add_arguments(self, parser):
        parser.add_argument("--execute", action="store_true", help="call connectors (live run)")
        parser.add_argument("--user", required=True, help="the account the runs are signed by")
        parser.add_argument("--provider", default="", help="comma list of connector names")
        parser.add_argument("--max-retry-deliveries", type=int, default=25)
        parser.add_argument("--timeout-seconds", type=int, default=10)
        parser.add_argument("--loop", action="store_true")
        parser.add_argument("--interval", type=float, default=60.0)

    def handle(self, *args, **options):
        try:
            actor = get_user_model().objects.get(username=options["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {options['user']!r}") from None
        if options["execute"] and not actor.has_perm("closure.execute_retry"):
            raise CommandError(f"{actor.username} lacks the execute_retry permission")
        if not 1 <= options["max_retry_deliveries"] <= 500:
            raise CommandError("--max-retry-deliveries must be between 1 and 500")
        if not 1 <= options["timeout_seconds"] <= 30:
            raise CommandError("--timeout-seconds must be between 1 and 30")
        worker_options = WorkerOptions(
            execute=options["execute"],
            retry_policy=RetryPolicy(),
            max_retry_deliveries=options["max_retry_deliveries"],
            providers=tuple(p.strip() for p in options["provider"].split(",") if p.strip()),
            timeout_seconds=options["timeout_seconds"],
        )
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while True:
            try:
                outcome = worker_run_execute(actor=actor, options=worker_options)
            except ServiceError as exc:
                raise CommandError(exc.detail) from exc
            run = worker_run_serialize(outcome.run)
            self.stdout.write(
                json.dumps({"run_id": run["run_id"], "status": run["status"], **run["summary"]})
            )
            if not options["loop"] or stopping:
                return
            deadline = time.monotonic() + options["interval"]
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)
            if stopping:
                return
