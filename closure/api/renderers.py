"""Renderers for the downloads: the runbook as Markdown, and the evidence bundle's ZIP.

Errors reach a client that asked for one of these as problem JSON all the same.
"""

from django.http import Http404
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer

from closure.selectors.readiness import runbook_markdown


class MarkdownRenderer(BaseRenderer):
    """`?format=markdown` or `Accept: text/markdown`: the runbook as a Markdown attachment."""

    media_type = "text/markdown"
    format = "markdown"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if isinstance(data, dict) and "runbook" in data and not getattr(response, "exception", 0):
            if response is not None:
                response["Content-Disposition"] = (
                    f'attachment; filename="{data["runbook"]["runbook_id"]}.md"'
                )
            return runbook_markdown(data["runbook"]).encode()
        return JSONRenderer().render(data, accepted_media_type, renderer_context)


class ZipRenderer(BaseRenderer):
    """Lets `Accept: application/zip` through content negotiation; the body itself is a
    streamed response, so only errors are ever rendered here (as problem JSON)."""

    media_type = "application/zip"
    format = "zip"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return JSONRenderer().render(data, accepted_media_type, renderer_context)


class StrictContentNegotiation(DefaultContentNegotiation):
    """`?format=` names a renderer or is absent: an empty one is a 404 like an unknown one
    (DRF's answer), not silently the default, as every other query parameter is strict."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if request.query_params.get(self.settings.URL_FORMAT_OVERRIDE) == "":
            raise Http404
        return super().select_renderer(request, renderers, format_suffix)
