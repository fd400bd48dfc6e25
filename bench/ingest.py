"""Delivery-event ingest on PostgreSQL: events per second through the API, and in-process.

Builds its own database `cavra_bench_ingest` (dropped and re-created), a user with the
operators role and an API token (`manage.py create_api_token`), then per round ingests N events
(default 100,000) in batches of B (default 1,000), each round with fresh event_ids:

- api:        POST R/delivery-events over real HTTP to gunicorn on loopback, started with the
              project's config (cavra/gunicorn.conf.py; GUNICORN_WORKERS=2, the documented
              count), from C plain http.client connections (default 4), bearer-token auth.
              The POST throttle (CAVRA_API_POST_RATE, 120/minute by default) is raised through
              the server's environment to 100000/minute so the benchmark measures ingest, not
              the limiter;
- validation: the same request bodies through the ingest input serializer, in-process;
- service:    `delivery_events_ingest` on the validated batches, in-process (dedup read,
              bulk insert, evidence row).

The events are a realistic upstream mix: report deliveries (delivered/failed), retry plans,
worker runs and retry executions, across 20 providers and a few hundred runs, with small
`details`. The events of a round are deleted before the next one (evidence stays). Prints the
median events per second of each, the queries a batch takes in-process, and the target
(api ≥ 5,000 events/s).

    .venv/bin/python bench/ingest.py                       # 100,000 events, 5 rounds
    .venv/bin/python bench/ingest.py --events 20000 --rounds 2
"""

import argparse
import http.client
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta

from common import (
    DEFAULT_PG,
    ROOT,
    bench_env,
    django_setup,
    median,
    migrate,
    recreate_database,
    report,
)

DATABASE = "cavra_bench_ingest"
TARGET_EVENTS_PER_SECOND = 5000
POST_RATE = "100000/minute"
WORKERS = 2
INGEST_PATH = (
    "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
    "/recovery-executive-report/delivery-events"
)
PROVIDERS = [f"exec-connector-{n:02d}" for n in range(20)]


def make_event(rng: random.Random, round_tag: str, number: int, start: datetime) -> dict:
    kind = rng.choices(
        ("report_delivery", "retry_execution", "retry_plan", "retry_worker_run"),
        weights=(60, 30, 5, 5),
    )[0]
    status = {
        "report_delivery": rng.choice(("delivered", "delivered", "delivered", "failed")),
        "retry_execution": rng.choice(("delivered", "failed", "skipped")),
        "retry_plan": rng.choice(("succeeded", "succeeded", "failed")),
        "retry_worker_run": rng.choice(("succeeded", "failed", "skipped")),
    }[kind]
    event = {
        "event_id": f"upstream-{round_tag}-{number:07d}",
        "kind": kind,
        "status": status,
        "occurred_at": (start + timedelta(seconds=number)).isoformat().replace("+00:00", "Z"),
        "provider": rng.choice(PROVIDERS),
        "run_id": f"drill-run-{rng.randrange(400):04d}",
        "executive_report_id": f"exec-report-{rng.randrange(2000):05d}",
        "details": {"attempt": rng.randint(1, 4), "region": rng.choice(("eu-1", "us-2"))},
    }
    if kind == "retry_worker_run":
        event["schedule_enabled"] = rng.random() < 0.95
    if status == "failed":
        event["details"]["http_status"] = rng.choice((500, 502, 503, 429))
    return event


def make_batches(count: int, size: int, round_tag: str) -> list[list[dict]]:
    rng = random.Random(round_tag)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    events = [make_event(rng, round_tag, n, start) for n in range(count)]
    return [events[i : i + size] for i in range(0, count, size)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict, port: int, log) -> subprocess.Popen:
    """gunicorn with the project's config; its own log goes to `log` (printed on failure)."""
    server = subprocess.Popen(  # noqa: S603
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "-c",
            "cavra/gunicorn.conf.py",
            # Each server of the shared machine would otherwise claim the same control socket.
            "--no-control-socket",
            "cavra.wsgi",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("gunicorn did not answer within 30 s")


def post_batches(port: int, token: str, bodies: list[bytes], clients: int) -> float:
    """POST every body, `clients` keep-alive connections at a time; returns seconds."""
    pending = list(enumerate(bodies))
    lock = threading.Lock()
    failures: list[str] = []
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "X-Forwarded-Proto": "https",
    }

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if not pending or failures:
                    break
                _, body = pending.pop(0)
            conn.request("POST", INGEST_PATH, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
            if response.status != 201:
                failures.append(f"{response.status} {content[:300]!r}")
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"ingest failed: {failures[0]}")
    return elapsed


