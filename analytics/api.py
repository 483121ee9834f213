"""Analytics endpoints: parse the query, call one selector (through the cache), render."""

from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.cache import answer_cached
from analytics.models import AlertChannel, Anomaly, AnomalyKind, AnomalyStatus, Severity
from analytics.params import (
    INTERVALS,
    MAX_WINDOW_SECONDS,
    PRODUCT_ORDERS,
    STEPS_PATTERN,
    anomaly_filters_parse,
    choice_param,
    funnel_params_parse,
    int_param,
    interval_parse,
    query_parse,
    report_params_parse,
)
from analytics.renderers import CsvRenderer, ReportHtmlRenderer
from analytics.report_render import report_text_render
from analytics.selectors.anomalies import (
    alert_deliveries_list,
    alert_rule_get_for_shops,
    alert_rules_list,
    anomalies_list,
    anomaly_chart,
    anomaly_get_for_shops,
    anomaly_row,
    rule_row,
)
from analytics.selectors.audience import AUDIENCE_BREAKDOWNS, audience_get
from analytics.selectors.carts import abandoned_carts_get
from analytics.selectors.counts import session_count_get, user_count_get, visit_conversion_get
from analytics.selectors.detection import METRICS, SERIES_METRICS, detection_settings_row
from analytics.selectors.funnels import funnel_compute
from analytics.selectors.geography import geography_get
from analytics.selectors.insights import insights_get
from analytics.selectors.kpis import kpis_get
from analytics.selectors.live import live_get
from analytics.selectors.products import product_visits_get, products_get
from analytics.selectors.query import BREAKDOWNS, Query
from analytics.selectors.reports import (
    KINDS as REPORT_KINDS,
)
from analytics.selectors.reports import (
    report_data_compute,
    report_get,
    report_list,
    report_period_get,
)
from analytics.selectors.retention import retention_get
from analytics.selectors.trends import trends_get
from analytics.services.alerts import alert_rule_create, alert_rule_delete, alert_rule_update
from analytics.services.anomalies import anomaly_acknowledge, anomaly_resolve
from analytics.services.detection_settings import detection_settings_update
from clickserver.api import Pagination
from clickserver.schema import (
    END,
    FORMAT,
    MEMBER_ERRORS,
    PAGE,
    PAGE_SIZE,
    SHOP,
    START,
    choice_schema,
    error_responses,
    integer_schema,
    paginated,
)
from events.selectors import shop_get_for_user, shops_for_user

PERIOD_PARAMETERS = [
    SHOP,
    START,
    END,
    OpenApiParameter(
        "compare",
        choice_schema("", "previous", default=""),
        description="`previous` adds `previous`.",
    ),
    FORMAT,
    *[
        OpenApiParameter(name, str, description=f"Only sessions with this {name}.")
        for name in BREAKDOWNS
    ],
]


def limit_parameter(*, default: int, high: int) -> OpenApiParameter:
    return OpenApiParameter("limit", integer_schema(low=1, high=high, default=default))


def analytics_schema(description: str, *extra: OpenApiParameter, period: bool = True):
    """The operation of one analytics endpoint: its parameters, JSON or CSV, every error."""
    return extend_schema(
        description=description,
        parameters=[*(PERIOD_PARAMETERS if period else [SHOP, FORMAT]), *extra],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="See docs/analytics.md."),
            **error_responses(*MEMBER_ERRORS, 406),
        },
    )


class AnalyticsApi(APIView):
    """Shared rendering: JSON or CSV, and `compare=previous` for the period before."""

    renderer_classes = [JSONRenderer, CsvRenderer]
    csv_name = "analytics"

    def answer(self, request, compute: Callable[[Query], Any], **params: Any) -> Response:
        query, compare = query_parse(request)
        name = type(self).__name__
        # The cache holds the answer as plain data: `asdict` deep-copies every nested row and
        # was most of a warm request's time. Cached values are shared, hence the shallow copy.
        data = {**answer_cached(name, query, params, lambda: asdict(compute(query)))}
        if compare:
            before = replace(query, period=query.period.previous())
            data["previous"] = answer_cached(name, before, params, lambda: asdict(compute(before)))
        return Response(data)


class SessionCountApi(AnalyticsApi):
    csv_name = "session_count"

    @analytics_schema("Sessions that started in the period.")
    def get(self, request):
        return self.answer(request, lambda q: session_count_get(query=q))


