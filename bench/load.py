"""Load: the closure dashboard and the retry-plan endpoint under gunicorn, driven by wrk.

Builds its own PostgreSQL database (`cavra_bench_load`, dropped and re-created) and fills it
with the reporting dataset of bench/dataset.py (by default 100,000 deliveries, 1,000,000
execution records and 1,000,000 evidence rows). Then starts gunicorn with the production config
(cavra/gunicorn.conf.py) and the documented defaults (GUNICORN_WORKERS=2, GUNICORN_THREADS=4,
docs/deployment.md) on a free loopback port, waits for /healthz, and drives each endpoint with
wrk for --duration seconds, with a bounded load: 2 wrk threads, 8 keep-alive connections (as
many requests in flight as gunicorn has threads), each sending its next request as soon as the
previous one is answered:

- closure dashboard: `GET B/final-reporting-closure-dashboard` (URL name `closure-dashboard`)
- retry plan:        `POST A/retry-plan` with `{}` (URL name `retry-plan`): every request
                     plans every failed delivery with the default policy and stores the plan,
                     its decisions and its evidence row, superseding the previous plan's
                     pending decisions. The POST throttle (CAVRA_API_POST_RATE, 120/minute by
                     default) is raised for the run: this measures the server, not the throttle.

Every request carries the dataset user's `Authorization: Bearer <token>` and, as a
TLS-terminating proxy would, `X-Forwarded-Proto: https` (gunicorn runs with
CAVRA_BEHIND_PROXY=1), so production's HTTPS settings stay on. Prints, per endpoint, requests
per second, p50/p95/p99 latency, errors (answers other than 2xx, and socket errors: connect,
read, write, and requests unanswered after --timeout seconds) and how busy the machine's CPUs
were; then the gunicorn settings used. Each endpoint is asked once first; one that does not
answer 200 is not loaded. Such an endpoint, or any error under load, makes the exit status
non-zero. gunicorn is stopped at the end, also on error.

Prerequisite: wrk (Debian package `wrk`: `apt-get install wrk`).

    .venv/bin/python bench/load.py                  # default scale, 60 s per endpoint
    .venv/bin/python bench/load.py --deliveries 5000 --executions 20000 --evidence 20000 \\
        --duration 10
    .venv/bin/python bench/load.py --reuse          # keep the database of the previous run
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import (
    DEFAULT_PG,
    ROOT,
    bench_env,
    django_setup,
    migrate,
    recreate_database,
    report,
)

DATABASE = "cavra_bench_load"

WRK_THREADS = 2
WRK_CONNECTIONS = 8

# wrk's Lua script: the headers of every request, a count of answers other than 2xx per wrk
# thread, and one machine-readable line at the end (latencies in microseconds).
LUA = """
wrk.method = %(method)s
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. %(token)s
wrk.headers["X-Forwarded-Proto"] = "https"
wrk.headers["Accept"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non_2xx = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non_2xx = non_2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non_2xx")
  end
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p95_us\\": %%d, \\"p99_us\\": %%d, \\"max_us\\": %%d, \\"non_2xx\\": %%d, " ..
    "\\"connect\\": %%d, \\"read\\": %%d, \\"write\\": %%d, \\"timeout\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, bad, e.connect, e.read, e.write, e.timeout))
end
"""


def credentials_file(database: str) -> Path:
    """Where the dataset user's credentials are kept between runs, for --reuse."""
    return Path(tempfile.gettempdir()) / f"{database}.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server URL, no database")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--evidence", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=60, help="seconds per endpoint")
    parser.add_argument(
        "--timeout", type=int, default=10, help="seconds before wrk counts a request as an error"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep the database and dataset of the previous run"
    )
    return parser.parse_args()


def build(args: argparse.Namespace) -> dict:
    """Fills the freshly migrated database; returns the dataset user's credentials."""
    from dataset import build_reporting_dataset

    credentials = build_reporting_dataset(
        deliveries=args.deliveries, executions=args.executions, evidence=args.evidence
    )
    path = credentials_file(args.database)
    path.write_text(json.dumps(credentials))
    path.chmod(0o600)
    return credentials


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, token: str = "", method: str = "GET", body: str = "") -> tuple[int, bytes]:
    headers = {"X-Forwarded-Proto": "https", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310 (loopback only)
        url, data=body.encode() or None, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_healthy(base: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"gunicorn exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if call(f"{base}/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"gunicorn did not answer /healthz within 60 s:\n{log.read_text()[-3000:]}")


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def run_wrk(url: str, script: Path, duration: int, timeout: int) -> tuple[dict, float]:
    """Runs wrk against `url`; returns its figures and the machine's CPU use (%)."""
    busy_before, total_before = cpu_times()
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{duration}s",
        f"--timeout={timeout}s",
        "-s",
        str(script),
        url,
    ]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    busy_after, total_after = cpu_times()
    cpu = 100 * (busy_after - busy_before) / max(1, total_after - total_before)
    for line in finished.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            return json.loads(line.removeprefix("WRK_RESULT ")), cpu
    sys.exit(
        f"wrk gave no result (exit {finished.returncode}):\n{finished.stdout}\n{finished.stderr}"
    )


