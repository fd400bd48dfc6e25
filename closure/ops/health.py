"""Probes for the orchestrator: `/healthz` (the process answers) and `/readyz` (it can serve).

Neither needs a login or touches a session, and neither writes anything. Readiness means the
database answers and every migration on disk is applied; otherwise a 503 problem names what
is missing, so a load balancer takes the server out until it is ready again.
"""

from django.contrib.auth.decorators import login_not_required
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from closure.ops.errors import is_database_unavailable
from closure.ops.problems import problem_json


@login_not_required
@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def unapplied_migrations() -> list[str]:
    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


@login_not_required
@never_cache
@require_GET
def readyz(request):
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
        pending = unapplied_migrations()
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        # A broken connection must not be reused by the next probe.
        connections[DEFAULT_DB_ALIAS].close_if_unusable_or_obsolete()
        return problem_json(
            status=503,
            code="database_unavailable",
            title="Not ready",
            detail="The database does not answer.",
            headers={"Retry-After": "5"},
        )
    if pending:
        return problem_json(
            status=503,
            code="migrations_pending",
            title="Not ready",
            detail=f"{len(pending)} migration(s) not applied: {', '.join(pending[:10])}",
            headers={"Retry-After": "5"},
        )
    return JsonResponse({"status": "ready", "database": "ok", "migrations": "applied"})
