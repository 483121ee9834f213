"""Ingestion endpoints: our own format and the Segment HTTP Tracking API.

Authentication is the shop's public write key (X-Write-Key, Basic-auth user name, or `write_key`
in the body for sendBeacon). Responses come only after the batch has committed: 202 for our own
format, 200 for the Segment API, as Segment's and RudderStack's SDKs expect.
"""

from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotFound,
    HttpResponseNotModified,
    JsonResponse,
)
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clickserver import metrics
from clickserver.api import Pagination
from clickserver.errors import ENVELOPE_ERRORS, ApplicationError, error_http_response
from clickserver.ratelimit import rate_limit_retry_after
from clickserver.schema import (
    PAGE,
    PAGE_SIZE,
    SHOP,
    BodyRequiredSchema,
    error_responses,
    paginated,
)
from events import segment, selectors, shopify, snippet
from events.models import EventFormat, Shop
from events.payloads import batch_unpack, payload_decode
from events.services import erasure
from events.services.ingest import IngestResult, RequestContext, events_ingest
from events.services.shopify import shopify_webhook_receive
from events.storefront_auth import shop_authenticate
from events.validation import EventInvalid, parse_timestamp

INGEST_RESPONSE = OpenApiResponse(
    description='{"accepted": n, "duplicates": d, "rejected": [{"index", "code", "detail"}]}'
)
INGEST_ERRORS = (400, 401, 413, 415, 429, 503)
SEGMENT_INGEST_RESPONSE = OpenApiResponse(
    description='{"success": true, "accepted": n, "duplicates": d, "rejected": [...]}'
)


def _client_ip(request: HttpRequest) -> str | None:
    # Behind nginx the client is the first X-Forwarded-For hop (deploy/nginx.conf sets it).
    forwarded = request.headers.get("X-Forwarded-For", "")
    ip = forwarded.split(",")[0].strip() if forwarded else request.META.get("REMOTE_ADDR")
    return ip or None


def _authenticate(request: HttpRequest, payload: Any) -> Shop:
    shop = shop_authenticate(request=request, payload=payload)
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
    request: HttpRequest | Request,
    *,
    format: str = EventFormat.CLICKSERVER,
    forced_type: str | None = None,
) -> HttpResponse:
    """Shared body of every ingestion endpoint: decode, authenticate, ingest, report."""
    received_at = timezone.now()
    payload = payload_decode(request)
    shop = _authenticate(request, payload)
    events, sent_at = batch_unpack(payload)
    if forced_type:
        events = [{**e, "type": forced_type} if isinstance(e, dict) else e for e in events]
    result = events_ingest(
        shop=shop,
        events=events,
        received_at=received_at,
        sent_at=_sent_at(sent_at),
        request=RequestContext(
            ip=_client_ip(request),
            # A Segment-format request comes from an SDK: a server library names itself here
            # (analytics-ruby, which the crawler list knows as an HTTP client, would tag every
            # shopper it tracks as a bot), and a browser's or app's SDK sends the shopper's own
            # user agent in `context.userAgent`.
            user_agent=""
            if format == EventFormat.SEGMENT
            else request.headers.get("User-Agent", ""),
            country=request.headers.get("X-Country-Code", "")[:2].upper(),
        ),
        format=format,
    )
    _events_count(result)
    body = {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": [
            {"index": r.index, "code": r.code, "detail": r.detail} for r in result.rejected
        ],
    }
    status = 202
    if format == EventFormat.SEGMENT:
        # Segment's API answers 200 {"success": true}, and RudderStack's Python SDK treats
        # anything but 200 as a failure and retries it. Rejected events are stored, so a batch
        # with rejections is still a success: a retry would not change the answer.
        body = {"success": True, **body}
        status = 200
    # Rendered directly: DRF's content negotiation and renderer cost more than the insert here.
    return HttpResponse(orjson.dumps(body), status=status, content_type="application/json")


def _events_count(result: IngestResult) -> None:
    # Once per request with the result's counts: a counter increment costs about a microsecond.
    metrics.EVENTS_ACCEPTED.inc(result.accepted)
    metrics.EVENTS_DUPLICATE.inc(result.duplicates)
    if result.rejected:
        metrics.EVENTS_REJECTED.inc(len(result.rejected))
        for code, count in Counter(r.code for r in result.rejected).items():
            metrics.INGEST_REJECTED_EVENTS.labels(code=code).inc(count)