class UserCountApi(AnalyticsApi):
    csv_name = "user_count"

    @analytics_schema("Distinct persons with an event in the period.")
    def get(self, request):
        return self.answer(request, lambda q: user_count_get(query=q))


class VisitConversionApi(AnalyticsApi):
    csv_name = "visit_conversion"

    @analytics_schema("Sessions, converted sessions and their rate.")
    def get(self, request):
        return self.answer(request, lambda q: visit_conversion_get(query=q))


class ProductVisitsApi(AnalyticsApi):
    csv_name = "product_visits"

    @analytics_schema("Views per product.", limit_parameter(default=50, high=1000))
    def get(self, request):
        limit = int_param(request.query_params, "limit", default=50, low=1, high=1000)
        compute = lambda q: product_visits_get(query=q, limit=limit)  # noqa: E731
        return self.answer(request, compute, limit=limit)


class FunnelApi(AnalyticsApi):
    csv_name = "funnel"

    @analytics_schema(
        "Conversion through ordered steps.",
        OpenApiParameter(
            "steps",
            {"type": "string", "pattern": STEPS_PATTERN},
            required=True,
            description="2 to 10 comma-separated event types (blank items are skipped).",
        ),
        OpenApiParameter(
            "step_filters", str, description='JSON: a list or {"<index or type>": {…}}.'
        ),
        OpenApiParameter("unit", choice_schema("session", "person", default="session")),
        OpenApiParameter("mode", choice_schema("ordered", "strict", default="ordered")),
        OpenApiParameter(
            "window", integer_schema(low=0, high=MAX_WINDOW_SECONDS), description="Seconds."
        ),
        OpenApiParameter(
            "breakdown",
            choice_schema("", *BREAKDOWNS, default=""),
            description="Only with `unit=session`.",
        ),
    )
    def get(self, request):
        params = funnel_params_parse(request.query_params)
        compute = lambda q: funnel_compute(query=q, params=params)  # noqa: E731
        return self.answer(request, compute, funnel=params)


class KpisApi(AnalyticsApi):
    csv_name = "kpis"

    @analytics_schema("Revenue, orders, conversion, abandonment, CLV, sessions, visitors.")
    def get(self, request):
        return self.answer(request, lambda q: kpis_get(query=q))


class TrendsApi(AnalyticsApi):
    csv_name = "trends"

    @analytics_schema(
        "Series per interval.",
        OpenApiParameter("interval", choice_schema(*INTERVALS, default="day")),
    )
    def get(self, request):
        interval = interval_parse(request.query_params)
        compute = lambda q: trends_get(query=q, interval=interval)  # noqa: E731
        return self.answer(request, compute, interval=interval)


class InsightsApi(AnalyticsApi):
    csv_name = "insights"

    @analytics_schema("Findings in plain language and the facts behind them.")
    def get(self, request):
        return self.answer(request, lambda q: insights_get(query=q))


class ProductsApi(AnalyticsApi):
    csv_name = "products"

    @analytics_schema(
        "Rows per product.",
        limit_parameter(default=50, high=1000),
        OpenApiParameter("order_by", choice_schema(*PRODUCT_ORDERS, default="views")),
    )
    def get(self, request):
        limit = int_param(request.query_params, "limit", default=50, low=1, high=1000)
        order = choice_param(request.query_params, "order_by", PRODUCT_ORDERS, "views")
        compute = lambda q: products_get(query=q, order_by=order, limit=limit)  # noqa: E731
        return self.answer(request, compute, limit=limit, order_by=order)


class AbandonedCartsApi(AnalyticsApi):
    csv_name = "abandoned_carts"

    @analytics_schema("Abandonment and the recovery list.", limit_parameter(default=100, high=1000))
    def get(self, request):
        limit = int_param(request.query_params, "limit", default=100, low=1, high=1000)
        compute = lambda q: abandoned_carts_get(query=q, limit=limit)  # noqa: E731
        return self.answer(request, compute, limit=limit)


class RetentionApi(AnalyticsApi):
    csv_name = "retention"

    @analytics_schema("Weekly cohorts of new visitors and their return.")
    def get(self, request):
        return self.answer(request, lambda q: retention_get(query=q))


