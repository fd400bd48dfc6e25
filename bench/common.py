"""What every benchmark shares: a scratch PostgreSQL database, the environment the product runs
with, Django set-up inside the benchmark process, and the way figures are printed.

Benchmarks import it as `from common import ...` (they run as `python bench/<name>.py`, so this
directory is on sys.path).
"""

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def recreate_database(base_url: str, name: str) -> str:
    """Drops and re-creates database `name`; returns its URL."""
    import psycopg

    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"


def bench_env(database_url: str, **extra: str) -> dict:
    """The environment of the product under measurement: production settings (DEBUG off, so no
    query log), a fixed secret key, errors-only logging."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "cavra-bench-secret-key-not-for-production-0123456789",
        "CAVRA_LOG_LEVEL": "ERROR",
        **extra,
    }


def migrate(env: dict) -> None:
    subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )


def django_setup(env: dict) -> None:
    """Configures Django in this process for the database in `env` (call once)."""
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cavra.settings")
    import django

    django.setup()


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(label: str, value: float, unit: str, *, reference: float | None = None) -> None:
    """One aligned line: `label  value unit  [ratio to reference]`."""
    line = f"{label:<52} {value:>12,.2f} {unit}"
    if reference:
        line += f"   ratio {value / reference:6.2f}"
    print(line, flush=True)
