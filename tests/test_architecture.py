"""Rules of docs/architecture.md that import-linter cannot state: the worker only orchestrates.

Its writes are services (closure/services/worker_runs.py, closure/services/attempts.py), so it
opens no transaction, takes no row lock, writes no row and appends no evidence itself.
"""

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent.parent / "closure" / "worker.py"
ORM_WRITES = {"save", "update", "create", "delete", "bulk_create", "bulk_update"}


def _violations(source: str) -> list[str]:
    """Each use of a transaction, a row lock, an ORM write or the ledger, as `line: what`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {alias.name for alias in node.names}
            if module == "closure.evidence" or module.startswith("closure.evidence."):
                found.append(f"{node.lineno}: imports {module}")
            if module == "closure" and "evidence" in names:
                found.append(f"{node.lineno}: imports closure.evidence")
            if "transaction" in names:
                found.append(f"{node.lineno}: imports transaction")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "closure.evidence" or alias.name.startswith("closure.evidence."):
                    found.append(f"{node.lineno}: imports {alias.name}")
        elif "transaction" in (getattr(node, "id", None), getattr(node, "attr", None)):
            found.append(f"{node.lineno}: uses transaction")
        elif isinstance(node, ast.Attribute) and node.attr == "select_for_update":
            found.append(f"{node.lineno}: locks rows")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ORM_WRITES
        ):
            found.append(f"{node.lineno}: calls .{node.func.attr}()")
    return sorted(found, key=lambda line: int(line.split(":")[0]))


def test_worker_opens_no_transaction_writes_no_row_and_appends_no_evidence():
    # given the worker's source
    source = WORKER.read_text(encoding="utf-8")

    # when it is searched for transactions, row locks, ORM writes and ledger imports
    violations = _violations(source)

    # then there are none: every write goes through a service
    assert violations == []


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("from django.db import transaction\n", ["1: imports transaction"]),
        ("with transaction.atomic():\n    pass\n", ["1: uses transaction"]),
        ("import django.db\ndjango.db.transaction.atomic()\n", ["2: uses transaction"]),
        ("WorkerRun.objects.select_for_update()\n", ["1: locks rows"]),
        ("run.save(update_fields=['status'])\n", ["1: calls .save()"]),
        ("WorkerRun.objects.filter(pk=1).update(status='x')\n", ["1: calls .update()"]),
        ("WorkerRun.objects.create()\n", ["1: calls .create()"]),
        ("qs.delete()\n", ["1: calls .delete()"]),
        ("RetryDecision.objects.bulk_create([])\n", ["1: calls .bulk_create()"]),
        ("RetryDecision.objects.bulk_update([], ['status'])\n", ["1: calls .bulk_update()"]),
        (
            "from closure.evidence.ledger import evidence_append\n",
            ["1: imports closure.evidence.ledger"],
        ),
        ("from closure import evidence\n", ["1: imports closure.evidence"]),
        ("import closure.evidence.canonical\n", ["1: imports closure.evidence.canonical"]),
        ("from closure.services.worker_runs import worker_run_finish\n", []),
    ],
)
def test_worker_architecture_check_finds_each_kind_of_write(snippet, expected):
    # given a line of code, when it is checked, then it is reported exactly when it writes
    assert _violations(snippet) == expected