class GeographyApi(AnalyticsApi):
    csv_name = "geography"

    @analytics_schema("Sessions, conversion and revenue per country.")
    def get(self, request):
        return self.answer(request, lambda q: geography_get(query=q))


class AudienceApi(AnalyticsApi):
    csv_name = "audience"

    @analytics_schema(
        "Sessions, visitors, conversion, orders, revenue and AOV per value of a person trait.",
        OpenApiParameter("breakdown", choice_schema(*AUDIENCE_BREAKDOWNS, default="age_band")),
    )
    def get(self, request):
        names = tuple(AUDIENCE_BREAKDOWNS)
        breakdown = choice_param(request.query_params, "breakdown", names, "age_band")
        compute = lambda q: audience_get(query=q, breakdown=breakdown)  # noqa: E731
        return self.answer(request, compute, breakdown=breakdown)


class LiveApi(AnalyticsApi):
    """Not cached: the live stream polls with `?since_id=` and wants the newest rows."""

    csv_name = "live"

    @analytics_schema(
        "The newest events, after `since_id`.",
        OpenApiParameter("since_id", integer_schema(low=0, high=2**63 - 1, default=0)),
        limit_parameter(default=50, high=500),
        period=False,
    )
    def get(self, request):
        params = request.query_params
        shop = shop_get_for_user(user=request.user, domain=params.get("shop"))
        since_id = int_param(params, "since_id", default=0, low=0, high=2**63 - 1)
        limit = int_param(params, "limit", default=50, low=1, high=500)
        return Response(asdict(live_get(shop=shop, since_id=since_id, limit=limit)))


class ReportListApi(APIView):
    """The shop's stored reports, newest period first (the archive)."""

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReportSummary"

        id = serializers.IntegerField()
        kind = serializers.CharField()
        first_day = serializers.DateField()
        last_day = serializers.DateField()
        created_at = serializers.DateTimeField()
        sent_at = serializers.DateTimeField(allow_null=True)
        recipient_count = serializers.IntegerField()

    @extend_schema(
        operation_id="analytics_reports_list",
        parameters=[
            SHOP,
            OpenApiParameter("kind", choice_schema("", *REPORT_KINDS)),
            PAGE,
            PAGE_SIZE,
        ],
        responses={
            200: paginated("ReportPage", OutputSerializer(many=True)),
            **error_responses(*MEMBER_ERRORS),
        },
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        reports = report_list(shop=shop, kind=request.query_params.get("kind", ""))
        paginator = Pagination()
        page = paginator.paginate_queryset(reports, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class ReportDetailApi(APIView):
    """One stored report: figures, findings, charts (SVG) and text as JSON, or its HTML."""

    renderer_classes = [JSONRenderer, ReportHtmlRenderer]

    @extend_schema(
        parameters=[SHOP, OpenApiParameter("format", choice_schema("json", "html"))],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="See docs/reports.md."),
            **error_responses(*MEMBER_ERRORS),
        },
    )
    def get(self, request, report_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        report = report_get(shop=shop, report_id=report_id)
        if request.accepted_renderer.format == "html":
            return Response(report.html)
        return Response(
            {
                "id": report.id,
                "kind": report.kind,
                "first_day": report.first_day,
                "last_day": report.last_day,
                "created_at": report.created_at,
                "sent_at": report.sent_at,
                "data": report.data,
                "text": report.text,
            }
        )


class ReportPreviewApi(APIView):
    """A report computed now for `day` (not stored): 400 for a day in the future or before
    the shop's first event."""

    @extend_schema(
        parameters=[
            SHOP,
            OpenApiParameter("kind", choice_schema(*REPORT_KINDS, default="daily")),
            OpenApiParameter(
                "day",
                OpenApiTypes.DATE,
                required=True,
                description="A shop-local day from the shop's first event to today.",
            ),
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="See docs/reports.md."),
            **error_responses(*MEMBER_ERRORS),
        },
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        kind, day = report_params_parse(request.query_params)
        today = timezone.now().astimezone(ZoneInfo(shop.timezone)).date()
        period = report_period_get(shop=shop, kind=kind, day=day, today=today)
        data = report_data_compute(shop=shop, kind=kind, period=period)
        return Response({"data": data, "text": report_text_render(data, data["findings"])})


# --- Anomalies and alerts (docs/anomalies.md) -----------------------------------------------------

ANOMALY_PARAMETERS = [
    SHOP,
    FORMAT,
    *[
        OpenApiParameter(name, str, description=f"Comma-separated: any of {', '.join(values)}.")
        for name, values in (
            ("status", AnomalyStatus.values),
            ("severity", Severity.values),
            ("kind", AnomalyKind.values),
            ("metric", METRICS),
        )
    ],
    OpenApiParameter("since", str, description="Windows starting at or after (ISO date/time)."),
    OpenApiParameter("until", str, description="Windows starting before (ISO date/time)."),
    limit_parameter(default=100, high=1000),
    OpenApiParameter("offset", integer_schema(low=0, high=10**6, default=0)),
]
RULE_SCHEMA = OpenApiResponse(OpenApiTypes.OBJECT, description="See docs/anomalies.md.")


class AlertRuleInSerializer(serializers.Serializer):
    """The rule's body, for the schema; `alert_rule_clean` validates it (every error at once)."""

    name = serializers.CharField(max_length=128)
    is_active = serializers.BooleanField(required=False, default=True)
    kinds = serializers.ListField(
        child=serializers.ChoiceField(AnomalyKind.values), required=False, help_text="[]: all"
    )
    metrics = serializers.ListField(
        child=serializers.ChoiceField(METRICS), required=False, help_text="[]: all"
    )
    min_severity = serializers.ChoiceField(Severity.values, required=False, default="warning")
    threshold_metric = serializers.ChoiceField(SERIES_METRICS, required=False)
    threshold_direction = serializers.ChoiceField(["above", "below"], required=False)
    threshold_value = serializers.FloatField(min_value=0, required=False)
    channel = serializers.ChoiceField(AlertChannel.values)
    emails = serializers.ListField(child=serializers.EmailField(), required=False)
    webhook_url = serializers.URLField(
        required=False,
        help_text="Channel webhook only: an http(s) URL at a public address (not localhost, a "
        "private, loopback or link-local address, nor a name resolving to one, unless "
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS; docs/anomalies.md).",
    )
    cooldown_minutes = serializers.IntegerField(min_value=0, required=False, default=60)


