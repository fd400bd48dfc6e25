"""Access and security: default deny for every URL, tokens, login lockout, throttling, browser
security headers, and Django's deployment checks with production settings."""

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone

from closure.choices import MetadataKind
from closure.models import ApiToken, Evidence
from tests.conftest import PROBLEM_CONTENT_TYPE, A, B, assert_problem, client_for

ROOT = Path(__file__).resolve().parent.parent

# -- default deny ------------------------------------------------------------------------------

# URL names that answer an anonymous request: signing in and out, the probes, and two
# redirects that lead to pages that need a login themselves.
ANONYMOUS_ALLOWED = {
    "console:login",
    "console:logout",
    "admin:login",
    "admin:logout",
    "rest_framework:login",
    "rest_framework:logout",
    "healthz",
    "readyz",
    "root-redirect",
    "favicon",
}
_SAMPLES = {
    "int": "1",
    "str": "sample-id",
    "slug": "sample-id",
    "path": "sample/id",
    "drf_format_suffix": ".json",
}


def _sample_for_group(pattern: str) -> str:
    if "|" in pattern and re.fullmatch(r"[\w|]+", pattern):
        return pattern.split("|")[0]
    if pattern in (r"\d+", "[0-9]+"):
        return "1"
    if pattern.startswith("[a-z0-9]"):
        return "json"
    return "sample-id"


def _concrete(route: str) -> str:
    """A path that the pattern matches, with sample values for its parameters."""
    if route.startswith("^") or route.endswith("$"):  # a regex pattern
        text = re.sub(r"\(\?P<\w+>([^()]*)\)", lambda m: _sample_for_group(m.group(1)), route)
        text = text.lstrip("^").rstrip("$").replace(r"\.", ".").replace("/?", "/")
        return re.sub(r"[?]", "", text)
    return re.sub(
        r"<(?:(\w+):)?\w+>", lambda m: _SAMPLES.get(m.group(1) or "str") or "sample", route
    )


def walk(patterns, prefix="", namespace=""):
    for entry in patterns:
        route = str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}:{entry.namespace}" if entry.namespace else namespace
            yield from walk(entry.url_patterns, prefix + _concrete(route), inner.strip(":"))
        elif isinstance(entry, URLPattern):
            name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
            yield "/" + prefix + _concrete(route), name or ""


def all_urls() -> list[tuple[str, str]]:
    urls = list(walk(get_resolver().url_patterns))
    names = {"/": "root-redirect", "/favicon.ico": "favicon"}
    return [(path, name or names.get(path, "")) for path, name in urls]


def test_every_url_pattern_is_reached_by_the_walk(db):
    urls = all_urls()
    unresolved = []
    for path, _ in urls:
        try:
            resolve(path)
        except Exception:
            unresolved.append(path)
    assert unresolved == []
    assert len(urls) >= 90  # the admin, the console, the API, the probes


def test_no_url_answers_an_anonymous_request_except_login_health_and_static(db):
    anonymous = Client()
    anonymous.raise_request_exception = False
    answered = []
    for path, name in all_urls():
        if name in ANONYMOUS_ALLOWED:
            continue
        for method in ("get", "post"):
            response = getattr(anonymous, method)(path)
            location = response.headers.get("Location", "")
            denied = response.status_code in (401, 403) or (
                response.status_code == 302
                and (location.startswith("/console/login/") or "/admin/login/" in location)
            )
            if not denied:
                answered.append((method.upper(), path, name, response.status_code))
    assert answered == []


def test_api_refuses_anonymous_with_a_401_problem(db):
    response = Client().get(f"{B}/final-reporting-closure-dashboard")
    assert_problem(
        response,
        status=401,
        code="not_authenticated",
        title="Authentication required",
        detail="Authentication credentials were not provided.",
    )
    assert response["WWW-Authenticate"] == "Bearer"


def test_static_files_answer_anonymous(db):
    response = Client().get("/static/closure/favicon.svg")
    assert response.status_code == 200


