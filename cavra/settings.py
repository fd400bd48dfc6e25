"""Settings for CAVRA closure, read from environment variables.

SQLite is the embedded default; ``DATABASE_URL=postgres://…`` selects PostgreSQL, the production
database. ``DEBUG`` is off unless ``DJANGO_DEBUG`` is set to a true value. Every variable is
listed in docs/deployment.md.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


DEBUG = env_bool("DJANGO_DEBUG")

# Without DJANGO_SECRET_KEY (and DEBUG off) the key stays empty: commands that sign nothing,
# such as `makemigrations --check`, still run; Django refuses every use of an empty key, and
# cavra.wsgi refuses to serve without one.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY and (DEBUG or env_bool("CAVRA_ALLOW_INSECURE_DEV_KEY")):
    SECRET_KEY = "cavra-insecure-development-key-not-for-production"  # noqa: S105

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
    if host.strip()
]
CSRF_TRUSTED_ORIGINS = [
    origin.strip()
    for origin in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",")
    if origin.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "closure",
]

MIDDLEWARE = [
    # First, so every log line and every error of the request carries its id and its latency
    # is measured whole (closure/ops/).
    "closure.ops.logs.RequestIdMiddleware",
    "closure.ops.metrics.RequestLatencyMiddleware",
    # Before anything reads the request: a NUL in the path is a 404, a multipart form in a
    # charset other than UTF-8 a 400 (text no record can hold).
    "closure.ops.encoding.RequestTextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # After CSRF and login-required (a refused request writes nothing and is not counted):
    # every write outside the API counts against its user's budget (closure/ops/throttle.py).
    "closure.ops.throttle.WriteThrottleMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: locks out repeated login failures, and answers API clients with problem+json when
    # the database is unavailable instead of an HTML error page.
    "axes.middleware.AxesMiddleware",
    "closure.ops.errors.DatabaseUnavailableMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses a locked-out username/address before any password check.
    "axes.backends.AxesStandaloneBackend",
    "closure.backends.ModelBackendOneQuery",
]

ROOT_URLCONF = "cavra.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # cavra/templates holds only the API documentation pages (self-hosted, CSP-clean).
        "DIRS": [BASE_DIR / "templates", BASE_DIR / "cavra" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "cavra.wsgi.application"

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'var' / 'cavra.sqlite3'}",
        conn_max_age=env_int("CAVRA_DB_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A statement or a lock wait that runs away is cancelled instead of holding a connection
    # (and its locks) forever; connect_timeout makes an unreachable server fail fast (503).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "connect_timeout": env_int("CAVRA_DB_CONNECT_TIMEOUT", 5),
            "options": (
                f"-c statement_timeout={env_int('CAVRA_DB_STATEMENT_TIMEOUT_MS', 120000)} "
                f"-c lock_timeout={env_int('CAVRA_DB_LOCK_TIMEOUT_MS', 10000)}"
            ),
        }
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers proceed while the single writer commits; IMMEDIATE transactions take the
    # write lock up front, so two writers queue on busy_timeout instead of failing with
    # "database is locked" when one of them upgrades a read lock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    (BASE_DIR / "var").mkdir(exist_ok=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The flow diagram has one source, in docs/, and the console shows it as a static file.
STATICFILES_DIRS = [("diagrams", BASE_DIR / "docs" / "diagrams")]
STATIC_ROOT = Path(os.environ.get("CAVRA_STATIC_ROOT", BASE_DIR / "var" / "static"))
# Whitenoise serves the collected files (`manage.py collectstatic`) with far-future caching of
# their hashed names; development and tests serve the source files as they are.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Without collected files (development, tests) whitenoise serves straight from the apps.
WHITENOISE_USE_FINDERS = DEBUG

LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "/console/"
LOGOUT_REDIRECT_URL = "console:login"

# A strict Content-Security-Policy for every response (Django's built-in middleware): scripts,
# styles, images and fonts only from this origin, no inline script or style anywhere (the
# console's charts are inline SVG drawn with presentation attributes and classes), no plugins,
# no framing, forms post only here. See docs/console.md.
SECURE_CSP = {
    "default-src": [CSP.NONE],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "object-src": [CSP.NONE],
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "closure.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["closure.api.permissions.ModelViewPermissions"],
    "DEFAULT_FILTER_BACKENDS": ["closure.api.filtering.StrictFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "closure.api.pagination.StablePageNumberPagination",
    "PAGE_SIZE": 50,
    # JSON only: a form-encoded or multipart body is a 415, never a loosely typed input; deep
    # nesting, lone surrogates and repeated keys are a 400 (closure/api/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["closure.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "closure.api.renderers.StrictContentNegotiation",
    "EXCEPTION_HANDLER": "closure.api.problems.problem_exception_handler",
    # Every POST is throttled per user (or per address for anonymous callers) in the shared
    # cache: 429 problem+json with Retry-After (closure/api/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": ["closure.api.throttling.PostRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "closure.api.schema.ProblemAutoSchema",
    "UNAUTHENTICATED_USER": None,
    # One timestamp format for every record the API shows, the evidence's own (UTC, always
    # six fractional digits, `Z`): a list entry and an action's answer render alike.
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%S.%fZ",
}

# One JSON object per line, each with the request id of the request it belongs to
# (closure/ops/logs.py); CAVRA_LOG_FORMAT=plain gives readable lines for a terminal.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "closure.ops.logs.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "closure.ops.logs.JsonFormatter"},
        "plain": {"()": "closure.ops.logs.PlainFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": os.environ.get("CAVRA_LOG_FORMAT", "plain" if DEBUG else "json"),
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("CAVRA_LOG_LEVEL", "INFO")},
    # Django's own handlers (its debug console, the development server's request lines) would
    # write around the redacting formatters: its lines go through the root handler instead.
    "loggers": {
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": [], "propagate": True},
    },
}

# The cache holds throttle counters, so every app server must see the same one: the database
# cache (table `cavra_cache`, created by migration 0011) unless CAVRA_CACHE_URL names Redis.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "cavra_cache",
        # Culling (at 300 entries by default) would forget throttle counters of busy clients.
        "OPTIONS": {"MAX_ENTRIES": 100000},
    }
}
if os.environ.get("CAVRA_CACHE_URL", "").startswith(("redis://", "rediss://")):
    CACHES["default"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["CAVRA_CACHE_URL"],
    }

SPECTACULAR_SETTINGS = {
    "TITLE": "CAVRA closure API",
    "DESCRIPTION": (
        "Executive delivery retry health, alerts, retry plans, the retry worker and the final "
        "reporting closure dashboard. Errors are RFC 9457 application/problem+json."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The documentation pages need a login like everything else (closure/ops/docs.py).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "DeliveryStatusEnum": "closure.choices.DeliveryStatus",
        "WorkerRunStatusEnum": "closure.choices.WorkerRunStatus",
        "AlertLevelEnum": "closure.choices.AlertLevel",
        "EventKindEnum": "closure.choices.EventKind",
        "EventStatusEnum": "closure.choices.EventStatus",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "closure.api.schema.strict_request_bodies",
    ],
}

# --- Login lockout (django-axes) ------------------------------------------------------------
# After CAVRA_LOGIN_FAILURE_LIMIT failed logins for one username from one address, that pair
# is locked out for CAVRA_LOGIN_COOLOFF_MINUTES; every lockout is written to the evidence
# ledger (closure/ops/lockout.py).
AXES_FAILURE_LIMIT = env_int("CAVRA_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("CAVRA_LOGIN_COOLOFF_MINUTES", 15) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Behind a proxy, the client address comes from the first X-Forwarded-For entry only when
# CAVRA_TRUST_X_FORWARDED_FOR is set (never trust it on a directly exposed server).
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
    if env_bool("CAVRA_TRUST_X_FORWARDED_FOR")
    else ["REMOTE_ADDR"]
)

# --- HTTPS and browser security headers -----------------------------------------------------
# On by default whenever DEBUG is off: HTTPS only, HSTS, `__Host-` cookies (Secure, Path=/,
# no Domain). CAVRA_HTTPS=0 is for the test suite and local HTTP only.
CAVRA_HTTPS = env_bool("CAVRA_HTTPS", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
if CAVRA_HTTPS:
    SECURE_SSL_REDIRECT = env_bool("CAVRA_SSL_REDIRECT", default=True)
    # Health probes and scrapes come over plain HTTP from inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("CAVRA_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("CAVRA_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_NAME = "__Host-csrftoken"
if env_bool("CAVRA_BEHIND_PROXY"):
    # The TLS-terminating proxy sets X-Forwarded-Proto; trust it only when told to.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Operations (closure/ops/, docs/deployment.md) ------------------------------------------
# The largest request body read, in bytes: a larger one is a 413 (API) before anything is
# parsed. 8 MiB holds the largest batch the API documents (1,000 events with 4 KiB `details`
# each and every other field at its longest) sent as ordinary JSON; see docs/api.md.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("CAVRA_MAX_REQUEST_BYTES", 8 * 1024 * 1024)
# Writes one user (or one address) may make per period, API, console and admin together:
# "<n>/<second|minute|hour|day>" (closure/api/throttling.py).
CAVRA_API_POST_RATE = os.environ.get("CAVRA_API_POST_RATE", "120/minute")
# Seconds an API client is told to wait (Retry-After) when the database is unavailable.
CAVRA_DB_UNAVAILABLE_RETRY_AFTER = env_int("CAVRA_DB_UNAVAILABLE_RETRY_AFTER", 5)
# Bearer token a Prometheus scraper presents at /metrics; without it only staff sessions may.
CAVRA_METRICS_TOKEN = os.environ.get("CAVRA_METRICS_TOKEN", "")

# --- CAVRA ---------------------------------------------------------------------------------

# Fernet keys (comma separated, newest first) that encrypt connector configuration at rest.
# Without it a key is derived from SECRET_KEY, which is only acceptable for development.
CAVRA_CONNECTOR_KEYS = [
    key.strip() for key in os.environ.get("CAVRA_CONNECTOR_KEYS", "").split(",") if key.strip()
]
# Connectors may reach loopback addresses (tests and the demo only; refused when DEBUG is off
# by a system check).
CAVRA_ALLOW_LOOPBACK_CONNECTORS = env_bool("CAVRA_ALLOW_LOOPBACK_CONNECTORS")
# Base URL of the console, used in alert messages to link back to the evidence.
CAVRA_PUBLIC_BASE_URL = os.environ.get("CAVRA_PUBLIC_BASE_URL", "http://127.0.0.1:8000")
# A retry decision due for longer than this is reported as overdue on the closure dashboard.
CAVRA_RETRY_OVERDUE_GRACE_MINUTES = env_int("CAVRA_RETRY_OVERDUE_GRACE_MINUTES", 30)
# Acknowledgements outstanding for longer than this turn the closure risk critical.
CAVRA_ACKNOWLEDGEMENT_SLA_MINUTES = env_int("CAVRA_ACKNOWLEDGEMENT_SLA_MINUTES", 60)
# The latest health report older than this is stale on the closure dashboard.
CAVRA_HEALTH_STALE_MINUTES = env_int("CAVRA_HEALTH_STALE_MINUTES", 180)
# How long a worker may hold a claimed delivery attempt before another worker may take it over.
CAVRA_ATTEMPT_LEASE_SECONDS = env_int("CAVRA_ATTEMPT_LEASE_SECONDS", 120)
# How long a request holds its Idempotency-Key before a repeat may take the key over: about
# twice the longest request, a live worker run of 500 retries at the 30 s deadline (~32 min).
CAVRA_IDEMPOTENCY_LEASE_SECONDS = env_int("CAVRA_IDEMPOTENCY_LEASE_SECONDS", 3600)
# Circuit breaker per connector: this many consecutive failed attempts open it for the cool-down.
CAVRA_CIRCUIT_FAILURE_THRESHOLD = env_int("CAVRA_CIRCUIT_FAILURE_THRESHOLD", 5)
CAVRA_CIRCUIT_COOLDOWN_SECONDS = env_int("CAVRA_CIRCUIT_COOLDOWN_SECONDS", 300)
# API tokens expire after this many days unless created with another lifetime.
CAVRA_API_TOKEN_DAYS = env_int("CAVRA_API_TOKEN_DAYS", 30)

# --- CAVRA connectors (docs/connectors.md) -----------------------------------------------------

# A connector's Retry-After (429/503) is honoured up to this many seconds, never longer.
CAVRA_RETRY_AFTER_MAX_SECONDS = env_int("CAVRA_RETRY_AFTER_MAX_SECONDS", 3600)
# PagerDuty Events API v2 endpoint; a connector's `events_url` overrides it.
CAVRA_PAGERDUTY_EVENTS_URL = os.environ.get(
    "CAVRA_PAGERDUTY_EVENTS_URL", "https://events.pagerduty.com/v2/enqueue"
)
# A JSON file of connectors for `manage.py bootstrap_connectors` (and the demo) to load.
CAVRA_CONNECTORS_FILE = os.environ.get("CAVRA_CONNECTORS_FILE", "")

# E-mail connectors send through Django's default mailer: SMTP unless DJANGO_EMAIL_BACKEND
# names another backend (the test suite swaps in the memory backend).
_EMAIL_BACKEND = os.environ.get(
    "DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend"
)
_SMTP_OPTIONS = {
    "host": os.environ.get("DJANGO_EMAIL_HOST", "localhost"),
    "port": env_int("DJANGO_EMAIL_PORT", 25),
    "username": os.environ.get("DJANGO_EMAIL_HOST_USER", ""),
    "password": os.environ.get("DJANGO_EMAIL_HOST_PASSWORD", ""),
    "use_tls": env_bool("DJANGO_EMAIL_USE_TLS"),
    "use_ssl": env_bool("DJANGO_EMAIL_USE_SSL"),
    "timeout": env_int("DJANGO_EMAIL_TIMEOUT", 10),
}
MAILERS = {
    "default": {
        "BACKEND": _EMAIL_BACKEND,
        "OPTIONS": _SMTP_OPTIONS if _EMAIL_BACKEND.endswith(".smtp.EmailBackend") else {},
    }
}
DEFAULT_FROM_EMAIL = os.environ.get("DJANGO_DEFAULT_FROM_EMAIL", "cavra@localhost")

# --- CAVRA evidence (docs/evidence.md) ---------------------------------------------------------

# Ed25519 private key (base64 of the raw 32 bytes) that signs evidence checkpoints and export
# manifests. Without it a key is derived from SECRET_KEY, which is only acceptable for
# development (a system check warns when DEBUG is off).
CAVRA_EVIDENCE_SIGNING_KEY = os.environ.get("CAVRA_EVIDENCE_SIGNING_KEY", "").strip()
# Comma list of further Ed25519 public keys (base64, raw 32 bytes) whose checkpoints verify:
# the keys of earlier signing keys after a rotation. The current key's public key is always
# trusted.
CAVRA_EVIDENCE_TRUSTED_PUBLIC_KEYS = [
    key.strip()
    for key in os.environ.get("CAVRA_EVIDENCE_TRUSTED_PUBLIC_KEYS", "").split(",")
    if key.strip()
]