class AnomalyListApi(APIView):
    """Not cached: acknowledging must show at once."""

    renderer_classes = [JSONRenderer, CsvRenderer]
    csv_name = "anomalies"

    @extend_schema(
        description="The shop's anomalies, newest window first; CSV with `format=csv`.",
        parameters=ANOMALY_PARAMETERS,
        responses={200: RULE_SCHEMA, **error_responses(*MEMBER_ERRORS, 406)},
    )
    def get(self, request):
        params = request.query_params
        shop = shop_get_for_user(user=request.user, domain=params.get("shop"))
        filters = anomaly_filters_parse(params, tz=ZoneInfo(shop.timezone))
        limit = int_param(params, "limit", default=100, low=1, high=1000)
        offset = int_param(params, "offset", default=0, low=0, high=10**6)
        return Response(anomalies_list(shop=shop, filters=filters, limit=limit, offset=offset))


class AnomalyChartApi(APIView):
    @extend_schema(
        description="The anomaly's series around its window with the detector's band.",
        responses={200: RULE_SCHEMA, **error_responses(*MEMBER_ERRORS)},
    )
    def get(self, request, anomaly_id: int):
        shops = shops_for_user(user=request.user)
        anomaly = anomaly_get_for_shops(anomaly_id=anomaly_id, shops=shops)
        return Response(anomaly_chart(anomaly=anomaly, now=timezone.now()))


class AnomalyTransitionApi(APIView):
    """POST moves the anomaly on (a service); the subclasses name which."""

    transition: Callable[..., Anomaly]

    @extend_schema(
        request=None,
        responses={200: RULE_SCHEMA, **error_responses(*MEMBER_ERRORS, 409)},
    )
    def post(self, request, anomaly_id: int):
        shops = shops_for_user(user=request.user)
        anomaly = anomaly_get_for_shops(anomaly_id=anomaly_id, shops=shops)
        anomaly = type(self).transition(anomaly=anomaly, user=request.user, now=timezone.now())
        return Response(anomaly_row(anomaly))


class AnomalyAcknowledgeApi(AnomalyTransitionApi):
    transition = staticmethod(anomaly_acknowledge)


class AnomalyResolveApi(AnomalyTransitionApi):
    transition = staticmethod(anomaly_resolve)


