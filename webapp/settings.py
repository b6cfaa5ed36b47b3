"""Django settings for Groupwise.

Every value comes from the environment through the typed helpers in ``webapp.env`` and has an
embedded default that works on one machine with nothing else installed: SQLite under ``var/``, a
SQLite-file Celery broker, an in-process channel layer and the built-in tiny model. The production
profile is the same code with ``DATABASE_URL``, ``CELERY_BROKER_URL`` and ``REDIS_URL`` set.
See docs/configuration.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from engine.net.egress import SETTING as EGRESS_SETTING
from engine.net.egress import EgressConfigError, EgressPolicy
from webapp import cores
from webapp.env import (
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_path,
    env_rate,
    env_secret_key,
    env_str,
    env_url,
    env_url_prefix,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("GROUPWISE_VAR_DIR", None, base=BASE_DIR) or BASE_DIR / "var"
# The embedded defaults keep their files here: SQLite databases, broker, media, static files.
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Production means GROUPWISE_PRODUCTION=1: the site is reachable by others over HTTPS. It then
# needs its own SECRET_KEY, refuses DEBUG, and the transport settings below default to secure
# (`manage.py check --deploy` is clean). Off, the embedded defaults serve plain HTTP on loopback.
PRODUCTION = env_bool("GROUPWISE_PRODUCTION", False)
DEV_SECRET_KEY = "groupwise-development-key-do-not-use-in-production"
SECRET_KEY = env_secret_key("SECRET_KEY", DEV_SECRET_KEY, production=PRODUCTION)
DEBUG = env_bool("DEBUG", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured(
        "DEBUG=1 with GROUPWISE_PRODUCTION=1 would show tracebacks and settings to visitors: "
        "unset DEBUG."
    )
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Cookies only over HTTPS, HTTP redirected to HTTPS (except /healthz, which load balancers probe
# over plain HTTP), and HSTS: browsers then refuse plain HTTP to this host for a year.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 86400 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
# Behind a TLS-terminating proxy the app sees plain HTTP; trust the proxy's X-Forwarded-Proto
# only when told to (a client could send the header itself when no proxy strips it).
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("GROUPWISE_BEHIND_HTTPS_PROXY", False) else None
)
# The client's address (shown as a token's last use) is the connection's peer, unless a reverse
# proxy is said to append it to X-Forwarded-For (webapp/core/client_address.py).
GROUPWISE_TRUST_X_FORWARDED_FOR = env_bool("GROUPWISE_TRUST_X_FORWARDED_FOR", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "webapp.core",
    "webapp.accounts",
    "webapp.runs",
    "webapp.sweeps",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.core.static_files.StaticFiles",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every view needs a login unless it is decorated with @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.media",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(
        "DATABASE_URL",
        f"sqlite:///{VAR_DIR / 'groupwise.sqlite3'}",
        base=BASE_DIR,
        # PostgreSQL only: connections per process in a pool (0: none), or, without a pool, how
        # long one is kept. Every web process and worker opens at most the pool's size, so keep
        # processes x size under the server's max_connections (docs/deploy.md).
        pool_size=env_int("DATABASE_POOL_SIZE", 8, minimum=0),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
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
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# WhiteNoise serves static files whatever DEBUG is: from STATIC_ROOT after collectstatic (which
# `manage.py serve` runs) and, through the finders, straight from static/ for tests.
WHITENOISE_USE_FINDERS = True

MEDIA_URL = "media/"
MEDIA_ROOT = env_path("MEDIA_ROOT", None, base=BASE_DIR) or VAR_DIR / "media"
# Behind nginx: the internal location aliased to MEDIA_ROOT, from which nginx sends a media file
# once the dashboard has checked who asks (X-Accel-Redirect; docs/deploy.md). Empty: Django sends.
GROUPWISE_ACCEL_REDIRECT = env_url_prefix("GROUPWISE_ACCEL_REDIRECT", "")
# Prompt uploads larger than this are refused. The reverse proxy should cap request bodies too
# (docs/deploy.md): Django's ASGI handler reads a body whole before any view can look at it.
GROUPWISE_MAX_UPLOAD_BYTES = env_int("GROUPWISE_MAX_UPLOAD_BYTES", 5 * 1024 * 1024, minimum=1)
# API request bodies (JSON, forms) larger than this are refused with a JSON 413 that names it;
# Django's default, 2.5 MiB, holds any recipe. File uploads (the form's prompt file) do not count.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, minimum=1024)
# How this host's cores are shared: the server processes `serve` starts (its --web-workers
# overrides) and the torch threads a worker trains with; the defaults' rules are in webapp/cores.py.
GROUPWISE_WEB_WORKERS = env_int(
    "GROUPWISE_WEB_WORKERS", cores.default_web_workers(cores.usable_cpus()), minimum=1
)
GROUPWISE_WORKER_TORCH_THREADS = env_int(
    "GROUPWISE_WORKER_TORCH_THREADS",
    cores.default_worker_torch_threads(cores.usable_cpus()),
    minimum=1,
)

# Channels: Redis when REDIS_URL is set (group push across processes); otherwise an in-process
# layer, and live pages follow the event table instead of group messages.
REDIS_URL = env_url("REDIS_URL", "", schemes=("redis", "rediss", "unix")) or None
CHANNEL_LAYERS: dict[str, Any] = (
    {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # A consumer waits for messages with a 5 s blocking pop; redis-py 8's default 5 s
            # socket timeout cut those waits off and closed idle dashboard sockets
            # (channels_redis issue 422). Longer than the pop, still bounded for a dead Redis.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}]},
        }
    }
    if REDIS_URL
    else {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
)

# Celery: an embedded SQLite-file broker by default, kept apart from the app database.
_BROKER_SCHEMES = ("sqla+sqlite", "redis", "rediss", "amqp", "amqps", "pyamqp")
CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL",
    f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}",
    schemes=_BROKER_SCHEMES,
)


def _default_result_backend(broker_url: str) -> str:
    """Results travel back the way the tasks came, or in a SQLite file for the embedded broker."""
    if broker_url.startswith(("redis", "rediss")):
        return broker_url
    if broker_url.startswith(("amqp", "amqps", "pyamqp")):
        return "rpc://"
    return f"db+sqlite:///{VAR_DIR / 'celery-results.sqlite3'}"


CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", _default_result_backend(CELERY_BROKER_URL))
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_QUEUES: dict[str, dict[str, str]] = {"default": {}, "gpu": {}}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"runs.train_run": {"queue": "gpu"}, "runs.run_sweep": {"queue": "gpu"}}
# Long GPU tasks go to the ``gpu`` queue and run in a ``solo`` worker (prefork children are forked
# and daemonic, which breaks CUDA and DataLoader workers). A task is acknowledged when received,
# not when finished: under acks_late, Redis's visibility timeout (1 h) and RabbitMQ's consumer
# timeout (30 min) would redeliver or cut off a multi-hour training task. Recovery from a lost
# worker comes from its heartbeat instead (webapp.core.heartbeat).
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600
# SQLite files wait up to 30 s for the write lock instead of failing at once.
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"connect_args": {"timeout": 30}} if CELERY_BROKER_URL.startswith("sqla+") else {}
)
CELERY_DATABASE_ENGINE_OPTIONS = (
    {"connect_args": {"timeout": 30}} if CELERY_RESULT_BACKEND.startswith("db+sqlite") else {}
)

# Worker liveness: a heartbeat row every few seconds; younger than the timeout counts as live.
WORKER_HEARTBEAT_SECONDS = env_float("WORKER_HEARTBEAT_SECONDS", 5.0, minimum=0.1)
WORKER_LIVE_SECONDS = env_float("WORKER_LIVE_SECONDS", 30.0, minimum=1.0)
# How often each web process looks for dead workers' runs on its own (webapp.core.watchdog), so a
# run is marked within the live window plus one beat with no worker left and no request; 0: never.
GROUPWISE_LIVENESS_CHECK_SECONDS = env_float(
    "GROUPWISE_LIVENESS_CHECK_SECONDS", WORKER_HEARTBEAT_SECONDS, minimum=0.0
)
# Queue a run again as soon as its dead worker is noticed (it resumes from its checkpoint).
GROUPWISE_AUTO_RESUME = env_bool("GROUPWISE_AUTO_RESUME", False)

# The engine's model: unset means the built-in tiny model.
GROUPWISE_MODEL_DIR = env_path("GROUPWISE_MODEL_DIR", None, base=BASE_DIR)
# Checkpoints and engine files, one folder per run (images go under MEDIA_ROOT).
GROUPWISE_RUNS_DIR = env_path("GROUPWISE_RUNS_DIR", None, base=BASE_DIR) or VAR_DIR / "runs"
# Checkpoints kept per run: the newest N plus the best by evaluation reward; 0 keeps all.
GROUPWISE_KEEP_CHECKPOINTS = env_int("GROUPWISE_KEEP_CHECKPOINTS", 3, minimum=0)
# Runs one user may have running at once (enforced when a worker claims one); 0 is no limit.
GROUPWISE_MAX_RUNNING_PER_USER = env_int("GROUPWISE_MAX_RUNNING_PER_USER", 0, minimum=0)
# A run held back by that limit is offered to a worker again after this many seconds (and at
# once when one of the owner's runs ends).
GROUPWISE_LIMIT_RETRY_SECONDS = env_float("GROUPWISE_LIMIT_RETRY_SECONDS", 30.0, minimum=0.1)
# Webhook notifications: seconds per attempt, and attempts before giving up.
GROUPWISE_WEBHOOK_TIMEOUT = env_float("GROUPWISE_WEBHOOK_TIMEOUT", 10.0, minimum=0.1)
GROUPWISE_WEBHOOK_ATTEMPTS = env_int("GROUPWISE_WEBHOOK_ATTEMPTS", 3, minimum=1)
# The dashboard's address, for links in notifications.
GROUPWISE_BASE_URL = env_url(
    "GROUPWISE_BASE_URL", "http://127.0.0.1:8000", schemes=("http", "https")
)

# Email (notifications) through Django's mail settings; by default mail is written to the
# worker's log, so nothing needs a mail server.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "groupwise@localhost")
# Directories a run submitted from the web may name (data.dataset, model.path, rewards[].path):
# anything else on the worker's disk is refused, so a user cannot read it in as prompts or weights.
# Relative paths in a recipe resolve against the checkout (the worker's working directory).
GROUPWISE_DATA_ROOTS = [
    (BASE_DIR / p).resolve()
    for p in env_list(
        "GROUPWISE_DATA_ROOTS",
        [
            str(BASE_DIR / "dataset"),
            str(VAR_DIR / "data"),
            *([str(GROUPWISE_MODEL_DIR)] if GROUPWISE_MODEL_DIR else []),
        ],
    )
]
# Non-public addresses user URLs (rollout.server_urls, webhooks) may reach: host names, .domains
# and CIDRs (engine/net/egress.py reads it where it connects). Parsed here so that a bad entry stops
# the start-up instead of failing each request.
try:
    EgressPolicy.parse(env_str(EGRESS_SETTING, ""))
except EgressConfigError as _error:
    raise ImproperlyConfigured(str(_error)) from None
# Runs one user may create (new, API, clone) per period: N/second|minute|hour|day, or off.
GROUPWISE_RUN_CREATE_LIMIT = env_rate("GROUPWISE_RUN_CREATE_LIMIT", "60/hour")
# Sweeps one user may launch (run page, API) per period; each holds a GPU worker for its sizes.
GROUPWISE_SWEEP_CREATE_LIMIT = env_rate("GROUPWISE_SWEEP_CREATE_LIMIT", "20/hour")
# Recipe checks (validate and layout share it) one user may ask for per period; the New run
# form asks at most 4 times a second while someone types.
GROUPWISE_RECIPE_CHECK_LIMIT = env_rate("GROUPWISE_RECIPE_CHECK_LIMIT", "240/minute")

# The cache holds the rate limits' counters, which every web process of a host must share (serve
# starts one per core): in Redis when there is one, otherwise in files under VAR_DIR.
CACHES: dict[str, Any] = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "groupwise",
        }
        if REDIS_URL
        else {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": VAR_DIR / "cache",
        }
    )
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webapp.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Refuses text UTF-8 cannot store and absurd nesting with a 400 (webapp/core/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "webapp.core.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Bodies past Django's upload limits answer JSON, not Django's HTML 400 page.
    "EXCEPTION_HANDLER": "webapp.core.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Groupwise API",
    "DESCRIPTION": "Submit, watch and review GRPO runs. Authenticate with "
    "`Authorization: Bearer <token>` (tokens from the API tokens page) or a browser session.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI's files come from the sidecar package: the machines may have no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

SESSION_COOKIE_HTTPONLY = True
# Stated although they are Django's defaults, so that a change of default cannot drop them:
# SecurityMiddleware sends X-Content-Type-Options: nosniff (no guessing a media file's type) and
# Referrer-Policy (other sites see no run URL in Referer); the clickjacking middleware DENY.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
