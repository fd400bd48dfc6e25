"""No secret in any field of any log line, and the request's id on every line it causes, Django's
own `django.request`, `django.security` and `django.server` lines included, in the JSON and
the plain format (closure/ops/logs.py)."""

import http.client
import json
import logging
import sys
import threading

import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
from django.test import Client

from closure.ops.logs import JsonFormatter, PlainFormatter, RequestIdFilter, redact
from tests.conftest import A, client_for

SECRETS = ("abc123tok", "xyz789pw", "s3cr3tsig")
QUERY = "?token=abc123tok&password=xyz789pw&sig=s3cr3tsig&page=2"
REDACTED_QUERY = "?[redacted]&[redacted]&[redacted]&page=2"


def _lines(records) -> list[tuple[dict, str]]:
    """Each record as the JSON formatter and the plain formatter write it."""
    return [(json.loads(JsonFormatter().format(r)), PlainFormatter().format(r)) for r in records]


def _assert_clean_and_tagged(records, request_id: str) -> list[dict]:
    """Every line of the request carries its id and shows no secret, in both formats."""
    lines = _lines(records)
    assert lines
    for line, plain in lines:
        assert line["request_id"] == request_id, line
        assert f"[{request_id}]" in plain
        for secret in SECRETS:
            assert secret not in json.dumps(line)
            assert secret not in plain
    return [line for line, _ in lines]


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        # errors a view returns: Django logs them after the middleware chain has finished
        ("post", f"{A}/retry-plan", {"retry_policy": 3}, 400, f"Bad Request: {A}/retry-plan"),
        ("post", "/console/health/", {"stale_metadata_minutes": "x"}, 400, "Bad Request: "),
        # errors a view raises: logged inside the chain
        ("get", "/console/health/no-such-report/", None, 404, "Not Found: "),
    ],
)
def test_django_request_lines_carry_the_request_id_and_a_redacted_request(
    logs, operator, method, path, body, status, message
):
    # given an operator whose request carries credentials in its query string
    client = client_for(operator)
    logs.clear()

    # when the request fails
    if method == "post" and path.startswith(A):
        response = client.post(path + QUERY, body, format="json")
    elif method == "post":
        response = client.post(path + QUERY, body)
    else:
        response = client.get(path + QUERY)

    # then every line it caused carries its id and no secret, Django's warning included,
    # whose `request` field is the request's repr with the credentials redacted
    assert response.status_code == status
    lines = _assert_clean_and_tagged(logs.records, response["X-Request-ID"])
    [warning] = [line for line in lines if line["logger"] == "django.request"]
    assert warning["message"].startswith(message)
    assert warning["level"] == "WARNING"
    assert warning["status_code"] == status
    assert warning["request"] == f"<WSGIRequest: {method.upper()} '{path}{REDACTED_QUERY}'>"
    assert [line["status"] for line in lines if line["logger"] == "cavra.request"] == [status]

    # and a line logged after the response is closed belongs to no request
    logs.clear()
    logging.getLogger("cavra.test").warning("after the request")
    assert _lines(logs.records)[0][0]["request_id"] == "-"


@pytest.mark.django_db
def test_django_security_lines_carry_the_request_id_and_no_secret(logs, operator):
    # given a request for a host this deployment does not serve, and a form post without CSRF
    no_csrf = Client(enforce_csrf_checks=True)
    no_csrf.force_login(operator)
    logs.clear()
    wrong_host = Client().get(f"/console/{QUERY}", HTTP_HOST="evil.example")
    host_records = list(logs.records)
    logs.clear()
    forged = no_csrf.post(f"/console/health/{QUERY}", {"expected_interval_minutes": "60"})

    # then both are refused, and their security lines carry their ids and no secret
    assert (wrong_host.status_code, forged.status_code) == (400, 403)
    host_lines = _assert_clean_and_tagged(host_records, wrong_host["X-Request-ID"])
    csrf_lines = _assert_clean_and_tagged(logs.records, forged["X-Request-ID"])
    [disallowed] = [line for line in host_lines if line["logger"].startswith("django.security")]
    assert disallowed["logger"] == "django.security.DisallowedHost"
    assert disallowed["request"] == f"<WSGIRequest: GET '/console/{REDACTED_QUERY}'>"
    [csrf] = [line for line in csrf_lines if line["logger"] == "django.security.csrf"]
    assert csrf["message"] == "Forbidden (CSRF cookie not set.): /console/health/"
    assert csrf["request"] == f"<WSGIRequest: POST '/console/health/{REDACTED_QUERY}'>"


