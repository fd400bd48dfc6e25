"""The large reporting dataset the reporting benchmarks read: a year's worth of the loop.

`build_reporting_dataset(deliveries=…, executions=…, evidence=…)` fills an already-migrated,
empty PostgreSQL database (Django set up in this process, see `common.django_setup`) in bulk:

- 20 connectors of every kind (two disabled, one Teams workflow that counts 202 as delivered,
  one open circuit); a health report per 20 deliveries (mostly healthy, the latest fresh and
  critical), an alert per 5 deliveries, each to 5 distinct connectors;
- `deliveries` alert deliveries over the last 180 days: about 89 % delivered, 8 % suppressed
  (acknowledged, waived, connector disabled), 2 % failed (only among the newest tenth), and a
  few exhausted, accepted-but-unconfirmed and in-flight ones;
- exactly `executions` execution records, one per attempt, spread over the deliveries with a
  heavy tail (at the default sizes the median delivery took 5 attempts, a few thousands), the
  last attempt's outcome matching the delivery's status, retries tied to worker runs;
- acknowledgements of most delivered alerts, retry plans with their decisions (executed and
  superseded history, one open decision per failed delivery, some overdue), worker runs;
- `evidence` rows of a valid hash chain (`evidence_throughput.build_rows`, one COPY).

Statuses and attempts come from a seeded generator, so two builds of one size are the same.
Operational rows are written with COPY into a scratch table and INSERT … SELECT, so a million
execution records take seconds; the evidence chain (hashed in Python) takes longest.
"""

import random
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from evidence_throughput import build_rows

USERNAME = "bench-operator"
PASSWORD = "bench-operator-password"  # noqa: S105 (a throwaway benchmark account)
CONNECTOR_KINDS = ["webhook"] * 10 + ["slack"] * 4 + ["teams"] * 3 + ["email"] * 2 + ["pagerduty"]
CONNECTORS = len(CONNECTOR_KINDS)
DELIVERIES_PER_ALERT = 5
ALERTS_PER_REPORT = 4
SPAN = timedelta(days=180)
# A hash of an integer column into 0..999, for deterministic spreads inside SQL.
SPREAD = "mod({col} * 2654435761, 1000)"

HEX = "lpad(to_hex({value}), 16, '0')"


def _spread(column: str) -> str:
    return SPREAD.format(col=column)