def delete_events() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM closure_deliveryevent")
        cursor.execute("VACUUM FULL ANALYZE closure_deliveryevent")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP connections")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server URL, no database")
    parser.add_argument("--database", default=DATABASE)
    return parser.parse_args()


def operator_with_token(env: dict):
    """An operator and a bearer token of theirs, issued by the management command."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user("bench-ingest")
    user.groups.add(Group.objects.get(name="operators"))
    token = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "create_api_token", "bench-ingest", "--name", "bench"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return user, token


def in_process_round(user, args: argparse.Namespace, tag: str) -> tuple[float, float, int]:
    """Seconds to validate the round's batches, seconds to ingest them through the service,
    and the queries one batch takes."""
    from django.db import connection

    from closure.inputs.serializers import DeliveryEventBatchInputSerializer
    from closure.services.events import delivery_events_ingest

    batches = make_batches(args.events, args.batch, f"service-{tag}")
    started = time.perf_counter()
    validated = []
    for batch in batches:
        serializer = DeliveryEventBatchInputSerializer(data={"events": batch})
        serializer.is_valid(raise_exception=True)
        validated.append(serializer.validated_data["events"])
    validation_seconds = time.perf_counter() - started

    counter = QueryCounter()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        for events in validated:
            delivery_events_ingest(actor=user, events=events)
    service_seconds = time.perf_counter() - started
    return validation_seconds, service_seconds, counter.count // len(validated)


def main() -> None:
    args = parse_args()
    port = free_port()
    # Its own metrics directory: gunicorn empties it at start.
    metrics_dir = tempfile.mkdtemp(prefix="cavra-bench-ingest-metrics-")
    env = bench_env(
        recreate_database(args.pg, args.database),
        CAVRA_API_POST_RATE=POST_RATE,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS=str(WORKERS),
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        # As behind the TLS-terminating proxy of production: it says X-Forwarded-Proto: https.
        CAVRA_BEHIND_PROXY="1",
    )
    migrate(env)
    django_setup(env)

    user, token = operator_with_token(env)
    print(
        f"{args.events:,} events in batches of {args.batch:,}; gunicorn {WORKERS} workers on "
        f"127.0.0.1:{port}, {args.clients} client connections; POST throttle raised through "
        f"the environment: CAVRA_API_POST_RATE={POST_RATE}",
        flush=True,
    )

    api_rates, validation_rates, service_rates = [], [], []
    batch_queries = 0
    with tempfile.TemporaryFile(mode="w+") as log:
        server = start_gunicorn(env, port, log)
        try:
            for round_number in range(args.rounds):
                tag = f"r{round_number}"
                batches = make_batches(args.events, args.batch, f"api-{tag}")
                bodies = [json.dumps({"events": batch}).encode() for batch in batches]
                delete_events()
                api_seconds = post_batches(port, token, bodies, args.clients)
                api_rates.append(args.events / api_seconds)

                delete_events()
                validation_seconds, service_seconds, batch_queries = in_process_round(
                    user, args, tag
                )
                validation_rates.append(args.events / validation_seconds)
                service_rates.append(args.events / service_seconds)
                print(
                    f"round {round_number + 1}: api {api_seconds:.2f} s, validation "
                    f"{validation_seconds:.2f} s, service {service_seconds:.2f} s",
                    flush=True,
                )
        except BaseException:
            log.seek(0)
            print(log.read()[-3000:], file=sys.stderr)
            raise
        finally:
            server.terminate()
            server.wait(timeout=30)

    api = median(api_rates)
    print(
        f"\ningest of {args.events:,} events in batches of {args.batch:,}, median of "
        f"{args.rounds} rounds"
    )
    report(f"api over HTTP (gunicorn {WORKERS} workers, {args.clients} clients)", api, "events/s")
    report("in-process: validation (input serializer)", median(validation_rates), "events/s")
    report(
        f"in-process: service ({batch_queries} queries a batch)", median(service_rates), "events/s"
    )
    print(
        f"target: api ≥ {TARGET_EVENTS_PER_SECOND:,} events/s on PostgreSQL: "
        f"{'met' if api >= TARGET_EVENTS_PER_SECOND else 'NOT met'}"
    )


class QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


if __name__ == "__main__":
    main()
