"""WSGI entry point: the ingestion endpoints take a lean Django handler, the rest the full one.

A single-event ingestion request is a few hundred microseconds of real work; the full middleware
chain (static files, sessions, CSRF, auth, messages) and URL resolution over every app's patterns
cost as much again. Requests whose path is exactly one of `events.ingest_urls` therefore go to a
handler that runs only settings.INGEST_MIDDLEWARE and resolves only those patterns. It is still
Django: the same views, signals, connection handling and error envelope.
"""

import os
import threading
import time
from typing import Any

import django
from django.conf import settings
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.http import HttpRequest, HttpResponseBase
from django.urls import ResolverMatch
from django.utils.module_loading import import_string

INGEST_URLCONF = "events.ingest_urls"
# CONN_HEALTH_CHECKS pings the database before each request's first query: a round trip as long
# as the INSERT itself. A thread that finished a request this recently skips it (see
# docs/ingestion.md): a connection broken since fails its INSERT with a 503, nothing acknowledged,
# and Django closes it at the end of that request.
HEALTH_CHECK_AFTER_IDLE_SECONDS = 1.0


class IngestStack:
    """Handler mixin: only INGEST_MIDDLEWARE, only the ingestion URLconf (synchronous only)."""

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler.load_middleware reads settings.MIDDLEWARE; this is its synchronous core
        # over our own list (every middleware in it is sync-capable).
        self._view_middleware: list = []
        self._template_response_middleware: list = []
        self._exception_middleware: list = []
        handler = convert_exception_to_response(self._get_response)  # type: ignore[attr-defined]
        for middleware_path in reversed(settings.INGEST_MIDDLEWARE):
            middleware = import_string(middleware_path)(handler)
            if hasattr(middleware, "process_view"):
                self._view_middleware.insert(0, middleware.process_view)
            if hasattr(middleware, "process_template_response"):
                self._template_response_middleware.append(middleware.process_template_response)
            if hasattr(middleware, "process_exception"):
                self._exception_middleware.append(middleware.process_exception)
            handler = convert_exception_to_response(middleware)
        self._middleware_chain = handler

    _recent = threading.local()

    def get_response(self, request: HttpRequest) -> HttpResponseBase:
        finished_at = getattr(self._recent, "finished_at", None)
        if (
            finished_at is not None
            and time.monotonic() - finished_at < HEALTH_CHECK_AFTER_IDLE_SECONDS
        ):
            connection.health_check_done = True
        response = super().get_response(request)  # type: ignore[misc]
        self._recent.finished_at = time.monotonic()
        return response

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        request.urlconf = INGEST_URLCONF  # type: ignore[attr-defined]
        return super().resolve_request(request)  # type: ignore[misc]


class IngestHandler(IngestStack, WSGIHandler):
    pass


os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
django.setup(set_prefix=False)

full_handler = WSGIHandler()
ingest_handler = IngestHandler()
INGEST_PATHS = frozenset(
    "/" + str(pattern.pattern) for pattern in import_string(f"{INGEST_URLCONF}.urlpatterns")
)


def application(environ: dict[str, Any], start_response: Any) -> Any:
    if environ.get("PATH_INFO") in INGEST_PATHS:
        return ingest_handler(environ, start_response)
    return full_handler(environ, start_response)
