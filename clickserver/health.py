"""Liveness and readiness probes for load balancers and orchestrators."""

from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from clickserver.celery import app
from events.selectors import processing_backlog


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
            conn.ensure_connection(max_retries=1, timeout=2)
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
            backlog = processing_backlog(
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
