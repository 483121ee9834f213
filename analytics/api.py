"""Analytics endpoints: parse the query, call one selector (through the cache), render."""

from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics import selectors
from analytics.params import funnel_params_parse, int_param, interval_parse, query_parse
from analytics.renderers import CsvRenderer
from analytics.selectors import Query
from events.selectors import shop_get_for_user

PRODUCT_ORDERS = ("views", "carts", "purchases", "revenue", "abandoned_carts", "units")


class AnalyticsApi(APIView):
    """Shared rendering: JSON or CSV, and `compare=previous` for the period before."""

    renderer_classes = [JSONRenderer, CsvRenderer]
    csv_name = "analytics"

    def answer(self, request, compute: Callable[[Query], Any], **params: Any) -> Response:
        query, compare = query_parse(request)
        name = type(self).__name__
        # The cache holds the answer as plain data: `asdict` deep-copies every nested row and
        # was most of a warm request's time. Cached values are shared, hence the shallow copy.
        data = {**selectors.cached(name, query, params, lambda: asdict(compute(query)))}
        if compare:
            before = replace(query, period=query.period.previous())
            data["previous"] = selectors.cached(
                name, before, params, lambda: asdict(compute(before))
            )
        return Response(data)


class SessionCountApi(AnalyticsApi):
    csv_name = "session_count"

    def get(self, request):
        return self.answer(request, lambda q: selectors.session_count_get(query=q))


class UserCountApi(AnalyticsApi):
    csv_name = "user_count"

    def get(self, request):
        return self.answer(request, lambda q: selectors.user_count_get(query=q))


class VisitConversionApi(AnalyticsApi):
    csv_name = "visit_conversion"

    def get(self, request):
        return self.answer(request, lambda q: selectors.visit_conversion_get(query=q))


class ProductVisitsApi(AnalyticsApi):
    csv_name = "product_visits"

    def get(self, request):
        limit = int_param(request.query_params, "limit", default=50, low=1, high=1000)
        compute = lambda q: selectors.product_visits_get(query=q, limit=limit)  # noqa: E731
        return self.answer(request, compute, limit=limit)


class FunnelApi(AnalyticsApi):
    csv_name = "funnel"

    def get(self, request):
        params = funnel_params_parse(request.query_params)
        compute = lambda q: selectors.funnel_compute(query=q, params=params)  # noqa: E731
        return self.answer(request, compute, funnel=params)


class KpisApi(AnalyticsApi):
    csv_name = "kpis"

    def get(self, request):
        return self.answer(request, lambda q: selectors.kpis_get(query=q))


class TrendsApi(AnalyticsApi):
    csv_name = "trends"

    def get(self, request):
        interval = interval_parse(request.query_params)
        compute = lambda q: selectors.trends_get(query=q, interval=interval)  # noqa: E731
        return self.answer(request, compute, interval=interval)


class InsightsApi(AnalyticsApi):
    csv_name = "insights"

    def get(self, request):
        return self.answer(request, lambda q: selectors.insights_get(query=q))


class ProductsApi(AnalyticsApi):
    csv_name = "products"

    def get(self, request):
        limit = int_param(request.query_params, "limit", default=50, low=1, high=1000)
        order = request.query_params.get("order_by") or "views"
        order = order if order in PRODUCT_ORDERS else "views"
        compute = lambda q: selectors.products_get(query=q, order_by=order, limit=limit)  # noqa: E731
        return self.answer(request, compute, limit=limit, order_by=order)


class AbandonedCartsApi(AnalyticsApi):
    csv_name = "abandoned_carts"

    def get(self, request):
        limit = int_param(request.query_params, "limit", default=100, low=1, high=1000)
        compute = lambda q: selectors.abandoned_carts_get(query=q, limit=limit)  # noqa: E731
        return self.answer(request, compute, limit=limit)


class RetentionApi(AnalyticsApi):
    csv_name = "retention"

    def get(self, request):
        return self.answer(request, lambda q: selectors.retention_get(query=q))


class GeographyApi(AnalyticsApi):
    csv_name = "geography"

    def get(self, request):
        return self.answer(request, lambda q: selectors.geography_get(query=q))


class LiveApi(AnalyticsApi):
    """Not cached: the live stream polls with `?since_id=` and wants the newest rows."""

    csv_name = "live"

    def get(self, request):
        params = request.query_params
        shop = shop_get_for_user(user=request.user, domain=params.get("shop"))
        since_id = int_param(params, "since_id", default=0, low=0, high=2**63 - 1)
        limit = int_param(params, "limit", default=50, low=1, high=500)
        return Response(asdict(selectors.live_get(shop=shop, since_id=since_id, limit=limit)))
