"""modelhub settings: one env-driven file.

With no environment at all this is the local default: SQLite, Celery tasks run eagerly in the
calling process, a local-memory cache and DEBUG on. ``DATABASE_URL`` switches to PostgreSQL,
``REDIS_URL`` to Redis (cache, Celery broker, routing table) and a real worker. ``DEBUG=0`` is
production: it refuses to start without SECRET_KEY and ALLOWED_HOSTS.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from modelhub.env import database_from_url, env_bool, env_choice, env_int, env_list, env_str, storage_from_url

BASE_DIR = Path(__file__).resolve().parent.parent

DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
LOCAL_DEFAULT = DATABASE_URL is None and REDIS_URL is None
DEBUG = env_bool("DEBUG", default=LOCAL_DEFAULT)

SECRET_KEY = env_str("SECRET_KEY")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
if DEBUG:
    SECRET_KEY = SECRET_KEY or "local-development-only-key-never-used-in-production-0123456789abcdef"
    ALLOWED_HOSTS = ALLOWED_HOSTS or ["localhost", "127.0.0.1", "[::1]", "testserver"]
else:
    if not SECRET_KEY or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("DEBUG=0 needs SECRET_KEY: 50 or more random characters.")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("DEBUG=0 needs ALLOWED_HOSTS: the host names this server answers to.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_celery_beat",
    "modelhub.apps.ModelhubConfig",
    "predictions.apps.PredictionsConfig",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Uploads: role and size decided from the headers, before anything reads the body.
    "modelhub.uploads.UploadGuardMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "modelhub.urls"

# MODELHUB_PLANE=serving makes a process answer predictions and health checks only, with the
# least middleware and no sessions (token auth only): the inference plane runs on its own
# listener, and the management plane (admin, API) is not reachable through it.
MODELHUB_PLANE = env_choice("MODELHUB_PLANE", "all", {"all", "serving"})
if MODELHUB_PLANE == "serving":
    ROOT_URLCONF = "predictions.urls"
    MIDDLEWARE = ["django.middleware.security.SecurityMiddleware"]
WSGI_APPLICATION = "modelhub.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATA_DIR = Path(env_str("MODELHUB_DATA_DIR", str(BASE_DIR / "var")))
# The local default keeps its database and files here; create it so a fresh clone just works.
DATA_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": database_from_url(DATABASE_URL)
    if DATABASE_URL
    else {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "modelhub.sqlite3",
          # WAL and a long busy timeout let a worker thread or process write while pages read.
          "OPTIONS": {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
          # A file-backed test database lets a real worker process see the test's rows; one per
          # test run so that two runs on one machine never share it.
          "TEST": {"NAME": str(DATA_DIR / f"test-modelhub-{os.getpid()}.sqlite3")}}
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Uploaded models live in private storage: there is deliberately no MEDIA_URL route, so an
# upload is never served inline by the web server (see the deployment-bundle view for downloads).
MEDIA_ROOT = DATA_DIR / "media"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": "/private-not-served/"}},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# MODELHUB_STORAGE_URL=s3://bucket/prefix keeps every stored byte in an S3-compatible bucket, so
# serving nodes and workers run on separate machines; the local disk then holds caches only.
MODELHUB_STORAGE_URL = env_str("MODELHUB_STORAGE_URL")
if MODELHUB_STORAGE_URL:
    STORAGES["default"] = storage_from_url(MODELHUB_STORAGE_URL, endpoint_url=env_str("MODELHUB_S3_ENDPOINT_URL"),
                                           region=env_str("MODELHUB_S3_REGION", env_str("AWS_DEFAULT_REGION")))
elif env_str("MODELHUB_S3_ENDPOINT_URL"):
    raise ImproperlyConfigured("MODELHUB_S3_ENDPOINT_URL is set but MODELHUB_STORAGE_URL is not: "
                               "set MODELHUB_STORAGE_URL=s3://bucket/prefix too.")
# Each node's cache of stored files it serves or optimizes (used with a bucket), LRU above the cap.
MODELHUB_CACHE_DIR = DATA_DIR / "cache"
MODELHUB_CACHE_BYTES = env_int("MODELHUB_CACHE_MB", 4096, minimum=16) * 1024 * 1024
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
LOGIN_URL = "/admin/login/"
# Admin login lockout (modelhub/login_guard.py): this many failed logins for one username, or from
# one address (behind a proxy: the proxy's, hence its own higher limit), within LOCKOUT_S seconds
# and every further attempt is refused until the window ends.
MODELHUB_LOGIN_MAX_FAILURES = env_int("MODELHUB_LOGIN_MAX_FAILURES", 5, minimum=1)
MODELHUB_LOGIN_MAX_FAILURES_PER_IP = env_int("MODELHUB_LOGIN_MAX_FAILURES_PER_IP", 50, minimum=1)
MODELHUB_LOGIN_LOCKOUT_S = env_int("MODELHUB_LOGIN_LOCKOUT_S", 900, minimum=1)

# Uploads above 2.5 MB stream to a temporary file instead of memory; request bodies that are
# not files (JSON predictions) are capped so a huge body is answered 413, not parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MODELHUB_MAX_BODY_MB", 10, minimum=1) * 1024 * 1024
MODELHUB_MAX_MODEL_BYTES = env_int("MODELHUB_MAX_MODEL_MB", 1024, minimum=1) * 1024 * 1024
MODELHUB_MAX_DATASET_BYTES = env_int("MODELHUB_MAX_DATASET_MB", 512, minimum=1) * 1024 * 1024
# What a dataset's arrays may unpack to, checked from the sizes its zip directory and .npy headers
# declare, before anything is decompressed (in the intake child, never in the web process).
MODELHUB_MAX_DATASET_UNPACKED_BYTES = env_int("MODELHUB_MAX_DATASET_UNPACKED_MB", 512, minimum=1) * 1024 * 1024
# Every file part goes through this handler: to a temporary file, stopped (and deleted) at its cap.
FILE_UPLOAD_HANDLERS = ["modelhub.uploads.CappedUploadHandler"]
MODELHUB_INTAKE_MEMORY_MB = env_int("MODELHUB_INTAKE_MEMORY_MB", 4096, minimum=256)
# TorchScript is code: uploads are inspected, and passes that load one run, only in a child with no
# network and a read-only file system (workers/sandbox.py; needs unprivileged user namespaces).
# "off" keeps only the resource limits, for hosts that forbid namespaces: weaker, a model's code
# can then reach the network and write wherever the worker can.
MODELHUB_SANDBOX = env_choice("MODELHUB_SANDBOX", "required", {"required", "off"})
MODELHUB_PASS_MEMORY_MB = env_int("MODELHUB_PASS_MEMORY_MB", 8192, minimum=256)
MODELHUB_JOB_MAX_ATTEMPTS = env_int("MODELHUB_JOB_MAX_ATTEMPTS", 3, minimum=1)
# Jobs one user may have waiting (QUEUED) at once; one more is answered 429 with Retry-After, so a
# script in a loop cannot fill the queue for everyone.
MODELHUB_MAX_QUEUED_JOBS_PER_USER = env_int("MODELHUB_MAX_QUEUED_JOBS_PER_USER", 20, minimum=1)
MODELHUB_WORK_DIR = DATA_DIR / "work"
MODELHUB_METRICS_TOKEN = env_str("MODELHUB_METRICS_TOKEN", "")
# Seconds of timed calls per batch size when a job benchmarks a variant.
MODELHUB_BENCH_BUDGET_S = float(env_int("MODELHUB_BENCH_BUDGET_MS", 2000, minimum=50)) / 1000
# Processes per variant in a benchmark run, taking turns round by round (see workers.evaluation.bench).
MODELHUB_BENCH_PROCESSES = env_int("MODELHUB_BENCH_PROCESSES", 2, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Nothing is public by default; health checks opt out explicitly.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "modelhub.api.errors.exception_handler",
    "STRICT_JSON": True,
    # JSON only: DRF's browsable HTML API (forms, every field's choices) is a development aid.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
}
SPECTACULAR_SETTINGS = {"TITLE": "modelhub API", "VERSION": "1", "SERVE_INCLUDE_SCHEMA": False,
                        "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
                        # request bodies as inputs (no read-only fields); predict and OIP infer added by a hook
                        "COMPONENT_SPLIT_REQUEST": True,
                        # three models have a "status": each enum gets its own name in the schema
                        "ENUM_NAME_OVERRIDES": {"VersionStatusEnum": "modelhub.models.ModelVersion.Status",
                                                "VariantStatusEnum": "modelhub.models.Variant.Status",
                                                "JobStatusEnum": "modelhub.models.OptimizationJob.Status"},
                        "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                                                 "modelhub.api.schema.serving_routes"]}

# Celery: JSON only, at-least-once delivery, one task at a time per child, separate queues so a
# long optimization never starves a benchmark or a small default task.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = REDIS_URL is None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("MODELHUB_TASK_SOFT_LIMIT_S", 3600, minimum=1)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 120
# Redis re-delivers an unacknowledged task after the visibility timeout: keep it above the hard
# limit so a long job is never run twice at once.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 600}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "workers.tasks.optimize_*": {"queue": "optimize"},
    "workers.tasks.benchmark_*": {"queue": "benchmark"},
    "workers.tasks.nightly_*": {"queue": "benchmark"},
}
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Probes speak plain HTTP to the process and do not follow an https redirect (README "Serving").
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^v2/health/(live|ready)$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
    # Our own loggers speak at INFO; libraries (ONNX Runtime's quantizer logs every tensor) stay quiet.
    "loggers": {name: {"level": env_str("LOG_LEVEL", "INFO")} for name in ("modelhub", "predictions", "workers")}
    | {"kombu": {"level": "ERROR"}},
}

# --- Serving (predictions/) ------------------------------------------------------------------
# Everything the predict endpoint reads. Loaded runtimes are kept per process in an LRU keyed by
# artifact sha256 within a memory budget; each ONNX Runtime session gets explicit thread counts.
MODELHUB_SERVING_MAX_RUNTIME_MB = env_int("MODELHUB_SERVING_MAX_RUNTIME_MB", 2048, minimum=1)
MODELHUB_SERVING_INTRA_OP_THREADS = env_int("MODELHUB_SERVING_INTRA_OP_THREADS", 1, minimum=1)
MODELHUB_SERVING_INTER_OP_THREADS = env_int("MODELHUB_SERVING_INTER_OP_THREADS", 1, minimum=1)
# TorchScript is code: the API process loads it (torch.jit.load) only when this is on.
MODELHUB_SERVING_TORCHSCRIPT = env_bool("MODELHUB_SERVING_TORCHSCRIPT", False)
# Input caps, enforced before anything runs (the body cap is DATA_UPLOAD_MAX_MEMORY_SIZE).
MODELHUB_SERVING_MAX_BATCH = env_int("MODELHUB_SERVING_MAX_BATCH", 1024, minimum=1)
MODELHUB_SERVING_MAX_ELEMENTS = env_int("MODELHUB_SERVING_MAX_ELEMENTS", 4_000_000, minimum=1)
# Answer caps (all outputs of one answer together), checked at intake from the declared shapes and
# before rendering: as large as the input cap, so a model whose output is its input's size serves.
MODELHUB_SERVING_MAX_OUTPUT_ELEMENTS = env_int("MODELHUB_SERVING_MAX_OUTPUT_ELEMENTS", 4_000_000, minimum=1)
MODELHUB_SERVING_MAX_OUTPUT_MB = env_int("MODELHUB_SERVING_MAX_OUTPUT_MB", 64, minimum=1)
# Admission: predictions at work at once per process, how many more may wait and for how long;
# beyond that 503 + Retry-After (run more gunicorn threads than MAX_ACTIVE so the queue is here).
MODELHUB_SERVING_MAX_ACTIVE = env_int("MODELHUB_SERVING_MAX_ACTIVE", 4, minimum=1)
MODELHUB_SERVING_MAX_QUEUED = env_int("MODELHUB_SERVING_MAX_QUEUED", 32, minimum=0)
MODELHUB_SERVING_QUEUE_WAIT_MS = env_int("MODELHUB_SERVING_QUEUE_WAIT_MS", 100, minimum=0)
# Server-side batching (only for variants that turn it on, see predictions/batching.py): requests
# of one variant with the same non-batch dims wait up to WINDOW_MS for others, up to MAX_ROWS rows
# per run; a request gives up (503) after TIMEOUT_MS. Requests meet only within MAX_ACTIVE.
MODELHUB_SERVING_BATCHING_WINDOW_MS = env_int("MODELHUB_SERVING_BATCHING_WINDOW_MS", 2, minimum=0)
MODELHUB_SERVING_BATCHING_MAX_ROWS = env_int("MODELHUB_SERVING_BATCHING_MAX_ROWS", 32, minimum=1)
MODELHUB_SERVING_BATCHING_TIMEOUT_MS = env_int("MODELHUB_SERVING_BATCHING_TIMEOUT_MS", 1000, minimum=1)
# Routing: each process checks the Redis generation counter at most this often; a route also
# expires after ROUTE_TTL_S (a new job's "best" variant for ?version=N needs no promotion).
MODELHUB_SERVING_ROUTING_CHECK_MS = env_int("MODELHUB_SERVING_ROUTING_CHECK_MS", 500, minimum=0)
MODELHUB_SERVING_ROUTE_TTL_S = env_int("MODELHUB_SERVING_ROUTE_TTL_S", 30, minimum=1)
# Circuit breaker: a variant failing this many times in a row (a load error at once) is skipped
# for OPEN_S seconds, then tried again.
MODELHUB_SERVING_BREAKER_FAILURES = env_int("MODELHUB_SERVING_BREAKER_FAILURES", 3, minimum=1)
MODELHUB_SERVING_BREAKER_OPEN_S = env_int("MODELHUB_SERVING_BREAKER_OPEN_S", 30, minimum=1)
# Redis (response cache, routing table, throttle counters): after a failure it is left alone
# for BACKOFF_S seconds and requests go on without it. A separate cache alias with short socket
# timeouts keeps a hung Redis from holding a request.
MODELHUB_SERVING_REDIS_BACKOFF_S = env_int("MODELHUB_SERVING_REDIS_BACKOFF_S", 5, minimum=0)
MODELHUB_SERVING_KEY_PREFIX = env_str("MODELHUB_SERVING_KEY_PREFIX", "serving")
if REDIS_URL:
    CACHES["serving"] = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                         "OPTIONS": {"socket_connect_timeout": 0.1, "socket_timeout": 0.1}}
MODELHUB_SERVING_CACHE = "serving" if "serving" in CACHES else "default"
MODELHUB_SERVING_LOCAL_CACHE_ITEMS = env_int("MODELHUB_SERVING_LOCAL_CACHE_ITEMS", 1024, minimum=0)
# Who may predict is remembered per process this long (a revoked token stops within it).
MODELHUB_SERVING_AUTH_CACHE_S = env_int("MODELHUB_SERVING_AUTH_CACHE_S", 5, minimum=0)
# Requests per minute for management users predicting with their own login (0: unlimited);
# predict tokens carry their own limit.
MODELHUB_SERVING_USER_RATE_PER_MIN = env_int("MODELHUB_SERVING_USER_RATE_PER_MIN", 600, minimum=0)
# A new predict token expires after this many days, unless its maker explicitly asks for none.
MODELHUB_TOKEN_TTL_DAYS = env_int("MODELHUB_TOKEN_TTL_DAYS", 90, minimum=1)

# --- Nightly re-benchmarking ------------------------------------------------------------------
# A regression found by the nightly run is POSTed here as JSON (empty: no webhook). The body is
# signed with HMAC-SHA256 under the secret: header ``X-Modelhub-Signature: sha256=<hex>``.
MODELHUB_REGRESSION_WEBHOOK_URL = env_str("MODELHUB_REGRESSION_WEBHOOK_URL", "")
MODELHUB_REGRESSION_WEBHOOK_SECRET = env_str("MODELHUB_REGRESSION_WEBHOOK_SECRET", "")
if MODELHUB_REGRESSION_WEBHOOK_URL and not MODELHUB_REGRESSION_WEBHOOK_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("MODELHUB_REGRESSION_WEBHOOK_URL must be an http:// or https:// URL.")
if MODELHUB_REGRESSION_WEBHOOK_URL and not MODELHUB_REGRESSION_WEBHOOK_SECRET:
    raise ImproperlyConfigured("MODELHUB_REGRESSION_WEBHOOK_URL needs MODELHUB_REGRESSION_WEBHOOK_SECRET to sign "
                               "its payloads (receivers must be able to tell them from forgeries).")
