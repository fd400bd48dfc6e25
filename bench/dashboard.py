"""Benchmark 1: the final reporting closure dashboard on a large dataset, on PostgreSQL.

Builds its own database (`cavra_bench_dashboard`, dropped and re-created; `--reuse` keeps the
one a previous run built) with the reporting dataset of `bench/dataset.py` — by default 100,000
alert deliveries, 1,000,000 execution records and 1,000,000 evidence rows — then measures, after
one warm-up request, the median over `--rounds` of:

- api:        GET /…/final-reporting-closure-dashboard with an API token (Bearer), through
              Django's test Client in this process: the whole middleware stack, token
              authentication, permission checks, `closure_dashboard()` and JSON rendering;
- console:    GET /console/closure/ with a signed-in session (session and user loaded from the
              database on every request), the same dashboard plus the page's own queries and
              the template rendering;
- reference:  the same aggregates (risks with their counts and up to 20 refs each, the
              summary counts) as ONE hand-written SQL statement run on a raw cursor, rows
              fetched; no Django request, no JSON rendering.

The three are timed in turn within each round, so that load from elsewhere on the machine
weighs on all of them alike. It prints each median, the number of SQL queries of one request
(captured on an extra request, not a timed one) and each request's ratio to the reference.

Targets: at most 10 queries for the dashboard, the same number whatever the rows, and a
request no slower than twice the hand-written SQL.

    .venv/bin/python bench/dashboard.py                      # issue scale, 5 rounds
    .venv/bin/python bench/dashboard.py --deliveries 10000 --executions 100000 --evidence 10000
    .venv/bin/python bench/dashboard.py --reuse              # skip the rebuild
"""

import argparse

from common import DEFAULT_PG, median, report, timed
from dataset import captured_sql, full_get, open_reporting_database

DATABASE = "cavra_bench_dashboard"
API_PATH = (
    "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery/"
    "final-reporting-closure-dashboard"
)
CONSOLE_PATH = "/console/closure/"
MAX_QUERIES = 10
MAX_RATIO = 2.0

# The dashboard's aggregates, written by hand as one statement: what the database must do at
# the least. %(now)s, %(stale_before)s, %(overdue_before)s are bound per round.
REFERENCE_SQL = """
WITH latest AS (
    SELECT h.health_id, h.generated_at, h.alert_level,
           EXISTS (SELECT 1 FROM closure_healthalert a
                   JOIN closure_alertdelivery d ON d.alert_id = a.id
                   WHERE a.health_id = h.id) AS alert_sent
    FROM closure_healthreport h ORDER BY h.generated_at DESC, h.id DESC LIMIT 1
), closing_acks AS (
    SELECT DISTINCT health_id, connector_id FROM closure_acknowledgement
    WHERE state IN ('acknowledged', 'resolved')
), open_deliveries AS MATERIALIZED (
    SELECT d.id, d.delivery_id, d.created_at,
           coalesce(d.delivered_at, d.last_attempt_at) AS reached_at,
           CASE WHEN d.status = 'exhausted' THEN 'exhausted'
                WHEN d.status IN ('failed', 'pending') THEN 'failed'
                WHEN d.status = 'delivered' OR c.accepted_counts_as_delivered
                    THEN 'unacknowledged'
                ELSE 'unconfirmed' END AS risk
    FROM closure_alertdelivery d
    JOIN closure_connector c ON c.id = d.connector_id
    JOIN closure_healthalert a ON a.id = d.alert_id
    LEFT JOIN closing_acks k ON k.health_id = a.health_id AND k.connector_id = d.connector_id
    WHERE d.status IN ('exhausted', 'failed')
       OR (d.status = 'pending' AND (d.leased_until IS NULL OR d.leased_until <= %(now)s))
       OR (d.status IN ('delivered', 'accepted') AND k.health_id IS NULL)
), ranked AS (
    SELECT risk, delivery_id, count(*) OVER (PARTITION BY risk) AS total,
           row_number() OVER (PARTITION BY risk
               ORDER BY CASE WHEN risk = 'unacknowledged' THEN reached_at ELSE created_at END,
                        id) AS rank
    FROM open_deliveries
), overdue AS (
    SELECT d.delivery_id, count(*) OVER () AS total
    FROM closure_retrydecision r JOIN closure_alertdelivery d ON d.id = r.delivery_id
    WHERE r.status = 'pending' AND r.action = 'retry' AND r.next_retry_at < %(overdue_before)s
    ORDER BY r.next_retry_at, r.id LIMIT 20
)
SELECT
    (SELECT row(health_id, generated_at < %(stale_before)s, alert_level, alert_sent)::text
     FROM latest),
    (SELECT json_object_agg(status, n) FROM
        (SELECT status, count(*) AS n FROM closure_alertdelivery GROUP BY status) s),
    (SELECT json_agg(json_build_array(risk, total, delivery_id)) FROM ranked WHERE rank <= 20),
    (SELECT json_agg(json_build_array(total, delivery_id)) FROM overdue),
    (SELECT row(run_id, status)::text FROM closure_workerrun
     WHERE NOT dry_run AND status <> 'running' ORDER BY started_at DESC, id DESC LIMIT 1),
    (SELECT json_agg(c.name ORDER BY c.name) FROM closure_connectorcircuit s
     JOIN closure_connector c ON c.id = s.connector_id WHERE s.state <> 'closed'),
    (SELECT count(*) FROM closure_retryplan),
    (SELECT json_object_agg(status, n) FROM
        (SELECT status, count(*) AS n FROM closure_workerrun WHERE NOT dry_run
         GROUP BY status) s),
    (SELECT json_object_agg(execution_status, n) FROM
        (SELECT execution_status, count(*) AS n FROM closure_executionrecord
         GROUP BY execution_status) s),
    (SELECT count(*) FROM closure_acknowledgement)
"""


