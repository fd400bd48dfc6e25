"""Retry-worker throughput against a local receiver, beside a plain HTTP client.

Builds its own PostgreSQL database (dropped and re-created), seeds N failed deliveries across
20 connectors with an immediate retry plan, then measures, per round:

- workers: W `manage.py run_retry_worker --execute` processes draining the plan, with
  everything the product does per attempt (claim, lease, signature, execution record,
  evidence chain, circuit);
- reference: a plain HTTP client (http.client, one connection per request, like the worker)
  POSTing the same number of same-sized bodies to the same receiver, with as many requests in
  flight as the workers have (W × 8).

Prints the median deliveries per second of each and their ratio.

    .venv/bin/python bench/worker_throughput.py --deliveries 2000 --workers 4 --rounds 3

The workers run with production settings (`bench_env`: DEBUG off, so Django keeps no query log).
The receiver listens on loopback, the only address this benchmark can rely on, so the workers
get CAVRA_ALLOW_LOOPBACK_CONNECTORS=1 and `--skip-checks`: system check closure.E001 refuses that
setting with DEBUG off, and it must keep refusing it for every real deployment.
"""

import argparse
import http.client
import json
import multiprocessing
import resource
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import DEFAULT_PG, ROOT, bench_env, django_setup, migrate, recreate_database

SEND_CONCURRENCY = 8  # WorkerOptions.send_concurrency's default
# Decisions per claim: a multiple of SEND_CONCURRENCY, so every wave of sends is full.
BATCH = 4 * SEND_CONCURRENCY


def serve_receiver(port_queue, latency_seconds: float) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if latency_seconds:
                time.sleep(latency_seconds)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            return

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.serve_forever()


