"""Retry planning over N failed deliveries on PostgreSQL: time and query count, beside one
INSERT … SELECT that writes the same decision rows.

Builds its own database `cavra_bench_planning` (dropped and re-created) and seeds it: N failed
deliveries across 20 connectors (one disabled), each with its earlier failed execution records
(1 to 3 attempts, so some are exhausted by the default policy), some acknowledged on their
connector, some with a connector's Retry-After, recent and old attempts (wait and retry), plus
deliveries that are not candidates (delivered, waived, already exhausted, pending with a live
lease). Then, per round, from the same seeded state each time:

- service:   `retry_plan_create` in-process: candidates, decisions, locks, superseding,
             suppressions, decision rows, the plan and its evidence row;
- api:       POST A/retry-plan through the whole Django stack in-process (token auth, the
             RetryPlanView, the rendered JSON response);
- reference: one raw-SQL `INSERT … SELECT` (with the plan row in a CTE) producing the same
             decision rows and nothing else: no evidence, no response, no suppressions.

The first round checks that the reference's rows equal the service's rows. Prints median
seconds, the queries each issued, the ratio to the reference and the target (ratio ≤ 3,
queries growing with batches of 1,000, never with rows).

    .venv/bin/python bench/retry_planning.py                      # 10,000 deliveries, 5 rounds
    .venv/bin/python bench/retry_planning.py --deliveries 2000 --rounds 3
"""

import argparse
import random
import time
import warnings
from datetime import timedelta

from common import (
    DEFAULT_PG,
    bench_env,
    django_setup,
    median,
    migrate,
    recreate_database,
    report,
)

DATABASE = "cavra_bench_planning"
CONNECTORS = 20
TARGET_RATIO = 3.0
PLAN_PATH = (
    "/runtime/go-pilot/rollback-drill-notifications/acknowledgements/audit-delivery"
    "/recovery-executive-report/delivery-retry-health-alerts/retry-plan"
)
# The decision rows, by the columns the service and the reference must agree on.
DECISIONS_SQL = """
SELECT delivery_id, action, reason, status, retry_count, max_retry_attempts,
       retry_delay_minutes, next_retry_at, latest_execution_id, latest_attempt_at,
       failed_status_codes, closed_at
FROM closure_retrydecision ORDER BY delivery_id
"""