# -- tokens ------------------------------------------------------------------------------------


def test_basic_auth_is_not_accepted(operator):
    import base64

    credentials = base64.b64encode(b"olivia:pw-for-tests-only").decode()
    response = Client().get(
        f"{B}/final-reporting-closure-dashboard", HTTP_AUTHORIZATION=f"Basic {credentials}"
    )
    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE


def test_token_records_last_use_and_stops_working_when_revoked_or_expired(operator):
    token, raw = ApiToken.issue(user=operator, name="ci")
    url = f"{B}/final-reporting-closure-dashboard"
    assert token.last_used_at is None

    assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None

    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    revoked = Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert_problem(
        revoked,
        status=401,
        code="authentication_failed",
        title="Authentication failed",
        detail="Invalid, expired or revoked token.",
    )

    other, other_raw = ApiToken.issue(user=operator, name="old")
    ApiToken.objects.filter(pk=other.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {other_raw}").status_code == 401


def test_token_last_use_is_written_at_most_once_a_minute(operator):
    token, raw = ApiToken.issue(user=operator, name="ci")
    url = f"{B}/final-reporting-closure-dashboard"
    Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw}")
    token.refresh_from_db()
    first = token.last_used_at

    with CaptureQueriesContext(connection) as queries:
        assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at == first
    assert not [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=1))
    Client().get(url, HTTP_AUTHORIZATION=f"Bearer {raw}")
    token.refresh_from_db()
    assert token.last_used_at > first


def test_token_is_stored_only_as_its_hash(operator):
    token, raw = ApiToken.issue(user=operator, name="ci")
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert raw not in json.dumps(row, default=str)
    assert row["token_prefix"] == raw[:12]


# -- login lockout -----------------------------------------------------------------------------


