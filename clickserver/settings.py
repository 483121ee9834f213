"""clickserver settings: one file, driven by the environment.

Defaults are the embedded ones (SQLite in WAL mode, local-memory cache, Celery on kombu's
filesystem transport, in-process model inference) so a new user needs no servers. Production sets
DATABASE_URL, REDIS_URL, CELERY_BROKER_URL and TF_SERVING_URL; nothing else differs.
"""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env("CLICKSERVER_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "insecure-development-key-only-used-with-DJANGO_DEBUG"
# Rotation (docs/operations.md): the old key stays here until sessions and password-reset links
# signed with it have expired, so a new key logs nobody out.
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", default=[])

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "events",
    "analytics",
    "segments",
    "recommendations",
    "notifications",
]

MIDDLEWARE = [
    # Outermost, so it times everything below and sees the route the URL resolved to.
    "clickserver.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

# The ingestion endpoints (events/ingest_urls.py) run only these (clickserver/wsgi.py): public
# POSTs authenticated by write key, with no session, user, CSRF token, message or static file.
INGEST_MIDDLEWARE = [
    # Outermost, so it times everything below and sees the route the URL resolved to.
    "clickserver.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "clickserver.urls"
WSGI_APPLICATION = "clickserver.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "clickserver" / "templates"],
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

# --- Database -----------------------------------------------------------------------------------


def _database(url: str) -> dict:
    config = env.db_url_config(url)
    engine = config["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        # WAL lets the web process and the worker read while the other writes; IMMEDIATE avoids
        # "database is locked" upgrades from read to write transactions.
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    elif engine in ("django.db.backends.mysql",):
        config.setdefault("OPTIONS", {})
        config["OPTIONS"].update(
            {
                "charset": "utf8mb4",
                "init_command": "SET sql_mode='STRICT_TRANS_TABLES', time_zone='+00:00'",
                "isolation_level": "read committed",
            }
        )
        config["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
        config["CONN_HEALTH_CHECKS"] = True
        config["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_bin"}
    return config


DATABASE_URL = env("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'clickserver.sqlite3'}")
DATABASES = {"default": _database(DATABASE_URL)}
DATABASE_REPLICA_URL = env("DATABASE_REPLICA_URL", default="")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = _database(DATABASE_REPLICA_URL)
    # The test run has one physical database; the replica mirrors it instead of being created.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["clickserver.db_routers.AnalyticsReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache --------------------------------------------------------------------------------------

REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="cs"),
            "TIMEOUT": 300,
            # A dead Redis host must fail a cache call fast, not hold a request for the kernel's
            # connect timeout (ingestion goes on without Redis: docs/ingestion.md).
            "OPTIONS": {
                "socket_connect_timeout": env.float("REDIS_TIMEOUT_SECONDS", default=1.0),
                "socket_timeout": env.float("REDIS_TIMEOUT_SECONDS", default=1.0),
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "clickserver",
            "TIMEOUT": 300,
        }
    }

# --- Celery -------------------------------------------------------------------------------------

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for sub in ("out", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        # Exchange bindings; kombu's default is ./control, inside whatever directory we run in.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=360)
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_DEFAULT_QUEUE", default="clickserver")
# The live path (an event processed → the session's live score → a campaign decision the
# storefront can show) has its own queue, so that it never waits behind the long analytics tasks
# (a detection run over thousands of bots, a rollup recompute) on a busy worker. A plain
# `celery worker` consumes both queues; production adds a worker for the live queue alone
# (deploy/: worker-live), which keeps the live path's latency while the other worker is busy.
CELERY_LIVE_QUEUE = env("CELERY_LIVE_QUEUE", default=f"{CELERY_TASK_DEFAULT_QUEUE}.live")
CELERY_TASK_QUEUES = (Queue(CELERY_TASK_DEFAULT_QUEUE), Queue(CELERY_LIVE_QUEUE))
CELERY_TASK_ROUTES = {
    task: {"queue": CELERY_LIVE_QUEUE}
    for task in (
        "events.tasks.events_process_task",
        "notifications.tasks.scores_refresh_task",
        "notifications.tasks.campaign_decisions_task",
    )
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "events-process-sweep": {
        "task": "events.tasks.events_process_sweep_task",
        "schedule": timedelta(seconds=env.int("PIPELINE_SWEEP_SECONDS", default=30)),
    },
    "shopify-webhooks-sweep": {
        "task": "events.tasks.shopify_webhooks_sweep_task",
        "schedule": timedelta(seconds=60),
    },
    "erasures-complete-sweep": {
        "task": "events.tasks.erasures_complete_sweep_task",
        "schedule": timedelta(minutes=5),
    },
    "sessions-rebuild-sweep": {
        "task": "events.tasks.shop_sessions_rebuild_sweep_task",
        "schedule": timedelta(minutes=5),
    },
    "analytics-rollups-sweep": {
        "task": "analytics.tasks.rollups_refresh_sweep_task",
        "schedule": timedelta(minutes=5),
    },
    # Shops whose rollups moved since their last detection, and every shop once an hour (a drop
    # to nothing refreshes no rollup); alert deliveries left pending by a lost message.
    "analytics-anomalies-sweep": {
        "task": "analytics.tasks.anomalies_detect_sweep_task",
        "schedule": timedelta(seconds=60),
    },
    "rejected-events-prune": {
        "task": "events.tasks.rejected_events_prune_task",
        "schedule": crontab(hour=3, minute=17),
    },
    "segments-refresh-sweep": {
        "task": "segments.tasks.segments_refresh_sweep_task",
        "schedule": crontab(minute=23),
    },
    # Nightly, after the day's orders (docs/customers.md); the hourly segments refresh then
    # reads the new predictions for the predicted segments.
    "customer-predictions-nightly": {
        "task": "segments.tasks.customer_predictions_refresh_sweep_task",
        "schedule": crontab(hour=1, minute=53),
    },
    "recommendations-affinity-daily": {
        "task": "recommendations.tasks.affinity_rebuild_sweep_task",
        "schedule": crontab(hour=2, minute=41),
    },
    "experiments-refresh-sweep": {
        "task": "notifications.tasks.experiments_refresh_sweep_task",
        "schedule": timedelta(minutes=5),
    },
    # Hourly: each shop's daily report once its local day has ended (plus an hour for late
    # events), and the weekly one after its Sunday; already stored reports are skipped.
    "analytics-reports-sweep": {
        "task": "analytics.tasks.reports_sweep_task",
        "schedule": crontab(minute=11),
    },
    # Time-based triggers (a cart idle for N minutes) fire even when the shop sends no new events.
    "campaign-decisions-sweep": {
        "task": "notifications.tasks.campaign_decisions_sweep_task",
        "schedule": timedelta(minutes=1),
    },
    # Campaign email/webhook deliveries whose message or retry was lost, and rows a killed
    # worker left claimed (marked uncertain, never re-sent).
    "campaign-deliveries-sweep": {
        "task": "notifications.tasks.campaign_deliveries_sweep_task",
        "schedule": timedelta(minutes=1),
    },
    "conversion-model-train-weekly": {
        "task": "notifications.tasks.conversion_model_train_task",
        "schedule": crontab(day_of_week="sun", hour=4, minute=7),
    },
    "model-health-check": {
        "task": "notifications.tasks.model_health_check_task",
        "schedule": crontab(hour=5, minute=17),
    },
}

# --- Ingestion ----------------------------------------------------------------------------------

INGEST_MAX_BATCH_EVENTS = 500
INGEST_MAX_BODY_BYTES = 512 * 1024
# A gzip body may expand to at most this before it is refused (protects against zip bombs).
INGEST_MAX_DECOMPRESSED_BYTES = env.int("INGEST_MAX_DECOMPRESSED_BYTES", default=2 * 1024 * 1024)
INGEST_RATE_LIMIT_REQUESTS = env.int("INGEST_RATE_LIMIT_REQUESTS", default=2000)
INGEST_RATE_LIMIT_WINDOW_SECONDS = env.int("INGEST_RATE_LIMIT_WINDOW_SECONDS", default=1)
# GET /metrics answers a request bearing this token (or a staff session); without it, 404.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
# Or from these addresses (comma-separated IPs or CIDRs, e.g. "10.0.0.0/8,127.0.0.1"): the
# scraper's own address as the instance sees it, so scrape instances directly, never via nginx.
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
# host:port where a Celery worker serves its own /metrics (the pipeline's counters), token only.
METRICS_WORKER_BIND = env("METRICS_WORKER_BIND", default="")
REJECTED_EVENT_RETENTION_DAYS = env.int("REJECTED_EVENT_RETENTION_DAYS", default=30)
# The pipeline leaves the newest seconds of the log alone so that an insert still committing
# with a lower auto-increment id is never skipped by the watermark.
PIPELINE_SETTLE_SECONDS = env.float("PIPELINE_SETTLE_SECONDS", default=2.0)
PIPELINE_BATCH_SIZE = env.int("PIPELINE_BATCH_SIZE", default=20000)
# A shop's session-timeout change waits this long for its rebuild before the sweep resends it.
SESSIONS_REBUILD_SWEEP_AFTER_MINUTES = env.int("SESSIONS_REBUILD_SWEEP_AFTER_MINUTES", default=30)
# Readiness answers 503 while a shop's oldest unprocessed event is older than this.
PIPELINE_STUCK_SECONDS = env.int("PIPELINE_STUCK_SECONDS", default=900)
# Readiness and /metrics read the pipeline backlog through this selector (clickserver/health.py);
# named, not imported, so that clickserver imports no app.
HEALTH_BACKLOG = "events.selectors.processing_backlog"
# Functions `(*, shop) -> dict` merged into the tracking snippet's configuration
# (events/snippet.py), named so that events imports none of the apps that add to it: here the
# experiments the browser decides.
SNIPPET_CONFIG_HOOKS = [
    "notifications.experiments.selectors.experiments_snippet_config",
    "notifications.campaigns.selectors.campaigns_snippet_config",
]
# Functions `(*, survivor_id, loser_ids)` that identity stitching (events/services/persons.py)
# calls inside its transaction before it deletes merged persons, so that the apps above events
# move their own person rows to the survivor instead of losing them to the cascade (a campaign
# decision lost this way would let the same session be notified twice).
PERSON_MERGE_HOOKS = [
    "notifications.services.persons_merged",
    "segments.services.segments.persons_merged",
]
# Functions `(*, replaced: {obsolete session id: its successor})` that a session recompute
# (events/services/sessions.py) calls before it deletes sessions that a late event or a merge
# joined into others: the rows kept per session above events (live scores, campaign decisions,
# experiment exposures) move to the successor.
SESSIONS_REPLACED_HOOKS = ["notifications.services.sessions_replaced"]
# Functions `(*, shop, person_id) -> dict` merged into a customer profile
# (segments/selectors/customers.py), named so that segments imports no app above it: the live
# conversion score and the experiments the person saw.
CUSTOMER_PROFILE_HOOKS = ["notifications.selectors.customer_profile_activity"]
# The reports split a period's buyers by value segment (analytics/selectors/reports.py) through
# this selector `(*, shop_id, now) -> {person_id: band}`; named, so that analytics imports no
# segments (the apps are independent layers).
REPORT_VALUE_BANDS = "segments.selectors.segments.value_bands_get"
# What runs after the pipeline has processed events, in order: (stage, task path, when). The task
# paths are named, not imported, so that events never imports the apps that depend on it.
# "batch": sent by the worker after every processed batch, so the analytics stay seconds behind;
# "catch_up": heavier work that beat runs on its own schedule. `manage.py process_events` runs every
# stage in-process once it has caught up (events/follow_ups.py).
PIPELINE_FOLLOW_UPS: list[tuple[str, str, str]] = [
    # The rollup refresh schedules anomaly detection itself once a day changed (debounced).
    ("rollups", "analytics.tasks.rollups_refresh_task", "batch"),
    ("live scores", "notifications.tasks.scores_refresh_task", "batch"),
    ("experiments", "notifications.tasks.experiments_refresh_task", "batch"),
    # On a worker, the live scores' task sends the decisions once it has scored the batch (so a
    # decision sees this batch's scores), and beat sweeps the shops with running campaigns for
    # the time-based triggers; `process_events` runs it here, after the scores.
    ("campaigns", "notifications.tasks.campaign_decisions_task", "catch_up"),
    ("segments", "segments.tasks.segments_refresh_task", "catch_up"),
]
# A per-batch stage waiting in the queue is not sent again for the same shop (events/
# follow_ups.py); the mark expires after this many seconds, so a message lost with the broker is
# replaced by the next batch after that. Short, because a second message costs little: it finds
# the stage running (one run per shop at a time) or runs after it.
FOLLOW_UP_WAITING_SECONDS = env.int("FOLLOW_UP_WAITING_SECONDS", default=10)
# What an erasure recomputes once the person's raw rows are gone (events/services/erasure.py), and
# a session rebuild once the sessions changed (events/follow_ups.py `recompute_run`), in order:
# (stage, task path, scope). "days": the task gets (shop_id, ISO local days or None for all);
# "shop": it gets (shop_id). Named, not imported, for the same reason as above.
ERASURE_FOLLOW_UPS: list[tuple[str, str, str]] = [
    ("rollups", "analytics.tasks.rollups_days_recompute_task", "days"),
    ("segments", "segments.tasks.segments_refresh_task", "shop"),
    ("affinity", "recommendations.tasks.affinity_rebuild_task", "shop"),
    ("experiments", "notifications.tasks.experiment_exposures_repair_task", "shop"),
]

# --- Email (reports, alerts) ----------------------------------------------------------------------

# The embedded default prints each message to the console; production names its SMTP server in
# one variable, e.g. EMAIL_URL=smtp+tls://user:password@smtp.example.com:587 (django-environ's
# email_url sets EMAIL_BACKEND, EMAIL_HOST, EMAIL_PORT, the credentials and TLS from it).
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="clickserver <noreply@localhost>")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)

# --- Anomalies and alerts (docs/anomalies.md) -----------------------------------------------------

# Where alert emails and webhooks link to (the dashboard's Alerts page is under it).
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://localhost:8000")
ALERT_WEBHOOK_TIMEOUT_SECONDS = env.float("ALERT_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# A delivery is tried this many times (backoff 2, 4, 8 … s between tries) before it fails.
ALERT_DELIVERY_ATTEMPTS = env.int("ALERT_DELIVERY_ATTEMPTS", default=5)

# --- Campaign email and webhook deliveries (docs/campaigns.md) ------------------------------------

# Tries per delivery; after a transient failure the next waits base × 2^(attempts − 1) seconds.
CAMPAIGN_DELIVERY_ATTEMPTS = env.int("CAMPAIGN_DELIVERY_ATTEMPTS", default=5)
CAMPAIGN_DELIVERY_BACKOFF_SECONDS = env.int("CAMPAIGN_DELIVERY_BACKOFF_SECONDS", default=30)
# A delivery claimed longer ago than this (past the task's hard time limit) whose outcome was
# never recorded is marked uncertain and not sent again (at most once).
CAMPAIGN_DELIVERY_STALE_SECONDS = env.int("CAMPAIGN_DELIVERY_STALE_SECONDS", default=600)
CAMPAIGN_WEBHOOK_TIMEOUT_SECONDS = env.float("CAMPAIGN_WEBHOOK_TIMEOUT_SECONDS", default=10.0)

# Campaign and alert webhooks go to public addresses only (clickserver/webhook_guard.py: no
# loopback, private, link-local or metadata address, checked at save and at send). True lets a
# self-hosted install post to an internal receiver (a Slack relay on the LAN, the tests' local one).
WEBHOOK_ALLOW_PRIVATE_NETWORKS = env.bool("WEBHOOK_ALLOW_PRIVATE_NETWORKS", default=False)

# --- HTTP, auth, API ----------------------------------------------------------------------------

# Storefront endpoints only: the erasure API is for the shop's owners, not for browsers.
CORS_URLS_REGEX = (
    r"^/(?!events/erasures/)((events|v1|snippet|sourceConfig)/.*"
    r"|api/(crowd_favorites|featured_collection|pick_up_where_you_left_off)/.*)$"
)
CORS_ALLOW_ALL_ORIGINS = True  # storefronts are arbitrary origins; the write key is public anyway
CORS_ALLOW_HEADERS = [
    "accept",
    "authorization",
    "content-type",
    "content-encoding",
    "x-write-key",
    # Segment's SDKs number their retries in this header; without it a browser's retry would
    # fail its CORS preflight.
    "x-retry-count",
    "x-identity-token",
    # RudderStack's JavaScript SDK sends these with every event, and the rsa-* ones when it
    # retries or re-sends events recovered from storage.
    "anonymousid",
    "sentat",
    "rsa-recovered",
    "rsa-retry-attempt",
    "rsa-since-last-attempt",
    "rsa-since-first-attempt",
    "rsa-retry-reason",
]

API_PAGE_SIZE = 100
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "clickserver.throttles.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "clickserver.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "clickserver.api.Pagination",
    "PAGE_SIZE": API_PAGE_SIZE,
    "DEFAULT_THROTTLE_CLASSES": [
        "clickserver.throttles.ReadThrottle",
        "clickserver.throttles.ExportThrottle",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "clickserver API",
    "DESCRIPTION": "Clickstream analytics for e-commerce storefronts.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's assets are served from our own static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Two choice sets share the field name "channel" (alert rules: email/webhook; campaigns:
    # on_site/email/webhook): named here (dotted paths, so clickserver imports no app).
    "ENUM_NAME_OVERRIDES": {
        "AlertChannelEnum": "analytics.models.AlertChannel",
        "CampaignChannelEnum": "notifications.models.CampaignChannel",
    },
}

# --- Request limits (clickserver/throttles.py; ingestion has its own above) ---------------------
# Fixed windows shared through Redis; every refusal is a 429 with Retry-After.

# Per user (session or token), every API request; CSV exports count against both limits.
API_RATE_LIMIT_REQUESTS = env.int("API_RATE_LIMIT_REQUESTS", default=600)
API_EXPORT_RATE_LIMIT_REQUESTS = env.int("API_EXPORT_RATE_LIMIT_REQUESTS", default=30)
# Per client address: bad API tokens before every token from it is refused for the window.
API_TOKEN_FAILURE_LIMIT = env.int("API_TOKEN_FAILURE_LIMIT", default=20)
API_RATE_LIMIT_WINDOW_SECONDS = env.int("API_RATE_LIMIT_WINDOW_SECONDS", default=60)
# Per write key and client address, on the storefront recommendation endpoints.
STOREFRONT_RATE_LIMIT_REQUESTS = env.int("STOREFRONT_RATE_LIMIT_REQUESTS", default=300)
STOREFRONT_RATE_LIMIT_WINDOW_SECONDS = env.int("STOREFRONT_RATE_LIMIT_WINDOW_SECONDS", default=60)
# Failed logins (dashboard and admin) per address and username, and per address overall.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_FAILURE_IP_LIMIT = env.int("LOGIN_FAILURE_IP_LIMIT", default=50)
LOGIN_FAILURE_WINDOW_SECONDS = env.int("LOGIN_FAILURE_WINDOW_SECONDS", default=900)

# --- Auth ---------------------------------------------------------------------------------------

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- HTTPS, cookies and security headers ---------------------------------------------------------
# Production runs behind nginx (deploy/nginx.conf), which terminates TLS and sets
# X-Forwarded-Proto; nginx is the only client gunicorn accepts that header from
# (GUNICORN_FORWARDED_ALLOW_IPS). `manage.py check --deploy` is clean with DEBUG off
# (clickserver/tests/test_deploy.py); each value can be overridden from the environment.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
# Probes reach gunicorn directly over plain HTTP (docker-compose, systemd health checks).
# So does Prometheus: each web instance is its own scrape target (see docs/operations.md).
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
# Covers only the subdomains of this server's own host name (e.g. *.analytics.example.com).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
# Preloading commits a whole registrable domain to HTTPS in every browser; that is the domain
# owner's decision, not a default for a self-hosted subdomain (set DJANGO_SECURE_HSTS_PRELOAD=1).
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp) on every page: the dashboard, the login and the admin load
# scripts, styles, fonts and Chart.js from this origin only, and nothing inline runs (the
# dashboard's data travels in a json_script block, which is data, not script). Checked in headless
# Chromium by analytics/tests/test_dashboard_browser.py.
CONTENT_SECURITY_POLICY = {
    # Ingestion answers JSON to scripts, never a page, and runs without this middleware in
    # production (INGEST_MIDDLEWARE): both stacks answer it the same.
    "EXCLUDE_URL_PREFIXES": ["/events/", "/v1/"],
    "DIRECTIVES": {
        "default-src": [SELF],
        "base-uri": [SELF],
        "connect-src": [SELF],
        "font-src": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "script-src": [SELF],
        "style-src": [SELF],
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [d for d in [BASE_DIR / "node_modules" / "chart.js" / "dist"] if d.exists()]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# The hashed manifest needs `collectstatic` first: production does that (deploy/), while DEBUG and
# the test run read the source files directly.
if DEBUG or not env.bool("DJANGO_STATIC_MANIFEST", default=True):
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

# --- Models -------------------------------------------------------------------------------------

MODEL_DIR = Path(env("MODEL_DIR", default=str(VAR_DIR / "models")))
TF_SERVING_URL = env("TF_SERVING_URL", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