def build_reporting_dataset(*, deliveries: int, executions: int, evidence: int) -> dict:
    """Fill the (migrated, empty) database; returns the credentials of a user who may view
    everything, use the admin, read the dashboards and plan retries."""
    from django.db import connection
    from django.utils import timezone

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")
    # First: the ledger must be empty for the chain to start at sequence 1.
    evidence_seconds = build_rows(evidence) if evidence else 0.0
    credentials = _user_and_token()
    now = timezone.now().replace(microsecond=0)
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")
        user_id = _user_id(cursor)
        _connectors(cursor, now)
        reports = max(1, deliveries // (DELIVERIES_PER_ALERT * ALERTS_PER_REPORT))
        alerts = max(1, -(-deliveries // DELIVERIES_PER_ALERT))
        _reports(cursor, reports, now, user_id)
        _alerts(cursor, alerts, reports, user_id)
        plans = max(1, deliveries // 50)
        runs = max(1, deliveries // 20)
        _plans(cursor, plans, now, user_id)
        _runs(cursor, runs, plans, now, user_id)
        _deliveries(cursor, deliveries, executions, now)
        _executions(cursor, runs, user_id)
        _decisions(cursor, plans, now)
        _acknowledgements(cursor, user_id)
        for table in TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")
    elapsed = time.perf_counter() - started
    print(
        f"dataset: {deliveries:,} deliveries, {executions:,} execution records, "
        f"{evidence:,} evidence rows built in {elapsed:.1f} s "
        f"(evidence chain {evidence_seconds:.1f} s)",
        flush=True,
    )
    return credentials


TABLES = [
    "closure_connector",
    "closure_connectorcircuit",
    "closure_healthreport",
    "closure_healthalert",
    "closure_retryplan",
    "closure_workerrun",
    "closure_alertdelivery",
    "closure_executionrecord",
    "closure_retrydecision",
    "closure_acknowledgement",
    "closure_evidence",
]


def _user_and_token() -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from closure.models import ApiToken
    from closure.roles import AUDITORS, OPERATORS

    user = get_user_model().objects.create_user(USERNAME, password=PASSWORD, is_staff=True)
    user.groups.add(*Group.objects.filter(name__in=[OPERATORS, AUDITORS]))
    _, token = ApiToken.issue(user=user, name="reporting benchmark")
    return {"username": USERNAME, "password": PASSWORD, "token": token}


def _user_id(cursor) -> int:
    cursor.execute("SELECT id FROM auth_user WHERE username = %s", [USERNAME])
    return cursor.fetchone()[0]


def _connectors(cursor, now) -> None:
    for number, kind in enumerate(CONNECTOR_KINDS):
        cursor.execute(
            "INSERT INTO closure_connector (name, kind, enabled, description, config_ciphertext,"
            " config_fingerprint, config_fields, accepted_counts_as_delivered, created_at)"
            " VALUES (%s, %s, %s, '', '', '', '{}', %s, %s)",
            [
                f"exec-{kind}-{number:02d}",
                kind,
                number not in (7, 13),
                kind == "teams" and number == 14,
                now - SPAN,
            ],
        )
    # One connector failing right now: its circuit is open.
    cursor.execute(
        "INSERT INTO closure_connectorcircuit (connector_id, state, consecutive_failures,"
        " open_until, probe_in_flight, changed_at)"
        " SELECT id, 'open', 5, %s, false, %s FROM closure_connector WHERE name = 'exec-slack-11'",
        [now + timedelta(minutes=10), now - timedelta(minutes=5)],
    )


def _reports(cursor, reports: int, now, user_id: int) -> None:
    # Report r is generated at an even step over the span; the newest one 10 minutes ago.
    cursor.execute(
        f"""
        INSERT INTO closure_healthreport (health_id, generated_at, generated_by_id, alert_level,
            alert_count, findings, counts, parameters)
        SELECT 'gordackexecdeliveryhealth-' || {HEX.format(value="r")},
            %(end)s - (%(reports)s - r) * (%(span)s / %(reports)s),
            %(user)s,
            CASE WHEN r = %(reports)s THEN 'critical'
                 WHEN {_spread("r")} < 150 THEN 'critical'
                 WHEN {_spread("r")} < 400 THEN 'warning' ELSE 'healthy' END,
            CASE WHEN r = %(reports)s OR {_spread("r")} < 400 THEN 1 ELSE 0 END,
            '[]', '{{}}',
            '{{"expected_interval_minutes": 60, "stale_metadata_minutes": 180}}'
        FROM generate_series(1, %(reports)s) AS r
        """,  # noqa: S608 (only constants are formatted in)
        {"end": now - timedelta(minutes=10), "reports": reports, "span": SPAN, "user": user_id},
    )


def _alerts(cursor, alerts: int, reports: int, user_id: int) -> None:
    cursor.execute(
        f"""
        INSERT INTO closure_healthalert (alert_id, health_id, created_at, created_by_id, forced,
            selected_providers, suppressed_providers, payload)
        SELECT 'gordackexechealthalert-' || {HEX.format(value="a")}, h.id,
            h.generated_at + interval '1 minute', %(user)s, false, '[]', '[]', '{{}}'
        FROM generate_series(1, %(alerts)s) AS a
        JOIN closure_healthreport h
          ON h.id = (SELECT min(id) FROM closure_healthreport)
                    + ((a - 1)::bigint * %(reports)s / %(alerts)s)
        ORDER BY a
        """,  # noqa: S608 (only constants are formatted in)
        {"alerts": alerts, "reports": reports, "user": user_id},
    )


def _plans(cursor, plans: int, now, user_id: int) -> None:
    cursor.execute(
        f"""
        INSERT INTO closure_retryplan (retry_plan_id, generated_at, generated_by_id, policy,
            provider_filter, health_filter, alert_level, decision_count, retryable_count,
            waiting_count, suppressed_count)
        SELECT 'gordackexechealthalertretry-' || {HEX.format(value="p")},
            %(end)s - (%(plans)s - p) * (%(span)s / %(plans)s), %(user)s,
            '{{"max_retry_attempts": 3, "retry_delay_minutes": 15, "backoff_multiplier": 2.0}}',
            '[]', '', CASE WHEN {_spread("p")} < 300 THEN 'critical'
                           WHEN {_spread("p")} < 500 THEN 'warning' ELSE 'healthy' END,
            0, 0, 0, 0
        FROM generate_series(1, %(plans)s) AS p
        """,  # noqa: S608 (only constants are formatted in)
        {"end": now - timedelta(minutes=20), "plans": plans, "span": SPAN, "user": user_id},
    )


def _runs(cursor, runs: int, plans: int, now, user_id: int) -> None:
    # 30 % dry runs; live runs mostly succeed. The newest live run is `partial`.
    cursor.execute(
        f"""
        INSERT INTO closure_workerrun (run_id, dry_run, status, started_at, finished_at,
            heartbeat_at, started_by_id, retry_plan_id, parameters, schedule, summary,
            selected_retries)
        SELECT 'gordackexechealthalertworker-' || {HEX.format(value="w")},
            {_spread("w")} < 300,
            CASE WHEN w = %(runs)s THEN 'partial'
                 WHEN {_spread("w")} < 300 THEN 'no_work'
                 WHEN {_spread("w")} < 340 THEN 'failed'
                 WHEN {_spread("w")} < 500 THEN 'partial' ELSE 'succeeded' END,
            t, t + interval '40 seconds', t + interval '40 seconds', %(user)s,
            (SELECT min(id) FROM closure_retryplan) + ((w - 1)::bigint * %(plans)s / %(runs)s),
            '{{"max_retry_deliveries": 25, "timeout_seconds": 10}}', '{{}}', '{{}}', '[]'
        FROM generate_series(1, %(runs)s) AS w,
             LATERAL (SELECT %(end)s - (%(runs)s - w) * (%(span)s / %(runs)s) AS t) AS started
        """,  # noqa: S608 (only constants are formatted in)
        {
            "end": now - timedelta(minutes=15),
            "runs": runs,
            "plans": plans,
            "span": SPAN,
            "user": user_id,
        },  # fmt: skip
    )


def delivery_plan(deliveries: int, executions: int, seed: int = 7) -> list[tuple]:
    """(number, status, suppression_reason, attempt_count) of each delivery, oldest first.

    Attempt counts add up to exactly `executions`: every delivery that was attempted gets one,
    the rest is shared out by heavy-tailed weights (failed and exhausted ones weigh more).
    """
    rng = random.Random(seed)
    newest = max(1, deliveries // 10)
    plan = []
    for number in range(1, deliveries + 1):
        recent = number > deliveries - newest
        draw = rng.random()
        if number > deliveries - max(1, deliveries // 500):
            status, reason = "pending", ""  # in flight now
        elif recent and draw < 0.2:
            status, reason = "failed", ""
        elif draw < 0.005:
            status, reason = "exhausted", ""
        elif draw < 0.015:
            status, reason = "accepted", ""
        elif draw < 0.065:
            status, reason = "suppressed", "acknowledged"
        elif draw < 0.095:
            status, reason = "suppressed", "waived"
        elif draw < 0.105:
            status, reason = "suppressed", "connector_disabled"
        else:
            status, reason = "delivered", ""
        plan.append([number, status, reason, 0])
    attempted = [row for row in plan if row[1] != "pending"]
    base = 1 if executions >= len(attempted) else 0
    for row in attempted[: executions if not base else None]:
        row[3] = base or 1
    extra = executions - sum(row[3] for row in plan)
    weights = [
        min(400.0, rng.paretovariate(1.3)) * (4 if row[1] in ("failed", "exhausted") else 1)
        for row in attempted
    ]
    total = sum(weights)
    running, given = 0.0, 0
    for row, weight in zip(attempted, weights, strict=True):
        running += weight
        share = int(extra * running / total) - given
        given += share
        row[3] += share
    if attempted:
        attempted[-1][3] += extra - given  # what float rounding left over
    return [tuple(row) for row in plan]


def _deliveries(cursor, deliveries: int, executions: int, now) -> None:
    cursor.execute(
        "CREATE TEMPORARY TABLE bench_delivery_plan (number bigint PRIMARY KEY, status text,"
        " reason text, attempts integer)"
    )
    with cursor.copy("COPY bench_delivery_plan FROM STDIN") as copy:
        for row in delivery_plan(deliveries, executions):
            copy.write_row(row)
    # Delivery k belongs to alert ceil(k / 5); its slot picks 5 distinct connectors per alert.
    # Attempts are 7 minutes apart from the alert's creation; failed ones are recent.
    cursor.execute(
        f"""
        INSERT INTO closure_alertdelivery (delivery_id, alert_id, connector_id, provider, status,
            suppression_reason, suppression_note, attempt_count, last_attempt_at,
            retry_not_before, delivered_at, created_at, updated_at, lease_owner, leased_until,
            lease_version)
        SELECT 'gordackexechealthalertdelivery-' || {HEX.format(value="p.number")},
            a.id, c.id, c.name,
            CASE WHEN p.status = 'accepted' AND c.kind <> 'teams' THEN 'delivered'
                 ELSE p.status END,
            p.reason, CASE WHEN p.reason = 'waived' THEN 'accepted risk' ELSE '' END,
            p.attempts, last_attempt,
            NULL,
            CASE WHEN p.status = 'delivered' OR (p.status = 'accepted' AND c.kind <> 'teams')
                 THEN last_attempt END,
            a.created_at, coalesce(last_attempt, a.created_at),
            CASE WHEN p.status = 'pending' THEN 'bench-worker' ELSE '' END,
            CASE WHEN p.status = 'pending' THEN %(lease)s::timestamptz END,
            p.attempts
        FROM bench_delivery_plan p
        JOIN closure_healthalert a
          ON a.id = (SELECT min(id) FROM closure_healthalert) + (p.number - 1) / 5
        JOIN LATERAL (
            SELECT * FROM closure_connector
            ORDER BY id OFFSET mod(a.id + mod(p.number - 1, 5) * 4, {CONNECTORS}) LIMIT 1
        ) c ON true
        CROSS JOIN LATERAL (
            SELECT CASE WHEN p.attempts > 0 THEN least(
                a.created_at + (p.attempts - 1) * interval '7 minutes',
                %(now)s - interval '2 minutes') END AS last_attempt
        ) t
        ORDER BY p.number
        """,  # noqa: S608 (only constants are formatted in)
        {"now": now, "lease": now + timedelta(hours=1)},
    )
    cursor.execute("DROP TABLE bench_delivery_plan")


def _executions(cursor, runs: int, user_id: int) -> None:
    # Attempt n of a delivery: the last one has the delivery's outcome, earlier ones failed.
    # Attempt times step back from the last attempt, so none lies in the future.
    outcome = (
        "CASE WHEN n = d.attempt_count AND d.status = 'delivered' THEN 'delivered'"
        " WHEN n = d.attempt_count AND d.status = 'accepted' THEN 'accepted' ELSE 'failed' END"
    )
    spread = _spread("(d.id * 31 + n)")
    cursor.execute(
        f"""
        INSERT INTO closure_executionrecord (execution_id, delivery_id, decision_id,
            worker_run_id, execution_status, skip_reason, executed_at, executed_by_id, provider,
            attempt_number, trigger, http_status, error_class, latency_ms, retry_after_seconds,
            request_fingerprint, response_sha256, response_excerpt, execution_hash)
        SELECT 'gordackexechealthalertexec-' || {HEX.format(value="(d.id << 20) | n")},
            d.id, NULL,
            CASE WHEN n > 1 AND {spread} >= 50 THEN (SELECT min(id) FROM closure_workerrun)
                 + mod({spread} * 7919 + d.id, %(runs)s) END,
            outcome, '', d.last_attempt_at - (d.attempt_count - n) * interval '7 minutes',
            %(user)s, d.provider, n,
            CASE WHEN n = 1 THEN 'initial' WHEN {spread} < 50 THEN 'manual' ELSE 'retry' END,
            CASE WHEN outcome IN ('delivered', 'accepted') THEN
                     CASE WHEN outcome = 'accepted' THEN 202 ELSE 200 END
                 WHEN {spread} < 100 THEN NULL
                 WHEN {spread} < 200 THEN 429 WHEN {spread} < 300 THEN 404 ELSE 503 END,
            CASE WHEN outcome <> 'failed' THEN ''
                 WHEN {spread} < 50 THEN 'timeout' WHEN {spread} < 100 THEN 'connection_error'
                 WHEN {spread} < 200 THEN 'rate_limited' WHEN {spread} < 300 THEN 'http_4xx'
                 ELSE 'http_5xx' END,
            20 + {spread} * 0.9,
            CASE WHEN outcome = 'failed' AND {spread} BETWEEN 100 AND 199 THEN 60 END,
            md5('q' || d.id || '-' || n) || md5('Q' || d.id || '-' || n),
            md5('s' || d.id || '-' || n) || md5('S' || d.id || '-' || n),
            CASE WHEN outcome = 'failed' THEN 'upstream unavailable' ELSE 'ok' END,
            md5('h' || d.id || '-' || n) || md5('H' || d.id || '-' || n)
        FROM closure_alertdelivery d
        CROSS JOIN LATERAL generate_series(1, d.attempt_count) AS n
        CROSS JOIN LATERAL (SELECT {outcome} AS outcome) AS o
        ORDER BY d.id, n
        """,  # noqa: S608 (only constants are formatted in)
        {"runs": runs, "user": user_id},
    )


def _decisions(cursor, plans: int, now) -> None:
    # History: one executed (or superseded) retry decision per delivery that was retried.
    cursor.execute(
        f"""
        INSERT INTO closure_retrydecision (plan_id, delivery_id, action, reason, status,
            retry_count, max_retry_attempts, retry_delay_minutes, next_retry_at,
            latest_attempt_at, failed_status_codes, closed_at)
        SELECT (SELECT max(id) FROM closure_retryplan p WHERE p.generated_at <= d.created_at),
            d.id, 'retry', 'retry_due',
            CASE WHEN {_spread("d.id")} < 100 THEN 'superseded' ELSE 'executed' END,
            1, 3, 15, d.created_at + interval '15 minutes', d.created_at, '[503]',
            d.created_at + interval '16 minutes'
        FROM closure_alertdelivery d
        WHERE d.attempt_count > 1 AND d.status <> 'failed'
          AND d.created_at >= (SELECT min(generated_at) FROM closure_retryplan)
        """  # noqa: S608 (only constants are formatted in)
    )
    # Exhausted deliveries: the suppress decision that used up their attempts.
    cursor.execute(
        """
        INSERT INTO closure_retrydecision (plan_id, delivery_id, action, reason, status,
            retry_count, max_retry_attempts, retry_delay_minutes, next_retry_at,
            latest_attempt_at, failed_status_codes, closed_at)
        SELECT (SELECT max(id) FROM closure_retryplan), d.id, 'suppress',
            'max_attempts_reached', 'applied', d.attempt_count, 3, 15, NULL,
            d.last_attempt_at, '[503]', %(now)s
        FROM closure_alertdelivery d WHERE d.status = 'exhausted'
        """,
        {"now": now},
    )
    # Every failed delivery has one open decision of the latest plan: most retry (some overdue
    # by more than the grace period), some wait for the backoff.
    cursor.execute(
        f"""
        INSERT INTO closure_retrydecision (plan_id, delivery_id, action, reason, status,
            retry_count, max_retry_attempts, retry_delay_minutes, next_retry_at,
            latest_attempt_at, failed_status_codes)
        SELECT (SELECT max(id) FROM closure_retryplan), d.id,
            CASE WHEN {_spread("d.id")} < 300 THEN 'wait' ELSE 'retry' END,
            CASE WHEN {_spread("d.id")} < 300 THEN 'backoff_pending' ELSE 'retry_due' END,
            'pending', d.attempt_count, 3, 15,
            CASE WHEN {_spread("d.id")} < 300 THEN %(now)s + interval '20 minutes'
                 WHEN {_spread("d.id")} < 900 THEN %(now)s - interval '5 minutes'
                 ELSE %(now)s - interval '2 hours' END,
            d.last_attempt_at, '[503]'
        FROM closure_alertdelivery d WHERE d.status = 'failed'
        """,  # noqa: S608 (only constants are formatted in)
        {"now": now},
    )
    cursor.execute(
        """
        UPDATE closure_retryplan p SET decision_count = c.total, retryable_count = c.retry,
            waiting_count = c.wait, suppressed_count = c.suppress
        FROM (SELECT plan_id, count(*) AS total,
                     count(*) FILTER (WHERE action = 'retry') AS retry,
                     count(*) FILTER (WHERE action = 'wait') AS wait,
                     count(*) FILTER (WHERE action = 'suppress') AS suppress
              FROM closure_retrydecision GROUP BY plan_id) c
        WHERE c.plan_id = p.id
        """
    )


def _acknowledgements(cursor, user_id: int) -> None:
    # Most delivered alerts are acknowledged (a few resolved, escalated or dismissed) on their
    # connector; about one in five still awaits it. Suppressed-as-acknowledged ones have one.
    cursor.execute(
        f"""
        INSERT INTO closure_acknowledgement (ack_id, alert_id, health_id, connector_id,
            provider, state, external_ref, notes, acknowledged_at, acknowledged_by_id)
        SELECT 'gordackexechealthack-' || {HEX.format(value="d.id")}, a.id, a.health_id,
            d.connector_id, d.provider,
            CASE WHEN d.status = 'suppressed' THEN 'acknowledged'
                 WHEN {_spread("d.id")} < 600 THEN 'acknowledged'
                 WHEN {_spread("d.id")} < 700 THEN 'resolved'
                 WHEN {_spread("d.id")} < 760 THEN 'escalated' ELSE 'dismissed' END,
            '', '', coalesce(d.delivered_at, d.updated_at) + interval '9 minutes', %(user)s
        FROM closure_alertdelivery d JOIN closure_healthalert a ON a.id = d.alert_id
        WHERE (d.status = 'suppressed' AND d.suppression_reason = 'acknowledged')
           OR (d.status IN ('delivered', 'accepted') AND {_spread("d.id * 7")} < 850)
        """,  # noqa: S608 (only constants are formatted in)
        {"user": user_id},
    )


# -- what the reporting benchmarks share ---------------------------------------------------------


def open_reporting_database(
    name: str, *, base_url: str, reuse: bool, deliveries: int, executions: int, evidence: int
) -> dict:
    """Set Django up on database `name`, built afresh (or, with `reuse`, as a previous run
    left it); prints its sizes and returns the benchmark user's credentials."""
    credentials = _open_reporting_database(
        name,
        base_url=base_url,
        reuse=reuse,
        deliveries=deliveries,
        executions=executions,
        evidence=evidence,
    )
    from closure.models import AlertDelivery, Evidence, ExecutionRecord

    print(
        f"rows: {AlertDelivery.objects.count():,} deliveries, "
        f"{ExecutionRecord.objects.count():,} execution records, "
        f"{Evidence.objects.count():,} evidence rows",
        flush=True,
    )
    return credentials


def _open_reporting_database(
    name: str, *, base_url: str, reuse: bool, deliveries: int, executions: int, evidence: int
) -> dict:
    from common import ROOT, bench_env, django_setup, migrate, recreate_database

    url = f"{base_url}/{name}"
    if not reuse:
        recreate_database(base_url, name)
    # Production settings serve hashed static files from a collected manifest.
    static_root = Path(tempfile.gettempdir()) / f"{name}-static"
    env = bench_env(url, DJANGO_ALLOWED_HOSTS="testserver", CAVRA_STATIC_ROOT=str(static_root))
    migrate(env)  # on reuse: indexes added since the build
    if not (static_root / "staticfiles.json").exists():
        subprocess.run(  # noqa: S603
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
    django_setup(env)
    if not reuse:
        return build_reporting_dataset(
            deliveries=deliveries, executions=executions, evidence=evidence
        )
    from django.contrib.auth import get_user_model
    from django.db import connection

    from closure.models import ApiToken, ExecutionRecord

    user = get_user_model().objects.filter(username=USERNAME).first()
    if user is None or not ExecutionRecord.objects.exists():
        raise SystemExit(f"--reuse: database {name} holds no reporting dataset; run without it")
    with connection.cursor() as cursor:
        # Statistics of indexes added since the build (on expressions, say), as autovacuum
        # would gather them.
        cursor.execute("SET statement_timeout = 0")
        cursor.execute(f"ANALYZE {', '.join(TABLES)}")
    _, token = ApiToken.issue(user=user, name="reporting benchmark")
    return {"username": USERNAME, "password": PASSWORD, "token": token}


def full_get(client, path: str, **headers) -> None:
    """One GET of `path`, its body read in full; anything but a 200 stops the benchmark."""
    response = client.get(path, secure=True, **headers)
    if response.status_code != 200:
        raise SystemExit(f"GET {path}: {response.status_code} {response.content[:300]!r}")
    if getattr(response, "streaming", False):
        b"".join(response.streaming_content)
    else:
        response.content  # noqa: B018 (rendered in full)


def captured_sql(call) -> list[str]:
    """The SQL of one `call()` (captured apart from the timed rounds: capturing costs time)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    return [query["sql"] for query in captured.captured_queries]


def measured_get(client, path: str, *, rounds: int, **headers) -> tuple[float, list[str]]:
    """GET `path` once to warm up, then `rounds` times; returns the median seconds of the full
    request (middleware, authentication, view, template or JSON rendering) and the SQL of one
    more request."""
    from common import median, timed

    def get():
        full_get(client, path, **headers)

    get()
    seconds = median([timed(get) for _ in range(rounds)])
    return seconds, captured_sql(get)
