"""Ingestion endpoints: our own format and the Segment HTTP Tracking API.

Authentication is the shop's public write key (X-Write-Key, Basic-auth user name, or `write_key`
in the body for sendBeacon). Responses are 202 only after the batch has committed.
"""

import base64
import binascii
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clickserver.api import ApplicationError
from clickserver.ratelimit import rate_limit_retry_after
from events import selectors, services
from events.models import EventFormat, Shop
from events.payloads import batch_unpack, payload_decode
from events.validation import EventInvalid, parse_timestamp

INGEST_RESPONSE = OpenApiResponse(
    description='{"accepted": n, "duplicates": d, "rejected": [{"index", "code", "detail"}]}'
)


def _write_key(request: Request, payload: Any) -> str:
    key = request.headers.get("X-Write-Key", "")
    authorization = request.headers.get("Authorization", "")
    if not key and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ApplicationError(
                "Malformed Basic authorization.", code="not_authenticated", status=401
            ) from None
        key = decoded.split(":", 1)[0]
    if not key and isinstance(payload, dict) and isinstance(payload.get("write_key"), str):
        key = payload["write_key"]
    return key


def _client_ip(request: Request) -> str | None:
    # Behind nginx the client is the first X-Forwarded-For hop (deploy/nginx.conf sets it).
    forwarded = request.headers.get("X-Forwarded-For", "")
    ip = forwarded.split(",")[0].strip() if forwarded else request.META.get("REMOTE_ADDR")
    return ip or None


def _authenticate(request: Request, payload: Any) -> Shop:
    key = _write_key(request, payload)
    shop = selectors.shop_get_by_write_key(write_key=key) if key else None
    if shop is None:
        raise ApplicationError(
            "Unknown or missing write key.", code="not_authenticated", status=401
        )
    retry_after = rate_limit_retry_after(
        key=f"ingest:{shop.pk}",
        limit=settings.INGEST_RATE_LIMIT_REQUESTS,
        window_seconds=settings.INGEST_RATE_LIMIT_WINDOW_SECONDS,
    )
    if retry_after is not None:
        raise ApplicationError(
            "Rate limit exceeded for this write key.",
            code="rate_limited",
            status=429,
            headers={"Retry-After": str(retry_after)},
        )
    return shop


def _sent_at(value: Any) -> Any:
    if value is None:
        return None
    try:
        return parse_timestamp(value, "sent_at")
    except EventInvalid as error:
        raise ApplicationError(error.detail, code=error.code) from None


def ingest(
    request: Request,
    *,
    format: str = EventFormat.CLICKSERVER,
    forced_type: str | None = None,
) -> Response:
    """Shared body of every ingestion endpoint: decode, authenticate, ingest, report."""
    received_at = timezone.now()
    payload = payload_decode(request)
    shop = _authenticate(request, payload)
    events, sent_at = batch_unpack(payload)
    if forced_type:
        events = [{**e, "type": forced_type} if isinstance(e, dict) else e for e in events]
    result = services.events_ingest(
        shop=shop,
        events=events,
        received_at=received_at,
        sent_at=_sent_at(sent_at),
        request=services.RequestContext(
            ip=_client_ip(request),
            user_agent=request.headers.get("User-Agent", ""),
            country=request.headers.get("X-Country-Code", "")[:2].upper(),
        ),
        format=format,
    )
    return Response(
        {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": [
                {"index": r.index, "code": r.code, "detail": r.detail} for r in result.rejected
            ],
        },
        status=202,
    )


class IngestApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    forced_type: str | None = None

    @extend_schema(request=dict, responses={202: INGEST_RESPONSE})
    def post(self, request: Request) -> Response:
        return ingest(request, forced_type=self.forced_type)


class EventIngestApi(IngestApi):
    """One event, or {"batch": [...], "sent_at": ...} (at most 500 events / 512 KB)."""


class PurchaseIngestApi(IngestApi):
    forced_type = "purchase"


class AddCartIngestApi(IngestApi):
    forced_type = "add_to_cart"


class SegmentIngestApi(APIView):
    """Segment HTTP Tracking API: /v1/track, identify, page, screen, group, alias and batch."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    segment_type: str | None = None

    @extend_schema(request=dict, responses={202: INGEST_RESPONSE})
    def post(self, request: Request) -> Response:
        return ingest(request, format=EventFormat.SEGMENT, forced_type=self.segment_type)
