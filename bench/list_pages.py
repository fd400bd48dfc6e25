"""Benchmark 5: admin changelists and console list pages on a million execution records.

Builds its own database (`cavra_bench_lists`, dropped and re-created; `--reuse` keeps the one a
previous run built) with the reporting dataset of `bench/dataset.py` — by default 100,000 alert
deliveries, 1,000,000 execution records and 1,000,000 evidence rows — then, for each page,
unfiltered and filtered, measures the median over `--rounds` (after one warm-up request) of the
full GET through Django's test Client in this process, signed in with a session as a staff
auditor-operator: middleware, session and permission queries, the filters, the bounded count,
the page of rows and the template rendering. It prints each median with the number of SQL
queries of one request (captured on an extra request, not a timed one), names any other
aggregate over a whole unfiltered table (without WHERE or LIMIT), and exits non-zero if any page
counts without a bound (a `COUNT(*)` without a LIMIT inside).

Target: every page under 300 ms, no full-table COUNT(*).

    .venv/bin/python bench/list_pages.py                     # issue scale, 5 rounds
    .venv/bin/python bench/list_pages.py --executions 100000 --deliveries 10000 --evidence 10000
    .venv/bin/python bench/list_pages.py --reuse             # skip the rebuild
"""

import argparse
import re

from common import DEFAULT_PG, report
from dataset import measured_get, open_reporting_database

TARGET_MS = 300.0


def pages(sample: dict) -> list[tuple[str, str]]:
    """(label, path) of each page measured; `sample` holds real values to filter on."""
    execution_id, delivery_id, provider = (
        sample["execution_id"],
        sample["delivery_id"],
        sample["provider"],
    )
    kind = sample["metadata_kind"]
    month = sample["month"]
    return [
        ("admin executions", "/admin/closure/executionrecord/"),
        ("admin executions ?status=failed",
         "/admin/closure/executionrecord/?execution_status__exact=failed"),
        ("admin executions ?provider", f"/admin/closure/executionrecord/?provider={provider}"),
        ("admin executions ?trigger=manual&error=timeout",
         "/admin/closure/executionrecord/?trigger__exact=manual&error_class__exact=timeout"),
        ("admin executions ?month (date hierarchy)",
         f"/admin/closure/executionrecord/?executed_at__year={month.year}"
         f"&executed_at__month={month.month}"),
        ("admin executions ?q=execution_id", f"/admin/closure/executionrecord/?q={execution_id}"),
        ("admin executions ?q=delivery_id", f"/admin/closure/executionrecord/?q={delivery_id}"),
        ("admin deliveries", "/admin/closure/alertdelivery/"),
        ("admin deliveries ?status=failed", "/admin/closure/alertdelivery/?status__exact=failed"),
        ("admin evidence", "/admin/closure/evidence/"),
        ("admin evidence ?kind", f"/admin/closure/evidence/?metadata_kind__exact={kind}"),
        ("admin evidence ?provider", f"/admin/closure/evidence/?provider={provider}"),
        ("console executions", "/console/executions/"),
        ("console executions ?status=failed", "/console/executions/?execution_status=failed"),
        ("console executions ?provider", f"/console/executions/?provider={provider}"),
        ("console executions ?span=14d", "/console/executions/?span=14d"),
        ("console executions ?delivery_id", f"/console/executions/?delivery_id={delivery_id}"),
        ("console deliveries", "/console/deliveries/"),
        ("console deliveries ?status=failed", "/console/deliveries/?status=failed"),
        ("console deliveries ?provider", f"/console/deliveries/?provider={provider}"),
        ("console alerts", "/console/alerts/"),
        ("console acknowledgements", "/console/acknowledgements/"),
        ("console retry plans", "/console/retry-plans/"),
        ("console worker runs", "/console/worker-runs/"),
        ("console health reports", "/console/health/"),
        ("console evidence", "/console/evidence/"),
        ("console evidence ?kind", f"/console/evidence/?metadata_kind={kind}"),
    ]  # fmt: skip


COUNT = re.compile(r"\bCOUNT\(", re.IGNORECASE)
COUNT_STAR = re.compile(r"\bCOUNT\(\*\)", re.IGNORECASE)
TABLE = re.compile(r'FROM "(closure_\w+)"')


def unbounded_counts(sql: list[str]) -> list[str]:
    """Pagination counts that read a whole (filtered) table: a COUNT(*) without a LIMIT."""
    return [_named(q) for q in sql if COUNT_STAR.search(q) and " LIMIT " not in q]


def whole_table_reads(sql: list[str]) -> list[str]:
    """Other aggregates over a table with no WHERE and no LIMIT (a chart of every row)."""
    return [
        _named(q)
        for q in sql
        if COUNT.search(q) and not COUNT_STAR.search(q) and " LIMIT " not in q
        and " WHERE " not in q
    ]  # fmt: skip


def _named(query: str) -> str:
    tables = sorted(set(TABLE.findall(query)))
    return f"{', '.join(tables) or '?'}: {query[:120]}…"


def sample_values() -> dict:
    from django.db.models import Max

    from closure.models import AlertDelivery, Evidence, ExecutionRecord

    execution = ExecutionRecord.objects.order_by("id")[ExecutionRecord.objects.count() // 2]
    delivery = AlertDelivery.objects.filter(attempt_count__gt=1).order_by("id").first()
    newest = ExecutionRecord.objects.aggregate(last=Max("executed_at"))["last"]
    return {
        "execution_id": execution.execution_id,
        "delivery_id": delivery.delivery_id,
        "provider": execution.provider,
        "metadata_kind": Evidence.objects.order_by("sequence").first().metadata_kind,
        "month": newest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--evidence", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server URL, no database")
    parser.add_argument("--database", default="cavra_bench_lists")
    parser.add_argument("--reuse", action="store_true", help="keep the database a run built")
    parser.add_argument("--only", help="measure only the pages whose label contains this")
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

    print(f"rounds: {args.rounds}", flush=True)
    client = Client()
    client.force_login(get_user_model().objects.get(username=credentials["username"]))
    slow, counts, scans = [], [], []
    for label, path in pages(sample_values()):
        if args.only and args.only not in label:
            continue
        seconds, sql = measured_get(client, path, rounds=args.rounds)
        report(f"{label} ({len(sql)} q)", seconds * 1000, "ms")
        for query in unbounded_counts(sql):
            print(f"    full-table COUNT(*): {query}")
            counts.append(label)
        for query in whole_table_reads(sql):
            print(f"    whole-table read: {query}")
            scans.append(label)
        if seconds * 1000 >= TARGET_MS:
            slow.append(label)
    print(
        f"target: every page under {TARGET_MS:g} ms, no full-table COUNT(*); "
        f"{len(slow)} page(s) at or over it{': ' + ', '.join(slow) if slow else ''}; "
        f"{len(counts)} full-table COUNT(*); {len(scans)} other whole-table read(s)"
    )
    if counts:
        raise SystemExit(f"full-table COUNT(*) on: {', '.join(counts)}")


if __name__ == "__main__":
    main()