# The base of the ingestion endpoints: route them with `as_ingest_view()`, not `as_view()`. (A
# comment, not a docstring: drf-spectacular would show it as each subclass's description.)
class IngestApi(APIView):
    schema = BodyRequiredSchema()
    authentication_classes: list = []
    permission_classes = [AllowAny]
    format: str = EventFormat.CLICKSERVER
    forced_type: str | None = None

    @extend_schema(
        request=dict,
        responses={202: INGEST_RESPONSE, **error_responses(*INGEST_ERRORS)},
    )
    def post(self, request: Request) -> HttpResponse:
        return ingest(request, format=self.format, forced_type=self.forced_type)

    @classmethod
    def as_ingest_view(cls, **initkwargs: Any) -> Callable[..., HttpResponse]:
        """A plain Django view that answers POST without DRF's dispatch.

        DRF's request wrapping, negotiation and finalising cost more than the INSERT on a
        single-event request. POST runs the same `ingest()` and renders the same error envelope;
        every other method (OPTIONS, the 405 answer) and the OpenAPI schema still go through
        this APIView, whose class the view carries for drf-spectacular.
        """
        drf_view = cls.as_view(**initkwargs)
        format = initkwargs.get("format", cls.format)
        forced_type = initkwargs.get("forced_type", cls.forced_type)
        with_message = format == EventFormat.SEGMENT

        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != "POST":
                return drf_view(request, *args, **kwargs)
            try:
                response = ingest(request, format=format, forced_type=forced_type)
            except ENVELOPE_ERRORS as error:
                response = error_http_response(error, with_message=with_message)
            except Exception:  # Django answers 500: counted, then re-raised unchanged
                metrics.STATUS_CLASS["5xx"].inc()
                raise
            metrics.STATUS_CLASS[metrics.status_class(response.status_code)].inc()
            return response

        view.cls = cls  # type: ignore[attr-defined]
        view.initkwargs = drf_view.initkwargs  # type: ignore[attr-defined]
        return csrf_exempt(view)


class EventIngestApi(IngestApi):
    """One event, or {"batch": [...], "sent_at": ...} (at most 500 events / 512 KB)."""


class PurchaseIngestApi(IngestApi):
    forced_type = "purchase"


class AddCartIngestApi(IngestApi):
    forced_type = "add_to_cart"


class SegmentIngestApi(IngestApi):
    """Segment HTTP Tracking API: /v1/track, identify, page, screen, group, alias and batch.

    200 {"success": true, ...} on success; errors also carry `message`.
    """

    format = EventFormat.SEGMENT

    @extend_schema(
        request=dict, responses={200: SEGMENT_INGEST_RESPONSE, **error_responses(*INGEST_ERRORS)}
    )
    def post(self, request: Request) -> HttpResponse:
        return ingest(request, format=self.format, forced_type=self.forced_type)


class SegmentSettingsView(View):
    """The settings analytics.js fetches from its CDN host, pointing it at this server."""

    def get(self, request: HttpRequest, write_key: str) -> HttpResponse:
        shop = selectors.shop_get_by_write_key(write_key=write_key)
        if shop is None:
            return HttpResponseNotFound("unknown write key", content_type="text/plain")
        settings_body = segment.segment_cdn_settings(
            write_key=shop.write_key,
            api_host=request.get_host() + reverse("segment-batch").removesuffix("/batch"),
            protocol=request.scheme or "https",
        )
        response = JsonResponse(settings_body)
        response["Cache-Control"] = f"public, max-age={snippet.SNIPPET_MAX_AGE_SECONDS}"
        return response


class RudderSourceConfigView(View):
    """The source config RudderStack's JavaScript SDK fetches before it sends anything.

    The SDK sends the write key both as the Basic-auth user name and in the `writeKey` query
    parameter; only the header counts, as everywhere (events/storefront_auth.py: a key in a URL
    lands in access logs). 401 with the error envelope for an unknown or missing key, after which
    the SDK stays unloaded and sends nothing.
    """

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            shop = shop_authenticate(request=request)
        except ApplicationError as error:
            return error_http_response(error)
        response = JsonResponse(
            segment.rudderstack_source_config(
                shop_id=shop.pk, shop_name=shop.name or shop.domain, write_key=shop.write_key
            )
        )
        response["Cache-Control"] = f"public, max-age={snippet.SNIPPET_MAX_AGE_SECONDS}"
        # The key may come only in the Authorization header, so the URL alone does not name it.
        response["Vary"] = "Authorization"
        return response


def _shopify_shop(request: Request, body: bytes) -> Shop:
    """The shop named by X-Shopify-Shop-Domain, if the raw body is signed with its secret."""
    shop = selectors.shop_get_by_domain(domain=request.headers.get("X-Shopify-Shop-Domain", ""))
    signature = request.headers.get("X-Shopify-Hmac-Sha256", "")
    if shop is None or not shopify.signature_is_valid(
        secret=shop.webhook_secret, body=body, signature=signature
    ):
        raise ApplicationError(
            "Unknown shop or bad signature.", code="not_authenticated", status=401
        )
    return shop