REFERENCE_SQL = """
WITH plan AS (
    INSERT INTO closure_retryplan (
        retry_plan_id, generated_at, generated_by_id, policy, provider_filter, health_filter,
        alert_level, decision_count, retryable_count, waiting_count, suppressed_count
    )
    VALUES (%(plan_id)s, %(now)s, %(user_id)s, '{}', '[]', '', 'critical', 0, 0, 0, 0)
    RETURNING id
),
candidate AS (
    SELECT d.id, d.attempt_count, d.last_attempt_at, d.retry_not_before, c.enabled,
           EXISTS (
               SELECT 1 FROM closure_acknowledgement a
               WHERE a.health_id = al.health_id AND a.connector_id = d.connector_id
                 AND a.state IN ('acknowledged', 'resolved')
           ) AS acknowledged,
           LEAST(%(max_delay)s, %(delay)s * power(%(multiplier)s,
                 GREATEST(0, d.attempt_count - 1))) AS raw_delay,
           COALESCE(d.last_attempt_at, d.created_at) AS base
    FROM closure_alertdelivery d
    JOIN closure_healthalert al ON al.id = d.alert_id
    JOIN closure_connector c ON c.id = d.connector_id
    WHERE (d.status = 'failed'
           OR (d.status = 'pending' AND (d.leased_until IS NULL OR d.leased_until <= %(now)s)))
      AND (d.leased_until IS NULL OR d.leased_until <= %(now)s)
      AND NOT EXISTS (
          SELECT 1 FROM closure_retrydecision r
          WHERE r.delivery_id = d.id AND r.status = 'in_flight'
      )
),
timed AS (
    SELECT candidate.*,
           CASE WHEN %(allow_immediate)s THEN raw_delay ELSE GREATEST(1.0, raw_delay) END
               AS delay_minutes
    FROM candidate
),
scheduled AS (
    SELECT timed.*,
           base + delay_minutes * interval '1 minute' AS backoff_until,
           GREATEST(base + delay_minutes * interval '1 minute', retry_not_before) AS due_at
    FROM timed
),
decided AS (
    SELECT scheduled.*,
           CASE WHEN acknowledged OR NOT enabled OR attempt_count >= %(max_attempts)s
                THEN 'suppress'
                WHEN %(now)s < due_at THEN 'wait'
                ELSE 'retry' END AS action,
           CASE WHEN acknowledged THEN 'alert_acknowledged'
                WHEN NOT enabled THEN 'connector_disabled'
                WHEN attempt_count >= %(max_attempts)s THEN 'max_attempts_reached'
                WHEN %(now)s >= due_at THEN 'retry_due'
                WHEN retry_not_before > backoff_until THEN 'retry_after_pending'
                ELSE 'backoff_pending' END AS reason
    FROM scheduled
)
INSERT INTO closure_retrydecision (
    plan_id, delivery_id, action, reason, status, retry_count, max_retry_attempts,
    retry_delay_minutes, next_retry_at, latest_execution_id, latest_attempt_at,
    failed_status_codes, closed_at
)
SELECT plan.id, decided.id, action, reason,
       CASE WHEN action = 'suppress' THEN 'applied' ELSE 'pending' END,
       attempt_count, %(max_attempts)s, delay_minutes,
       CASE WHEN action = 'suppress' THEN NULL ELSE due_at END,
       latest.id, last_attempt_at, codes.failed,
       CASE WHEN action = 'suppress' THEN %(now)s END
FROM decided
CROSS JOIN plan
LEFT JOIN LATERAL (
    SELECT e.id FROM closure_executionrecord e
    WHERE e.delivery_id = decided.id AND e.execution_status <> 'skipped'
    ORDER BY e.attempt_number DESC LIMIT 1
) latest ON true
CROSS JOIN LATERAL (
    SELECT COALESCE(jsonb_agg(e.http_status ORDER BY e.attempt_number), '[]') AS failed
    FROM closure_executionrecord e
    WHERE e.delivery_id = decided.id AND e.execution_status = 'failed'
      AND e.http_status IS NOT NULL
) codes
"""