def print_result(result: dict, cpu: float, timeout: int) -> int:
    """Prints one endpoint's figures; returns its number of errors."""
    socket_errors = result["connect"] + result["read"] + result["write"] + result["timeout"]
    errors = result["non_2xx"] + socket_errors
    report("  requests/s", result["requests"] / (result["duration_us"] / 1e6), "req/s")
    for name in ("p50", "p95", "p99", "max"):
        report(f"  latency {name}", result[f"{name}_us"] / 1000, "ms")
    report(f"  machine CPU busy ({os.cpu_count()} cores, 100 % = all)", cpu, "%")
    print(f"{'  requests':<52} {result['requests']:>12,}", flush=True)
    print(
        f"{'  errors':<52} {errors:>12,}   ({result['non_2xx']:,} non-2xx, "
        f"{result['connect']:,} connect, {result['read']:,} read, {result['write']:,} write, "
        f"{result['timeout']:,} over {timeout} s)",
        flush=True,
    )
    return errors


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: install the Debian package `wrk` (apt-get install wrk)")

    if args.reuse:
        if not credentials_file(args.database).exists():
            sys.exit(f"--reuse: no previous run of {args.database}; run without --reuse")
        env = bench_env(f"{args.pg}/{args.database}")
        django_setup(env)
        credentials = json.loads(credentials_file(args.database).read_text())
        print(f"reusing database {args.database}", flush=True)
    else:
        env = bench_env(recreate_database(args.pg, args.database))
        migrate(env)
        django_setup(env)
        print(
            f"building the dataset: {args.deliveries:,} deliveries, {args.executions:,} "
            f"executions, {args.evidence:,} evidence rows",
            flush=True,
        )
        credentials = build(args)

    from django.db import connections
    from django.urls import reverse

    connections.close_all()
    # label → (method, path, body)
    endpoints = {
        "closure dashboard": ("GET", reverse("closure-dashboard"), ""),
        "retry plan": ("POST", reverse("retry-plan"), "{}"),
    }

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="cavra-bench-load-"))
    server_env = {
        **env,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": os.environ.get("GUNICORN_WORKERS", "2"),
        "GUNICORN_THREADS": os.environ.get("GUNICORN_THREADS", "4"),
        "CAVRA_BEHIND_PROXY": "1",
        "CAVRA_API_POST_RATE": "1000000/minute",
        # A metrics directory of our own: the config empties it at start.
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
    }
    log = workdir / "gunicorn.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as log_file:
        server = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "gunicorn", "-c", "cavra/gunicorn.conf.py", "cavra.wsgi"],
            cwd=ROOT,
            env=server_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    problems: list[str] = []
    try:
        wait_healthy(base, server, log)
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        print(f"machine load average before the runs (1, 5, 15 min): {load}", flush=True)
        # One request to each first: an endpoint that does not answer 2xx is not loaded.
        loadable = {}
        for label, (method, path, body) in endpoints.items():
            status, answer = call(base + path, credentials["token"], method, body)
            if 200 <= status <= 299:
                loadable[label] = (method, path, body, len(answer))
            else:
                problems.append(
                    f"{label}: {method} {path} answered {status}, so it was not loaded: "
                    + answer[:300].decode(errors="replace")
                )
        for label, (method, path, body, size) in loadable.items():
            print(f"\n{label}: {method} {path}  ({size:,} bytes answered)", flush=True)
            script = workdir / f"{method.lower()}.lua"
            script.write_text(
                LUA
                % {
                    "method": json.dumps(method),
                    "body": json.dumps(body),
                    "token": json.dumps(credentials["token"]),
                }
            )
            result, cpu = run_wrk(base + path, script, args.duration, args.timeout)
            errors = print_result(result, cpu, args.timeout)
            if errors:
                problems.append(f"{label}: {errors:,} errors under load")
    finally:
        server.terminate()
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server_errors = [
            line
            for line in log.read_text().splitlines()
            if "[ERROR]" in line or '"level": "ERROR"' in line
        ]
        if server_errors:
            print("gunicorn errors:\n" + "\n".join(server_errors[-20:]), flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\ngunicorn: cavra/gunicorn.conf.py, "
        f"workers={server_env['GUNICORN_WORKERS']}, threads={server_env['GUNICORN_THREADS']}, "
        f"bind 127.0.0.1:{port}, other settings as documented; wrk: {WRK_THREADS} threads, "
        f"{WRK_CONNECTIONS} connections, {args.duration} s per endpoint, timeout {args.timeout} s",
        flush=True,
    )
    if problems:
        sys.exit("\n".join(["FAILED:", *problems]))


if __name__ == "__main__":
    main()