def reference_query() -> None:
    """The hand-written statement, run on a raw cursor with its rows fetched."""
    from datetime import timedelta

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    params = {
        "now": now,
        "stale_before": now - timedelta(minutes=settings.CAVRA_HEALTH_STALE_MINUTES),
        "overdue_before": now - timedelta(minutes=settings.CAVRA_RETRY_OVERDUE_GRACE_MINUTES),
    }
    with connection.cursor() as cursor:
        cursor.execute(REFERENCE_SQL, params)
        cursor.fetchall()


def interleaved_medians(rounds: int, runs: dict) -> dict[str, float]:
    """One warm-up of each, then `rounds` rounds that run each once in turn (so that load from
    elsewhere on the machine hits all of them alike); the median seconds of each."""
    for run in runs.values():
        run()
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            timings[name].append(timed(run))
    return {name: median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--evidence", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server URL, no database")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--reuse", action="store_true", help="keep the database a run built")
    args = parser.parse_args()

    credentials = open_reporting_database(
        args.database,
        base_url=args.pg,
        reuse=args.reuse,
        deliveries=args.deliveries,
        executions=args.executions,
        evidence=args.evidence,
    )
    from django.contrib.auth import get_user_model
    from django.test import Client

    from closure.selectors import closure_dashboard

    print(f"rounds: {args.rounds}", flush=True)
    selector_queries = len(captured_sql(closure_dashboard))
    dashboard = closure_dashboard()
    print(
        f"dashboard: {dashboard['closure_state']}, {dashboard['alert_level']}, "
        f"open items {', '.join(dashboard['open_items']) or '-'}",
        flush=True,
    )

    api_client = Client()
    token = {"HTTP_AUTHORIZATION": f"Bearer {credentials['token']}"}
    console_client = Client()
    console_client.force_login(get_user_model().objects.get(username=credentials["username"]))
    medians = interleaved_medians(
        args.rounds,
        {
            "reference": reference_query,
            "api": lambda: full_get(api_client, API_PATH, **token),
            "console": lambda: full_get(console_client, CONSOLE_PATH),
        },
    )
    reference, api_seconds, console_seconds = (
        medians["reference"],
        medians["api"],
        medians["console"],
    )
    api_sql = captured_sql(lambda: full_get(api_client, API_PATH, **token))
    console_sql = captured_sql(lambda: full_get(console_client, CONSOLE_PATH))

    report("reference: one hand-written SQL statement", reference * 1000, "ms")
    report(
        f"api: closure dashboard, token ({len(api_sql)} queries)",
        api_seconds * 1000,
        "ms",
        reference=reference * 1000,
    )
    report(
        f"console: /console/closure/, session ({len(console_sql)} queries)",
        console_seconds * 1000,
        "ms",
        reference=reference * 1000,
    )
    print(f"closure_dashboard() alone: {selector_queries} queries")
    print(
        f"target: dashboard at most {MAX_QUERIES} queries (constant), ratio to the reference "
        f"at most {MAX_RATIO:g}; api {api_seconds / reference:.2f}, "
        f"console {console_seconds / reference:.2f}"
    )


if __name__ == "__main__":
    main()