def seed(count: int, seed_value: int = 7) -> None:
    """N failed deliveries (the candidates) plus a tenth as many that are not candidates."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from closure.models import (
        Acknowledgement,
        AlertDelivery,
        Connector,
        ExecutionRecord,
        HealthAlert,
        HealthReport,
    )

    rng = random.Random(seed_value)
    user = get_user_model().objects.create_user("bench-operator")
    user.groups.add(Group.objects.get(name="operators"))
    connectors = Connector.objects.bulk_create(
        Connector(name=f"bench-{n:02d}", kind="webhook", enabled=n != 13) for n in range(CONNECTORS)
    )
    now = timezone.now()
    others = count // 10
    alert_count = -(-(count + others) // CONNECTORS)
    reports = HealthReport.objects.bulk_create(
        HealthReport(
            generated_at=now - timedelta(hours=6, minutes=n),
            generated_by=user,
            alert_level="critical",
            alert_count=1,
            counts={"events": 1},
        )
        for n in range(max(1, alert_count // 4))
    )
    alerts = HealthAlert.objects.bulk_create(
        (
            HealthAlert(
                health=reports[n % len(reports)],
                created_at=now - timedelta(hours=5),
                created_by=user,
                selected_providers=[c.name for c in connectors],
            )
            for n in range(alert_count)
        ),
        batch_size=1000,
    )
    pairs = [(alert, connector) for alert in alerts for connector in connectors]
    rng.shuffle(pairs)
    deliveries = []
    for n, (alert, connector) in enumerate(pairs[: count + others]):
        attempts = rng.choice((1, 1, 2, 2, 3))
        # Half the attempts are recent (the backoff still runs: wait), half are old (retry).
        last = now - timedelta(minutes=rng.choice((2, 5, 10, 90, 180, 600)))
        status, reason, lease = "failed", "", None
        if n >= count:
            status = rng.choice(("delivered", "suppressed", "exhausted", "pending"))
            reason = "waived" if status == "suppressed" else ""
            lease = now + timedelta(days=1) if status == "pending" else None
        deliveries.append(
            AlertDelivery(
                alert=alert,
                connector=connector,
                provider=connector.name,
                status=status,
                suppression_reason=reason,
                attempt_count=attempts,
                last_attempt_at=last,
                retry_not_before=last + timedelta(minutes=45) if n % 17 == 0 else None,
                delivered_at=last if status == "delivered" else None,
                created_at=alert.created_at,
                updated_at=last,
                lease_owner="bench-worker" if lease else "",
                leased_until=lease,
            )
        )
    deliveries = AlertDelivery.objects.bulk_create(deliveries, batch_size=1000)
    executions = []
    for delivery in deliveries:
        for attempt in range(1, delivery.attempt_count + 1):
            timeout = rng.random() < 0.2
            executions.append(
                ExecutionRecord(
                    delivery=delivery,
                    execution_status="failed",
                    executed_at=delivery.last_attempt_at
                    - timedelta(minutes=30 * (delivery.attempt_count - attempt)),
                    executed_by=user,
                    provider=delivery.provider,
                    attempt_number=attempt,
                    trigger="initial" if attempt == 1 else "retry",
                    http_status=None if timeout else rng.choice((500, 502, 503, 429)),
                    error_class="timeout" if timeout else "http_5xx",
                    latency_ms=rng.randint(20, 900),
                    execution_hash=f"{rng.getrandbits(256):064x}",
                )
            )
    ExecutionRecord.objects.bulk_create(executions, batch_size=2000)
    # A twentieth of the (report, connector) pairs are acknowledged on that connector.
    by_pair = {(d.alert.health_id, d.connector_id): d for d in deliveries}
    acknowledged = dict(rng.sample(sorted(by_pair.items()), len(by_pair) // 20))
    Acknowledgement.objects.bulk_create(
        Acknowledgement(
            alert=d.alert,
            health_id=health_pk,
            connector_id=connector_pk,
            provider=d.provider,
            state="acknowledged",
            acknowledged_at=now - timedelta(minutes=1),
            acknowledged_by=user,
        )
        for (health_pk, connector_pk), d in acknowledged.items()
    )
    with _cursor() as cursor:
        cursor.execute(
            "CREATE TABLE bench_delivery_seed AS "
            "SELECT id, status, suppression_reason, updated_at FROM closure_alertdelivery"
        )
        cursor.execute("VACUUM ANALYZE")
    print(
        f"seeded {count:,} failed deliveries ({others:,} others) across {CONNECTORS} connectors, "
        f"{len(executions):,} execution records, {len(acknowledged):,} acknowledgements",
        flush=True,
    )


def _cursor():
    from django.db import connection

    return connection.cursor()


def reset() -> None:
    """Back to the seeded state: no plans or decisions, deliveries as seeded; fresh stats."""
    with _cursor() as cursor:
        cursor.execute("DELETE FROM closure_retrydecision")
        cursor.execute("DELETE FROM closure_retryplan")
        cursor.execute(
            "UPDATE closure_alertdelivery d SET status = s.status, "
            "suppression_reason = s.suppression_reason, updated_at = s.updated_at "
            "FROM bench_delivery_seed s WHERE d.id = s.id AND d.status <> s.status"
        )
        # FULL: an emptied table keeps its pages otherwise, and every anti-join on decisions
        # (in-flight ones) would scan them once per delivery.
        for table in ("closure_retrydecision", "closure_retryplan"):
            cursor.execute(f"VACUUM FULL ANALYZE {table}")
        cursor.execute("VACUUM ANALYZE closure_alertdelivery")


class QueryCounter:
    """Counts the queries Django sends, without the debug cursor's bookkeeping."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def counted(fn) -> tuple[float, int, object]:
    from django.db import connection

    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        started = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - started
    return elapsed, counter.count, result