def test_repeated_failed_logins_lock_the_username_out_and_are_recorded_once(operator, settings):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post("/console/login/", {"username": "olivia", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    assert Evidence.objects.filter(metadata_kind=MetadataKind.LOGIN_LOCKOUT).count() == 0

    locked = client.post("/console/login/", {"username": "olivia", "password": "wrong"})
    assert locked.status_code == 429
    # Even the right password is refused while locked out.
    refused = client.post(
        "/console/login/", {"username": "olivia", "password": "pw-for-tests-only"}
    )
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session

    rows = list(Evidence.objects.filter(metadata_kind=MetadataKind.LOGIN_LOCKOUT))
    assert len(rows) == 1
    subject = rows[0].payload["subject"]
    assert subject["username"] == "olivia"
    assert subject["failure_limit"] == 5
    assert subject["cooloff_minutes"] == 15
    assert len(subject["address_fingerprint"]) == 12
    assert "203.0.113.7" not in json.dumps(rows[0].payload)
    assert rows[0].signer == "cavra-login-guard"


def test_a_lockout_is_per_username_and_address(operator, settings):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attacker.post("/console/login/", {"username": "olivia", "password": "wrong"})
    owner = Client(REMOTE_ADDR="198.51.100.20")
    response = owner.post(
        "/console/login/", {"username": "olivia", "password": "pw-for-tests-only"}
    )
    assert response.status_code == 302
    assert owner.session["_auth_user_id"] == str(operator.pk)


# -- throttling --------------------------------------------------------------------------------


def test_posts_beyond_the_rate_get_a_429_problem_with_retry_after(operator, settings):
    settings.CAVRA_API_POST_RATE = "2/minute"
    cache.clear()
    api = client_for(operator)
    body = {"retry_policy": {}}
    first = api.post(f"{A}/retry-plan", body, format="json")
    second = api.post(f"{A}/retry-plan", body, format="json")
    assert (first.status_code, second.status_code) == (201, 201)
    plans = Evidence.objects.filter(metadata_kind=MetadataKind.RETRY_PLAN).count()

    third = api.post(f"{A}/retry-plan", body, format="json")

    assert third.status_code == 429
    assert third["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert third.json()["code"] == "throttled"
    assert 1 <= int(third["Retry-After"]) <= 60
    assert Evidence.objects.filter(metadata_kind=MetadataKind.RETRY_PLAN).count() == plans
    # Reads are not throttled.
    assert api.get(f"{B}/final-reporting-closure-dashboard").status_code == 200


def test_throttle_state_lives_in_the_shared_database_cache(operator, settings):
    settings.CAVRA_API_POST_RATE = "5/minute"
    cache.clear()
    assert settings.CACHES["default"]["BACKEND"] == ("django.core.cache.backends.db.DatabaseCache")
    client_for(operator).post(f"{A}/retry-plan", {"retry_policy": {}}, format="json")
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key FROM cavra_cache")
        keys = [row[0] for row in cursor.fetchall()]
    assert any(key.endswith(f"throttle_post_user-{operator.pk}") for key in keys)


# -- headers -----------------------------------------------------------------------------------


def test_pages_carry_a_strict_csp_and_the_security_headers(operator):
    response = client_for(operator).get("/console/")
    csp = response["Content-Security-Policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert script_src.strip() == "script-src 'self'"
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_api_docs_are_local_behind_login_and_keep_scripts_strict(operator):
    anonymous = Client()
    assert anonymous.get("/api/docs/").status_code == 302
    assert anonymous.get("/api/redoc/").status_code == 302
    assert anonymous.get("/api/schema/").status_code == 401

    client = client_for(operator)
    swagger = client.get("/api/docs/")
    assert swagger.status_code == 200
    html = swagger.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "<script>" not in html  # the initialiser is a separate script (?script)
    assert "script-src 'self';" in swagger["Content-Security-Policy"] + ";"
    assert "unsafe-eval" not in swagger["Content-Security-Policy"]
    redoc = client.get("/api/redoc/").content.decode()
    assert "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in redoc
    assert "googleapis" not in redoc
    assert client.get("/api/docs/?script").status_code == 200
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert schema.json()["info"]["title"] == "CAVRA closure API"


# -- production settings -----------------------------------------------------------------------


def production_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a production server: every required variable, nothing test-only."""
    import base64
    import secrets

    from cryptography.fernet import Fernet

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CAVRA_", "DJANGO_", "DATABASE_URL", "PROMETHEUS_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "cavra.settings",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "cavra.example.com,127.0.0.1",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
            "CAVRA_CONNECTOR_KEYS": Fernet.generate_key().decode(),
            "CAVRA_EVIDENCE_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "CAVRA_STATIC_ROOT": str(tmp_path / "static"),
            "CAVRA_METRICS_TOKEN": "prod-scrape-token-0123456789abcdef",
        }
    )
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> dict[str, str]:
    env = production_env(tmp_path_factory.mktemp("production"))
    collected = manage(env, "collectstatic", "--noinput", "-v0")
    assert collected.returncode == 0, collected.stderr
    return env


def test_deploy_check_passes_at_warning_level_with_production_settings(production):
    result = manage(production, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_deploy_check_fails_without_the_evidence_signing_key(production):
    env = {**production, "CAVRA_EVIDENCE_SIGNING_KEY": ""}
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 1
    assert "closure.W010" in result.stderr


def test_production_settings_are_https_only_with_host_cookies(production):
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: getattr(s, k) for k in ["
        "'DEBUG','SECURE_SSL_REDIRECT','SECURE_HSTS_SECONDS','SECURE_HSTS_INCLUDE_SUBDOMAINS',"
        "'SESSION_COOKIE_NAME','CSRF_COOKIE_NAME','SESSION_COOKIE_SECURE','CSRF_COOKIE_SECURE',"
        "'SECURE_CONTENT_TYPE_NOSNIFF','SECURE_REFERRER_POLICY',"
        "'SECURE_CROSS_ORIGIN_OPENER_POLICY']}, default=str)); "
        "print(s.CACHES['default']['BACKEND'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=production,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    values_line, cache_line = result.stdout.strip().splitlines()[-2:]
    assert json.loads(values_line) == {
        "DEBUG": False,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SESSION_COOKIE_NAME": "__Host-sessionid",
        "CSRF_COOKIE_NAME": "__Host-csrftoken",
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "SECURE_CROSS_ORIGIN_OPENER_POLICY": "same-origin",
    }
    assert cache_line == "django.core.cache.backends.db.DatabaseCache"


# -- production serving: gunicorn + whitenoise, over real HTTP -----------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, path: str, **headers: str):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": "cavra.example.com", **headers})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


@pytest.fixture(scope="module")
def gunicorn(production, tmp_path_factory):
    import time

    migrated = manage(production, "migrate", "-v0")
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    env = {
        **production,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "CAVRA_BEHIND_PROXY": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("prometheus")),
    }
    log = tmp_path_factory.mktemp("gunicorn") / "stderr.log"
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "-c",
                "cavra/gunicorn.conf.py",
                "cavra.wsgi",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if http_get(port, "/healthz")[0].status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield port, log
    finally:
        server.terminate()
        server.wait(timeout=30)


HTTPS = {"X-Forwarded-Proto": "https"}


def test_gunicorn_redirects_plain_http_but_lets_probes_through(gunicorn):
    port, _ = gunicorn
    response, _ = http_get(port, "/console/")
    assert response.status == 301
    assert response.getheader("Location") == "https://cavra.example.com/console/"
    assert http_get(port, "/healthz")[0].status == 200
    ready, body = http_get(port, "/readyz")
    assert ready.status == 200, body
    assert json.loads(body) == {"status": "ready", "database": "ok", "migrations": "applied"}


def test_gunicorn_serves_pages_with_hsts_and_host_prefixed_secure_cookies(gunicorn):
    port, _ = gunicorn
    response, _ = http_get(port, "/console/login/", **HTTPS)
    assert response.status == 200
    assert response.getheader("Strict-Transport-Security") == (
        "max-age=31536000; includeSubDomains; preload"
    )
    cookie = response.getheader("Set-Cookie")
    assert cookie.startswith("__Host-csrftoken=")
    assert "Secure" in cookie
    assert "Path=/" in cookie
    assert "Domain" not in cookie
    assert "script-src 'self'" in response.getheader("Content-Security-Policy")
    assert response.getheader("X-Content-Type-Options") == "nosniff"


def test_whitenoise_serves_hashed_static_files_with_long_caching(gunicorn, production):
    port, _ = gunicorn
    manifest = json.loads((Path(production["CAVRA_STATIC_ROOT"]) / "staticfiles.json").read_text())
    hashed = manifest["paths"]["closure/favicon.svg"]
    assert hashed != "closure/favicon.svg"
    response, body = http_get(port, f"/static/{hashed}", **HTTPS)
    assert response.status == 200
    assert body.startswith(b"<svg")
    assert response.getheader("Cache-Control") == "max-age=315360000, public, immutable"


def test_gunicorn_metrics_add_up_all_workers_and_logs_are_json(gunicorn, production):
    port, log = gunicorn
    for _ in range(6):
        http_get(port, "/healthz", **{"X-Request-ID": "probe-req-000001"})
    anonymous, _ = http_get(port, "/metrics")
    assert anonymous.status == 401
    response, body = http_get(
        port, "/metrics", Authorization=f"Bearer {production['CAVRA_METRICS_TOKEN']}"
    )
    assert response.status == 200
    count = next(
        line
        for line in body.decode().splitlines()
        if line.startswith("cavra_http_request_duration_seconds_count")
        and 'route="healthz"' in line
    )
    assert float(count.rsplit(" ", 1)[1]) >= 6
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    probe = [line for line in lines if line.get("request_id") == "probe-req-000001"]
    assert len(probe) == 6
    assert probe[0]["message"] == "request"
    assert probe[0]["path"] == "/healthz"
    assert probe[0]["status"] == 200
    assert production["CAVRA_METRICS_TOKEN"] not in log.read_text()