def test_development_server_request_lines_carry_the_request_id_and_no_secret(logs):
    # given the development server's own request handler serving the project
    server = WSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    # (not the WSGI module: loading it sets logging up anew, which would drop the capture)
    server.set_app(WSGIHandler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    logs.clear()

    # when an anonymous browser asks for a page with credentials in the query string
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
        connection.request("GET", f"/console/{QUERY}", headers={"Host": "testserver"})
        response = connection.getresponse()
        response.read()
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    # then it is sent to sign in, and the server's request line carries the request id (it is
    # written after the middleware chain) with the credentials redacted
    assert response.status == 302
    lines = _assert_clean_and_tagged(logs.records, response.getheader("X-Request-ID"))
    [served] = [line for line in lines if line["logger"] == "django.server"]
    assert served["message"] == f'"GET /console/{REDACTED_QUERY} HTTP/1.1" 302 0'
    assert served["status_code"] == 302


def test_every_field_of_a_record_is_redacted_in_both_formats():
    # given a record whose message, arguments, extra fields (nested, and an object),
    # traceback and stack all hold credentials
    class Carrier:
        def __str__(self) -> str:
            return "<Carrier https://ops:hunter2@hooks.example/x>"

    try:
        raise ValueError('refused {"client_secret": "cs-abc123tok"} with api_key=xyz789pw')
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "cavra.test", logging.ERROR, __file__, 1, "calling %s", ("/x?sig=s3cr3tsig",), exc_info
    )
    record.stack_info = "Stack (most recent call last):\n  token=abc123tok"
    record.request_id = "req-redaction-01"
    record.target = {"headers": ["Bearer cavra_abcdefghijkl"], "access_token": "abc123tok"}
    record.carrier = Carrier()

    # when it is formatted as JSON and as a plain line
    [(line, plain)] = _lines([record])

    # then no credential is left anywhere, and the shapes stay readable
    assert line["message"] == "calling /x?[redacted]"
    assert line["target"] == {"headers": ["[redacted]"], "access_token": "[redacted]"}
    assert line["carrier"] == "<Carrier https[redacted]hooks.example/x>"
    assert '{"client_secret": "[redacted]"} with [redacted]' in line["exception"]
    assert line["stack"].endswith("  [redacted]")
    assert plain.split(" ", 2)[2].startswith(
        "ERROR cavra.test [req-redaction-01] calling /x?[redacted]\nTraceback"
    )
    for secret in (*SECRETS, "hunter2", "cs-abc123tok", "cavra_abcdefghijkl"):
        assert secret not in json.dumps(line)
        assert secret not in plain


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /x?access_token=a1&page=2", "GET /x?[redacted]&page=2"),
        ("client_secret=a1; sessionid=b2, csrftoken=c3", "[redacted]; [redacted], [redacted]"),
        ("X-Amz-Signature=a1&X-Amz-Credential=b2", "[redacted]&[redacted]"),
        ("x-api-key=a1 api_key=b2 apikey=c3", "[redacted] [redacted] [redacted]"),
        ("/cb?code=a1&state=ok", "/cb?[redacted]&state=ok"),
        ("authorization=a1 auth=b2 new_password=c3", "[redacted] [redacted] [redacted]"),
        ("{'password': 'a1', 'user': 'olivia'}", "{'password': '[redacted]', 'user': 'olivia'}"),
        ("Authorization: Bearer a1.b2-c3", "Authorization: [redacted]"),
        ("postgres://app:a1@db:5432/cavra", "postgres[redacted]db:5432/cavra"),
        # names that only look alike stay readable
        ("status_code=500 monkey=1 design=2 page=3", "status_code=500 monkey=1 design=2 page=3"),
        ("session_id=gordack-1 author=olivia", "session_id=gordack-1 [redacted]"),
    ],
)
def test_redact_recognises_secret_names_and_values(text, expected):
    assert redact(text) == expected


def test_redact_takes_linear_time_on_a_long_word():
    # a pattern that searched the name for secret words would backtrack quadratically here
    word = "a" * 200_000
    assert redact(word + "=1") == word + "=1"
    assert redact(word) == word


def test_django_and_development_server_lines_go_through_the_redacting_handler():
    [console] = [
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, RequestIdFilter) for f in handler.filters)
    ]
    assert type(console.formatter) in (JsonFormatter, PlainFormatter)
    assert settings.LOGGING["formatters"]["plain"] == {"()": "closure.ops.logs.PlainFormatter"}
    for name in ("django", "django.server"):
        logger = logging.getLogger(name)
        assert (logger.handlers, logger.propagate) == ([], True), name
