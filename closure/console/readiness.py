"""Console pages for release readiness and the printable operator runbook.

`GET /console/readiness/` shows the readiness gate check by check and writes nothing (`?full=1`
verifies the whole evidence chain, not only the rows after the latest signed checkpoint).
`POST /console/readiness/runbook/` exports the runbook through the same service as the API: the
readiness summary and the export are recorded as evidence, and the answer is the runbook as a
printable page, or as the Markdown download with `format=markdown`.
"""

from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from closure.console.views import console_view
from closure.selectors.readiness import release_readiness
from closure.services.readiness import runbook_export

READINESS_PERMISSIONS = (
    "closure.view_healthreport",
    "closure.view_alertdelivery",
    "closure.view_evidence",
)


def can_export_runbook(user) -> bool:
    """The API's rule: view evidence, and either review the closure or export evidence."""
    return user.has_perm("closure.view_evidence") and (
        user.has_perm("closure.review_closure") or user.has_perm("closure.export_evidence")
    )


@console_view(get=READINESS_PERMISSIONS)
def readiness_view(request):
    """The release readiness gate: each check with its evidence and the action that fixes it.

    `?full=1` verifies the whole evidence chain instead of the rows after the latest signed
    checkpoint."""
    return render(
        request,
        "closure/console/readiness.html",
        {
            "readiness": release_readiness(full=request.GET.get("full") == "1"),
            "can_export": can_export_runbook(request.user),
            "nav": "closure",
        },
    )


@require_POST
def runbook_export_view(request):
    """Record a runbook export and answer with the runbook: a printable page, or Markdown."""
    if not can_export_runbook(request.user):
        raise PermissionDenied
    export = runbook_export(actor=request.user)
    if request.POST.get("format") == "markdown":
        response = HttpResponse(export.markdown, content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="{export.runbook["runbook_id"]}.md"'
        )
        return response
    return render(
        request,
        "closure/console/runbook.html",
        {
            "runbook": export.runbook,
            "runbook_evidence": export.runbook_evidence,
            "readiness_evidence": export.readiness_evidence,
            "nav": "closure",
        },
    )