def reference(*, now, policy, user_id: int) -> float:
    from django.db import transaction

    from closure.models.base import PublicId
    from closure.models.retries import RETRY_PLAN_ID_PREFIX

    params = {
        "plan_id": PublicId(RETRY_PLAN_ID_PREFIX)(),
        "now": now,
        "user_id": user_id,
        "max_attempts": policy.max_retry_attempts,
        "delay": policy.retry_delay_minutes,
        "multiplier": policy.backoff_multiplier,
        "max_delay": policy.max_delay_minutes,
        "allow_immediate": policy.allow_immediate_retry,
    }
    started = time.perf_counter()
    with transaction.atomic(), _cursor() as cursor:
        cursor.execute(REFERENCE_SQL, params)
    return time.perf_counter() - started


def decision_rows() -> list[tuple]:
    with _cursor() as cursor:
        cursor.execute(DECISIONS_SQL)
        return cursor.fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=10_000, help="failed deliveries")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server URL, no database")
    parser.add_argument("--database", default=DATABASE)
    args = parser.parse_args()

    env = bench_env(recreate_database(args.pg, args.database), CAVRA_API_POST_RATE="100000/minute")
    migrate(env)
    django_setup(env)
    # The in-process API client runs without collected static files; that is fine here.
    warnings.filterwarnings("ignore", message="No directory at")

    from django.contrib.auth import get_user_model
    from django.test import Client

    from closure.models import ApiToken
    from closure.services.retries import BATCH_SIZE, RetryPolicy, retry_plan_create

    seed(args.deliveries)
    user = get_user_model().objects.get(username="bench-operator")
    _, raw_token = ApiToken.issue(user=user, name="bench")
    client = Client(SERVER_NAME="localhost")
    policy = RetryPolicy()
    batches = -(-args.deliveries // BATCH_SIZE)
    print(
        f"policy {policy.as_dict()}; {batches} batches of {BATCH_SIZE}; "
        f"POST throttle raised through the environment: CAVRA_API_POST_RATE=100000/minute",
        flush=True,
    )

    service_times, api_times, reference_times = [], [], []
    service_queries = api_queries = 0
    for round_number in range(args.rounds):
        reset()
        seconds, service_queries, (plan, _) = counted(
            lambda: retry_plan_create(actor=user, policy=policy)
        )
        service_times.append(seconds)
        if round_number == 0:
            counts = (plan.retryable_count, plan.waiting_count, plan.suppressed_count)
            service_rows = decision_rows()
            reset()
            reference(now=plan.generated_at, policy=policy, user_id=user.pk)
            same = decision_rows() == service_rows
            print(
                f"plan: {plan.decision_count:,} decisions (retry {counts[0]:,}, wait "
                f"{counts[1]:,}, suppress {counts[2]:,}); reference rows identical: {same}",
                flush=True,
            )
            if not same:
                raise SystemExit("the reference does not write the service's decision rows")
        reset()
        seconds, api_queries, response = counted(
            lambda: client.post(
                PLAN_PATH,
                data="{}",
                content_type="application/json",
                secure=True,
                headers={"Authorization": f"Bearer {raw_token}"},
            )
        )
        if response.status_code != 201:
            raise SystemExit(f"API answered {response.status_code}: {response.content[:500]!r}")
        api_times.append(seconds)
        reset()
        reference_times.append(reference(now=plan.generated_at, policy=policy, user_id=user.pk))
        print(
            f"round {round_number + 1}: service {service_times[-1]:.3f} s, api "
            f"{api_times[-1]:.3f} s ({len(response.content) / 1e6:.1f} MB), reference "
            f"{reference_times[-1]:.3f} s",
            flush=True,
        )

    ref = median(reference_times)
    print(f"\nretry planning, {args.deliveries:,} failed deliveries, median of {args.rounds}")
    report("reference: one INSERT … SELECT (1 query)", ref, "s")
    report(
        f"service retry_plan_create ({service_queries} queries)",
        median(service_times),
        "s",
        reference=ref,
    )
    report(f"api POST retry-plan ({api_queries} queries)", median(api_times), "s", reference=ref)
    print(
        f"target: service ratio ≤ {TARGET_RATIO:g}; queries grow with the {batches} batches, "
        f"never with rows"
    )


if __name__ == "__main__":
    main()
