"""Request text that no record can hold is refused before any view reads it.

- A NUL character in the path (`%00`) names nothing: PostgreSQL text cannot hold one, so a
  lookup by such an ID was a database error (a 500). It is a 404.
- A multipart form is read as UTF-8. Django decodes form fields with the charset that the
  request's `Content-Type` names, and Python knows charsets (`utf-7`, `unicode_escape`) that
  turn plain ASCII bytes into lone surrogates: text that no database, hash or response can
  encode, so a console or admin form carrying one failed with a 500. Django already refuses a
  URL-encoded form in another charset; this refuses a multipart one (a 400). Browsers send
  multipart forms with no charset or with UTF-8.

The API's JSON parser checks the text it decodes itself (closure/api/parsers.py).
"""

import codecs

from django.core.exceptions import BadRequest
from django.http import Http404


def names_utf8(charset: str) -> bool:
    try:
        return codecs.lookup(charset).name == "utf-8"
    except LookupError:
        return False


class RequestTextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path:
            raise Http404("No such resource.")
        charset = request.content_params.get("charset")
        if request.content_type == "multipart/form-data" and charset and not names_utf8(charset):
            raise BadRequest("A multipart form must be UTF-8 encoded.")
        return self.get_response(request)
