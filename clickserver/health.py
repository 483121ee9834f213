"""Liveness and readiness probes for load balancers and orchestrators; metrics for Prometheus."""

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from amqp.exceptions import AMQPError
from csp.decorators import csp_exempt
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.module_loading import import_string
from django.views import View
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from kombu.exceptions import OperationalError as BrokerError
from prometheus_client.core import GaugeMetricFamily, Metric
from redis.exceptions import RedisError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from clickserver.celery import app
from clickserver.metrics import (
    CONTENT_TYPE,
    bearer_matches,
    ip_allowed,
    metrics_render,
    process_sample,
)

logger = logging.getLogger(__name__)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        return f"error: {error}"
    return "ok"


def _check_cache() -> str:
    try:
        cache.set("health:ping", "pong", 5)
        return "ok" if cache.get("health:ping") == "pong" else "error: read back failed"
    except (OSError, RedisError) as error:
        return f"error: {error}"


def _check_broker() -> str:
    try:
        with app.connection_for_write() as conn:
            # One attempt: a retry waits 2 s first, so each probe took 2 s while the broker was
            # down (past a 1 s probe timeout); the next probe is the retry.
            conn.ensure_connection(max_retries=0, timeout=2)
    except (BrokerError, OSError) as error:
        return f"error: {error}"
    return "ok"


class HealthApi(APIView):
    """Liveness: the process answers."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description='{"status": "ok"}')}
    )
    def get(self, request):
        return Response({"status": "ok"})


def _pipeline_backlog(*, stuck_before: datetime) -> Any:
    """The pipeline backlog from the selector `settings.HEALTH_BACKLOG` names: named, not
    imported, so that clickserver imports no app (as the pipeline's follow-ups do)."""
    return import_string(settings.HEALTH_BACKLOG)(stuck_before=stuck_before)


def _lag_seconds(now: datetime, oldest: datetime | None) -> float:
    return round((now - oldest).total_seconds(), 1) if oldest else 0.0


class ReadinessApi(APIView):
    """Readiness: database, cache and broker reachable; the processing backlog and lag.

    503 also names each stuck shop: one whose oldest unprocessed event is older than
    PIPELINE_STUCK_SECONDS, or whose last pipeline batch failed.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="status, checks, backlog"),
            503: OpenApiResponse(OpenApiTypes.OBJECT, description="A check failed; see checks."),
        }
    )
    def get(self, request):
        now = timezone.now()
        checks = {"database": _check_database(), "cache": _check_cache(), "broker": _check_broker()}
        ready = all(value == "ok" for value in checks.values())
        body: dict = {"checks": checks}
        if checks["database"] == "ok":
            backlog = _pipeline_backlog(
                stuck_before=now - timedelta(seconds=settings.PIPELINE_STUCK_SECONDS)
            )
            body["backlog"] = {
                "events": backlog.events,
                "lag_seconds": _lag_seconds(now, backlog.oldest_unprocessed_at),
            }
            body["stuck_shops"] = [
                {
                    "shop_id": shop.shop_id,
                    "domain": shop.domain,
                    "lag_seconds": _lag_seconds(now, shop.oldest_unprocessed_at),
                    "error": shop.error,
                }
                for shop in backlog.stuck
            ]
            ready = ready and not backlog.stuck
        body = {"status": "ok" if ready else "unavailable", **body}
        return Response(body, status=200 if ready else 503)


class BacklogCollector:
    """The pipeline backlog, read at scrape time with readiness's query.

    That query is bounded: a few index-range reads per shop, each shop's count capped at
    BACKLOG_COUNT_CAP. A database that does not answer leaves these metrics out of the scrape
    (and the scrape itself up), so `absent()` and readiness tell of it, not a failed scrape.
    """

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        try:
            backlog = _pipeline_backlog(
                stuck_before=now - timedelta(seconds=settings.PIPELINE_STUCK_SECONDS)
            )
        except DatabaseError as error:
            logger.warning("metrics: pipeline backlog unavailable: %s", error)
            return
        yield GaugeMetricFamily(
            "clickserver_pipeline_backlog_events",
            "Events not yet processed (each shop's count capped at BACKLOG_COUNT_CAP).",
            value=backlog.events,
        )
        yield GaugeMetricFamily(
            "clickserver_pipeline_backlog_lag_seconds",
            "Age of the oldest unprocessed event; 0 without a backlog.",
            value=_lag_seconds(now, backlog.oldest_unprocessed_at),
        )
        yield GaugeMetricFamily(
            "clickserver_pipeline_stuck_shops",
            "Shops whose backlog is older than PIPELINE_STUCK_SECONDS or whose last batch failed.",
            value=len(backlog.stuck),
        )


class QueueCollector:
    """Messages waiting in each Celery queue (the default one and the live one), asked of the
    broker at scrape time (a passive declare: AMQP answers the count without touching the
    queue). A queue the broker does not answer for is left out of the scrape, and all are with
    the embedded filesystem transport, which keeps no count (docs/operations.md)."""

    def collect(self) -> Iterator[Metric]:
        if not settings.CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
            return
        depth = GaugeMetricFamily(
            "clickserver_celery_queue_messages", "Messages waiting in the queue.", labels=["queue"]
        )
        workers = GaugeMetricFamily(
            "clickserver_celery_queue_consumers", "Consumers of the queue.", labels=["queue"]
        )
        answered = False
        try:
            with app.connection_for_read() as conn:
                conn.ensure_connection(max_retries=0, timeout=2)  # as _check_broker
                for queue in (settings.CELERY_TASK_DEFAULT_QUEUE, settings.CELERY_LIVE_QUEUE):
                    # A channel per queue: a passive declare of a missing queue closes its channel.
                    try:
                        with conn.channel() as channel:
                            _, messages, consumers = channel.queue_declare(
                                queue=queue, passive=True
                            )
                    except AMQPError as error:  # not declared yet
                        logger.warning("metrics: queue depth of %s unavailable: %s", queue, error)
                        continue
                    depth.add_metric([queue], messages)
                    workers.add_metric([queue], consumers)
                    answered = True
        except (BrokerError, OSError, AMQPError) as error:
            logger.warning("metrics: queue depths unavailable: %s", error)
            return
        if answered:
            yield depth
            yield workers


def _metrics_allowed(request: HttpRequest) -> bool:
    if bearer_matches(request.headers.get("Authorization", ""), settings.METRICS_TOKEN):
        return True
    if settings.METRICS_ALLOWED_IPS and ip_allowed(
        request.META.get("REMOTE_ADDR", ""), settings.METRICS_ALLOWED_IPS
    ):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


# A plain view, outside the OpenAPI schema (it is no API for clients) and outside the CSP (a
# text/plain answer runs nothing).
@method_decorator(csp_exempt(), name="dispatch")
class MetricsView(View):
    """Prometheus text format, for a bearer METRICS_TOKEN, an address in METRICS_ALLOWED_IPS
    or a staff session; 404 for anyone else, so that the endpoint is not public by default."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not _metrics_allowed(request):
            raise Http404
        process_sample(force=True)
        return HttpResponse(
            metrics_render(collectors=(BacklogCollector(), QueueCollector())),
            content_type=CONTENT_TYPE,
        )