def seed(count: int, port: int) -> tuple[str, int]:
    """Returns (plan id, body size in bytes)."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from closure.models import AlertDelivery, Connector, HealthAlert, HealthReport
    from closure.services.retries import RetryPolicy, retry_plan_create

    user = get_user_model().objects.create_user("bench-operator")
    user.groups.add(Group.objects.get(name="operators"))
    connectors = []
    for n in range(20):
        connector = Connector(name=f"bench-{n:02d}", kind="webhook")
        connector.set_private_config(
            {"url": f"http://127.0.0.1:{port}/hook/{n:02d}", "signing_secret": "whsec_YmVuY2g="}
        )
        connector.save()
        connectors.append(connector)
    earlier = timezone.now() - timedelta(hours=1)
    report = HealthReport.objects.create(
        generated_at=earlier,
        generated_by=user,
        alert_level="critical",
        alert_count=1,
        findings=[
            {
                "severity": "critical",
                "category": "failed_executive_report_delivery",
                "message": "bench",
                "count": 1,
                "refs": ["bench-1"],
            }
        ],
        counts={"events": 1},
        parameters={},
    )
    alerts = HealthAlert.objects.bulk_create(
        [
            HealthAlert(
                health=report,
                created_at=earlier,
                created_by=user,
                payload={
                    "type": "cavra.executive_retry_health_alert",
                    "health_id": report.health_id,
                    "alert_level": "critical",
                    "findings": report.findings,
                    "counts": report.counts,
                },
            )
            for _ in range((count + len(connectors) - 1) // len(connectors))
        ]
    )
    rows = [
        AlertDelivery(
            alert=alert,
            connector=connector,
            provider=connector.name,
            status="failed",
            attempt_count=1,
            last_attempt_at=earlier,
            created_at=earlier,
            updated_at=earlier,
        )
        for alert in alerts
        for connector in connectors
    ][:count]
    AlertDelivery.objects.bulk_create(rows, batch_size=1000)
    plan, _ = retry_plan_create(
        actor=user,
        policy=RetryPolicy(retry_delay_minutes=0, allow_immediate_retry=True),
    )
    body_size = len(json.dumps({**alerts[0].payload, "delivery_id": "x" * 47, "attempt_number": 2}))
    return plan.retry_plan_id, body_size


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_workers(plan_id: str, workers: int, count: int, env: dict) -> tuple[float, float]:
    """Returns (elapsed seconds, CPU seconds the worker processes used)."""
    per_worker = min(500, -(-count // workers) + 25)
    cpu_before = children_cpu_seconds()
    started = time.perf_counter()
    processes = [
        subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "manage.py",
                "run_retry_worker",
                "--execute",
                "--user",
                "bench-operator",
                "--retry-plan-id",
                plan_id,
                "--max-retry-deliveries",
                str(per_worker),
                "--batch",
                str(BATCH),
                "--drain",
                "--skip-checks",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.wait()
    elapsed = time.perf_counter() - started
    if any(p.returncode for p in processes):
        raise SystemExit("a worker failed")
    return elapsed, children_cpu_seconds() - cpu_before


def run_plain_client(port: int, workers: int, count: int, body_size: int) -> tuple[float, float]:
    """Returns (elapsed seconds, CPU seconds the client used)."""
    body = b"x" * body_size
    per_thread = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]

    def send(n: int) -> None:
        for _ in range(n):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(
                "POST", "/hook/plain", body=body, headers={"Content-Type": "application/json"}
            )
            conn.getresponse().read()
            conn.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in per_thread]
    cpu_before = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, time.process_time() - cpu_before


def recorded_rate() -> float:
    """Attempts per second between the first and the last recorded attempt: the workers'
    rate once they run, without the start-up of their processes."""
    from django.db.models import Count, Max, Min

    from closure.models import ExecutionRecord

    span = ExecutionRecord.objects.filter(trigger="retry").aggregate(
        count=Count("id"), first=Min("executed_at"), last=Max("executed_at")
    )
    return (span["count"] - 1) / (span["last"] - span["first"]).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--database", default="cavra_bench_worker")
    parser.add_argument(
        "--receiver-latency-ms",
        type=float,
        default=0.0,
        help="time the receiver takes per request (0: the bare loopback limit)",
    )
    args = parser.parse_args()

    port_queue = multiprocessing.Queue()
    receiver = multiprocessing.Process(
        target=serve_receiver,
        args=(port_queue, args.receiver_latency_ms / 1000),
        daemon=True,
    )
    receiver.start()
    port = port_queue.get(timeout=10)

    worker_rates, plain_rates = [], []
    # CPU time per delivery in the worker processes and in the plain client (neither counts
    # the receiver; PostgreSQL's share is on top of the workers').
    worker_cpu_ms, plain_cpu_ms = [], []
    steady_rates = []
    for round_number in range(1, args.rounds + 1):
        url = recreate_database(args.pg, args.database)
        # Migrated without the loopback setting, so the system checks run as in production.
        migrate(bench_env(url, CAVRA_ALLOW_LOOPBACK_CONNECTORS="0"))
        env = bench_env(url, CAVRA_ALLOW_LOOPBACK_CONNECTORS="1")
        if round_number == 1:
            django_setup(env)
        from django.db import connections

        connections.close_all()
        plan_id, body_size = seed(args.deliveries, port)
        connections.close_all()

        worker_seconds, worker_cpu = run_workers(plan_id, args.workers, args.deliveries, env)
        # The same concurrency as the workers: every worker keeps SEND_CONCURRENCY calls open.
        plain_seconds, plain_cpu = run_plain_client(
            port, args.workers * SEND_CONCURRENCY, args.deliveries, body_size
        )
        steady_rates.append(recorded_rate())
        connections.close_all()
        worker_rates.append(args.deliveries / worker_seconds)
        plain_rates.append(args.deliveries / plain_seconds)
        worker_cpu_ms.append(worker_cpu * 1000 / args.deliveries)
        plain_cpu_ms.append(plain_cpu * 1000 / args.deliveries)
        print(
            f"round {round_number}: workers {worker_rates[-1]:8.1f} deliveries/s "
            f"({worker_cpu_ms[-1]:.2f} ms CPU each)   plain client {plain_rates[-1]:8.1f} "
            f"requests/s ({plain_cpu_ms[-1]:.2f} ms CPU each)"
        )

    worker_median = statistics.median(worker_rates)
    plain_median = statistics.median(plain_rates)
    print(
        f"deliveries: {args.deliveries}, concurrency: {args.workers}, rounds: {args.rounds}, "
        f"receiver latency: {args.receiver_latency_ms:g} ms"
    )
    print(f"median workers (evidence on): {worker_median:8.1f} deliveries/s")
    print(
        f"median workers, first to last recorded attempt (no process start-up): "
        f"{statistics.median(steady_rates):8.1f} deliveries/s"
    )
    print(f"median plain HTTP client:     {plain_median:8.1f} requests/s")
    print(
        f"median CPU per delivery:      workers {statistics.median(worker_cpu_ms):.2f} ms, "
        f"plain client {statistics.median(plain_cpu_ms):.2f} ms"
    )
    print(f"ratio workers / plain client: {worker_median / plain_median:8.3f}  (target >= 0.5)")
    receiver.terminate()


if __name__ == "__main__":
    main()