class ShopifyWebhookApi(APIView):
    """Every Shopify webhook topic (X-Shopify-Topic); verified, de-duplicated, processed later.

    401 for an unknown shop or a bad signature, with nothing stored; 200 otherwise (a repeated
    X-Shopify-Webhook-Id included), so Shopify stops retrying.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]
    default_topic: str | None = None

    @extend_schema(
        request=dict,
        responses={
            200: OpenApiResponse(description='{"status": ...}'),
            **error_responses(400, 401, 503),
        },
    )
    def post(self, request: Request) -> Response:
        body = request.body
        shop = _shopify_shop(request, body)
        topic = request.headers.get("X-Shopify-Topic", self.default_topic or "")
        webhook_id = request.headers.get("X-Shopify-Webhook-Id", "")
        if not topic or not webhook_id:
            raise ApplicationError("X-Shopify-Topic and X-Shopify-Webhook-Id are required.")
        received = shopify_webhook_receive(
            shop=shop, webhook_id=webhook_id, topic=topic, body=body, received_at=timezone.now()
        )
        return Response({"status": "duplicate" if received.is_duplicate else "accepted"})


class SnippetView(View):
    """The tracking snippet, configured for the shop whose write key is in the URL."""

    def get(self, request: HttpRequest, write_key: str) -> HttpResponse:
        shop = selectors.shop_get_by_write_key(write_key=write_key)
        if shop is None:
            return HttpResponseNotFound(
                "/* clickserver: unknown write key */", content_type="application/javascript"
            )
        source = snippet.snippet_render(
            shop=shop, endpoint=request.build_absolute_uri(reverse("events-ingest"))
        )
        etag = snippet.snippet_etag(source)
        if request.headers.get("If-None-Match") == etag:
            return HttpResponseNotModified()
        response = HttpResponse(source, content_type="application/javascript; charset=utf-8")
        # Short enough that a consent-mode change or a key rotation reaches browsers soon.
        response["Cache-Control"] = f"public, max-age={snippet.SNIPPET_MAX_AGE_SECONDS}"
        response["ETag"] = etag
        response["X-Content-Type-Options"] = "nosniff"
        return response


# --- Erasure (token or session auth; the shop's owners only) ------------------------------------


class ErasureListApi(APIView):
    """`POST` erases one person by user id, anonymous id or email; `GET` lists the requests."""

    schema = BodyRequiredSchema()

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ErasureInput"  # the schema's component name: every API has an "Input"

        user_id = serializers.CharField(
            required=False,
            min_length=1,
            max_length=255,
            help_text="Give exactly one of `user_id`, `anonymous_id`, `email`.",
        )
        anonymous_id = serializers.CharField(
            required=False,
            min_length=1,
            max_length=255,
            help_text="Give exactly one of `anonymous_id`, `user_id`, `email`.",
        )
        email = serializers.CharField(
            required=False,
            min_length=1,
            max_length=320,
            help_text="Give exactly one of `email`, `user_id`, `anonymous_id`.",
        )

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ErasureRequest"

        id = serializers.IntegerField()
        kind = serializers.CharField()
        requested_at = serializers.DateTimeField()
        completed_at = serializers.DateTimeField(allow_null=True)
        counts = serializers.DictField(child=serializers.IntegerField())
        day_count = serializers.SerializerMethodField()

        def get_day_count(self, request) -> int | None:
            return None if request.days is None else len(request.days)

    @extend_schema(
        parameters=[SHOP, PAGE, PAGE_SIZE],
        responses={
            200: paginated("ErasureRequestPage", OutputSerializer(many=True)),
            **error_responses(400, 401, 403, 404, 429, 503),
        },
    )
    def get(self, request):
        shop = selectors.shop_get_for_eraser(
            user=request.user, domain=request.query_params.get("shop")
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.erasure_requests_list(shop=shop), request, view=self
        )
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)

    @extend_schema(
        parameters=[SHOP],
        request=InputSerializer,
        responses={202: OutputSerializer, **error_responses(400, 401, 403, 404, 429, 503)},
    )
    def post(self, request):
        shop = selectors.shop_get_for_eraser(
            user=request.user, domain=request.query_params.get("shop")
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        erased = erasure.persons_erase(shop=shop, **data.validated_data, now=timezone.now())
        # Accepted: the raw rows are gone; the derived ones follow (completed_at).
        return Response(self.OutputSerializer(erased).data, status=202)