class AlertRuleListApi(APIView):
    @extend_schema(
        operation_id="analytics_alert_rules_list",
        parameters=[SHOP],
        responses={200: RULE_SCHEMA, **error_responses(*MEMBER_ERRORS)},
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        return Response(alert_rules_list(shop=shop))

    @extend_schema(
        parameters=[SHOP],
        request=AlertRuleInSerializer,
        responses={201: RULE_SCHEMA, **error_responses(*MEMBER_ERRORS)},
        description="Create a rule; an unknown kind, metric or channel, a bad address or URL, "
        "or a negative threshold or cooldown answers 400 and saves nothing.",
    )
    def post(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        rule = alert_rule_create(shop=shop, data=request.data)
        return Response(rule_row(rule), status=201)


class AlertRuleDetailApi(APIView):
    @extend_schema(responses={200: RULE_SCHEMA, **error_responses(*MEMBER_ERRORS)})
    def get(self, request, rule_id: int):
        rule = alert_rule_get_for_shops(rule_id=rule_id, shops=shops_for_user(user=request.user))
        return Response(rule_row(rule))

    @extend_schema(
        request=AlertRuleInSerializer(partial=True),
        responses={200: RULE_SCHEMA, **error_responses(*MEMBER_ERRORS)},
    )
    def patch(self, request, rule_id: int):
        rule = alert_rule_get_for_shops(rule_id=rule_id, shops=shops_for_user(user=request.user))
        return Response(rule_row(alert_rule_update(rule=rule, data=request.data)))

    @extend_schema(responses={204: None, **error_responses(*MEMBER_ERRORS)})
    def delete(self, request, rule_id: int):
        rule = alert_rule_get_for_shops(rule_id=rule_id, shops=shops_for_user(user=request.user))
        alert_rule_delete(rule=rule)
        return Response(status=204)


DETECTION_SETTINGS_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **{
            name: {"type": "number", "minimum": 1, "maximum": 100, "description": "Robust z."}
            for name in ("hourly_threshold", "daily_threshold", "order_threshold")
        },
        "min_history": {"type": "integer", "minimum": 1, "maximum": 52},
        "high_value_order": {
            "type": "number",
            "minimum": 0,
            "maximum": 999999999999,
            "nullable": True,
            "description": "In the shop currency; null turns the high-value alert off.",
        },
        "holidays": {
            "type": "array",
            "items": {"type": "string", "format": "date"},
            "maxItems": 366,
            "description": "Shop-local days on which nothing is flagged.",
        },
        "exclude_bots": {
            "type": "boolean",
            "description": "Leave tagged bots out of the analytics (their days are recomputed).",
        },
        "exclude_shared_networks": {
            "type": "boolean",
            "description": "Leave the people seen on a shared network (many sessions from one "
            "anonymised IP) out of the analytics too; off by default (an office or a mobile "
            "carrier is often people).",
        },
    },
}


class DetectionSettingsApi(APIView):
    @extend_schema(
        parameters=[SHOP], responses={200: RULE_SCHEMA, **error_responses(*MEMBER_ERRORS)}
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        return Response(detection_settings_row(shop=shop))

    @extend_schema(
        parameters=[SHOP],
        request={"application/json": DETECTION_SETTINGS_BODY},
        responses={200: RULE_SCHEMA, **error_responses(*MEMBER_ERRORS)},
        description="Change some settings; an unknown field, a wrong type or a value out of "
        "range (a negative threshold) answers 400 naming each field and saves nothing.",
    )
    def patch(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        detection_settings_update(shop=shop, data=request.data)
        return Response(detection_settings_row(shop=shop))


class AlertDeliveryListApi(APIView):
    renderer_classes = [JSONRenderer, CsvRenderer]
    csv_name = "alert_deliveries"

    @extend_schema(
        description="The delivery log, newest first.",
        parameters=[SHOP, FORMAT, limit_parameter(default=100, high=1000)],
        responses={200: RULE_SCHEMA, **error_responses(*MEMBER_ERRORS, 406)},
    )
    def get(self, request):
        params = request.query_params
        shop = shop_get_for_user(user=request.user, domain=params.get("shop"))
        limit = int_param(params, "limit", default=100, low=1, high=1000)
        return Response(alert_deliveries_list(shop=shop, limit=limit))
