"""Segment endpoints: parse the query, call one service or selector, render JSON or CSV."""

from collections.abc import Callable
from dataclasses import asdict, fields
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from clickserver.api import Pagination
from clickserver.params import invalid, local_midnight, period_days_parse
from clickserver.renderers import CsvRenderer
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
from events.selectors import shop_get_for_user
from segments import builtin
from segments.rules import RULES_SCHEMA
from segments.selectors import customers
from segments.selectors import segments as selectors
from segments.services import segments as services

# A CSV export is the whole table, not a page, up to this many rows.
CSV_MAX_ROWS = 100_000


def csv_paging_check(request, paginator: Pagination) -> None:
    """Reject the `page`/`page_size` that the JSON table would reject, with the same answers.

    A CSV export is the whole table, so neither selects anything there; but the schema gives
    every format the same parameters, and a value that is wrong for one is wrong for all.
    """
    paginator.get_page_size(request)
    raw = request.query_params.get(paginator.page_query_param)
    # Blank is page 1 for the JSON table too (DRF reads `page or 1`).
    if not raw or raw in paginator.last_page_strings:
        return
    # As Django's Paginator.validate_number reads it (which the JSON path calls).
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if number < 1:
        raise NotFound(paginator.invalid_page_message.format(page_number=raw, message=""))


def row_dict(row: Any) -> dict[str, Any]:
    """A flat row dataclass as a dict: `asdict` deep-copies every value (each datetime), which
    took half of a 100-row page's time."""
    return {f.name: getattr(row, f.name) for f in fields(row)}


class TableApi(APIView):
    renderer_classes = [JSONRenderer, CsvRenderer]
    pagination_class = Pagination
    csv_name = "segments"

    def table(
        self,
        request,
        queryset: QuerySet | customers.CustomerList,
        to_rows: Callable[..., list[Any]],
    ) -> Response:
        paginator = self.pagination_class()
        if request.accepted_renderer.format == "csv":
            csv_paging_check(request, paginator)
            return Response([row_dict(row) for row in to_rows(page=list(queryset[:CSV_MAX_ROWS]))])
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response([row_dict(row) for row in to_rows(page=page)])


def date_range_parse(params: Any, *, tz: str) -> tuple[datetime, datetime]:
    """`start`/`end` ISO dates in the shop's timezone, both inclusive, as a half-open UTC range."""
    zone = ZoneInfo(tz)
    start, end = period_days_parse(params, today=timezone.now().astimezone(zone).date())
    return local_midnight(start, zone), local_midnight(end + timedelta(days=1), zone)


def table_schema(name: str, description: str, *extra: OpenApiParameter):
    """A paginated table (or the whole of it as CSV) with every error it answers."""
    rows = paginated(name, serializers.ListField(child=serializers.DictField()))
    return extend_schema(
        description=description,
        parameters=[SHOP, *extra, PAGE, PAGE_SIZE, FORMAT],
        responses={200: rows, **error_responses(*MEMBER_ERRORS, 406)},
    )


@extend_schema_field(RULES_SCHEMA)
class RulesField(serializers.JSONField):
    """Any JSON here; `services.segment_create` checks the grammar the schema states."""


@extend_schema_field(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        # Built-in segments' names are taken in every shop (`services.segment_create`).
        "not": {"enum": sorted(builtin.NAMES.values())},
        "description": "Unique among the shop's segments (else a 400).",
    }
)
class SegmentNameField(serializers.CharField):
    pass


class SegmentInSerializer(serializers.Serializer):
    name = SegmentNameField(min_length=1, max_length=255)
    rules = RulesField(help_text="A rule group; see docs/segments.md.")


class SegmentOutSerializer(serializers.Serializer):
    """The schema of `selectors.SegmentOut` as rendered (the view renders the dataclass)."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    key = serializers.CharField()
    rules = serializers.JSONField()
    member_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    refreshed_at = serializers.DateTimeField(allow_null=True)


class SegmentListApi(APIView):
    @extend_schema(
        parameters=[SHOP],
        responses={200: SegmentOutSerializer(many=True), **error_responses(*MEMBER_ERRORS)},
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        return Response([asdict(s) for s in selectors.segment_list(shop=shop)])

    @extend_schema(
        parameters=[SHOP],
        request=SegmentInSerializer,
        responses={201: SegmentOutSerializer, **error_responses(*MEMBER_ERRORS)},
    )
    def post(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        data = SegmentInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        segment = services.segment_create(shop=shop, now=timezone.now(), **data.validated_data)
        return Response(asdict(selectors.segment_out(segment=segment)), status=201)


class SegmentMembersApi(TableApi):
    csv_name = "segment_members"

    @table_schema("SegmentMemberPage", "The segment's members.")
    def get(self, request, segment_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        segment = selectors.segment_get(shop=shop, segment_id=segment_id)
        query = selectors.segment_members_query(segment=segment)
        return self.table(request, query, selectors.member_rows)


class IdentifiedUserListApi(TableApi):
    csv_name = "identified_users"

    @table_schema("IdentifiedUserPage", "Identified persons with sessions, orders and revenue.")
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        query = selectors.identified_users_query(shop=shop)
        return self.table(request, query, selectors.identified_user_rows)


class IdentifiedUserSessionsApi(TableApi):
    csv_name = "identified_users_sessions"

    @table_schema("IdentifiedSessionPage", "Sessions of identified persons.", START, END)
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        start, end = date_range_parse(request.query_params, tz=shop.timezone)
        query = selectors.identified_sessions_query(shop=shop, start=start, end=end)
        return self.table(request, query, selectors.identified_session_rows)


SEARCH = OpenApiParameter(
    "q",
    {"type": "string", "maxLength": customers.SEARCH_MAX_LENGTH},
    description="Exact user id, anonymous id, Shopify customer id, email (matched by its "
    "SHA-256, as stored) or email hash; at most 255 characters, empty lists everyone.",
)
SORT = OpenApiParameter(
    "sort",
    choice_schema(*[f"{p}{name}" for name in customers.SORTS for p in ("", "-")]),
    description="Order of the list; a leading '-' is descending (default -revenue). The "
    "person id breaks ties in the same direction.",
)
AGE_BAND = OpenApiParameter(
    "age_band",
    choice_schema(*customers.AGE_BANDS, "none"),
    description="Only customers in this age band (from the `age` or `birth_date` / `birthday` "
    "trait as of the last refresh); `none`: customers without one.",
)
SESSIONS = OpenApiParameter(
    "sessions",
    integer_schema(low=0, high=customers.SESSIONS_MAX, default=customers.SESSIONS_DEFAULT),
    description="How many of the most recent sessions to include.",
)


def sessions_limit_parse(raw: str | None) -> int:
    if raw is None:
        return customers.SESSIONS_DEFAULT
    if not raw.isdigit() or int(raw) > customers.SESSIONS_MAX:
        raise invalid("sessions", f"an integer from 0 to {customers.SESSIONS_MAX}")
    return int(raw)


class CustomerProfileSerializer(serializers.Serializer):
    """The schema of `selectors.customers.customer_profile` (the view renders the dict)."""

    person_id = serializers.IntegerField()
    identities = serializers.DictField(help_text="user_id, anonymous_ids, email_hashes, …")
    traits = serializers.DictField(help_text="From identify calls and Shopify customers.")
    first_seen_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    session_count = serializers.IntegerField()
    sessions = serializers.ListField(child=serializers.DictField())
    order_count = serializers.IntegerField(help_text="Orders not cancelled.")
    revenue = serializers.CharField(help_text="Net of refunds, cancelled orders excluded.")
    orders = serializers.ListField(child=serializers.DictField(), help_text="With refunds.")
    segments = serializers.ListField(child=serializers.DictField(), help_text="With `since`.")
    prediction = serializers.DictField(allow_null=True, help_text="As of the nightly refresh.")
    model = serializers.DictField(help_text="The shop's customer model, or why it has none.")
    conversion_score = serializers.DictField(allow_null=True)
    experiments = serializers.ListField(child=serializers.DictField())


class ForecastSerializer(serializers.Serializer):
    origin = serializers.DateField(help_text="The first forecast day (today, shop-local).")
    window_days = serializers.IntegerField()
    levels = serializers.ListField(child=serializers.FloatField())
    days = serializers.ListField(
        child=serializers.DictField(),
        help_text="Per day: revenue and orders, each {point, lower_80, upper_80, lower_95, "
        "upper_95}.",
    )
    reason = serializers.CharField(help_text="Why `days` is empty, else blank.")


class SessionEventSerializer(serializers.Serializer):
    type = serializers.CharField()
    occurred_at = serializers.DateTimeField()
    url = serializers.CharField()
    title = serializers.CharField()
    product_id = serializers.CharField()
    product_name = serializers.CharField()
    order_id = serializers.CharField()
    revenue = serializers.CharField(allow_null=True)


class CustomerListApi(TableApi):
    csv_name = "customers"

    @table_schema(
        "CustomerPage",
        "The shop's customers (persons with an order) with their stored predictions.",
        SEARCH,
        SORT,
        AGE_BAND,
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        query = customers.customers_query(
            shop=shop,
            search=request.query_params.get("q"),
            sort=request.query_params.get("sort"),
            band=customers.age_band_parse(request.query_params.get("age_band")),
        )
        return self.table(request, query, customers.customer_rows)


class CustomerDetailApi(APIView):
    @extend_schema(
        operation_id="segments_customer_retrieve",
        parameters=[SHOP, SESSIONS],
        responses={200: CustomerProfileSerializer, **error_responses(*MEMBER_ERRORS)},
    )
    def get(self, request, person_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        limit = sessions_limit_parse(request.query_params.get("sessions"))
        profile = customers.customer_profile(shop=shop, person_id=person_id, session_limit=limit)
        return Response(profile)


class CustomerModelSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["bgnbd_gg", "rfm_gbm", "none"])
    reason = serializers.CharField(help_text="Why there are no predictions; blank otherwise.")
    customer_count = serializers.IntegerField()
    repeat_customer_count = serializers.IntegerField()
    history_days = serializers.IntegerField()
    parameters = serializers.DictField()
    fitted_at = serializers.DateTimeField(allow_null=True)
    minimums = serializers.DictField(child=serializers.IntegerField())
    backtest = serializers.DictField(
        help_text="The per-shop backtest: cutoff, holdout_end, customers, holdout_buyers, "
        "figures per model (revenue_mae, revenue_spearman, revenue_gini, orders_mae, "
        "purchase_auc_30), wins, winner; or ran = false and the reason."
    )
    choice_rule = serializers.CharField()


class AgeBandSerializer(serializers.Serializer):
    age_band = serializers.CharField(help_text="18-25, 26-35, 36-45, 46-55, 56-65, 66+ or none.")
    customers = serializers.IntegerField()
    revenue = serializers.CharField(help_text="Net revenue of the band's customers.")
    predicted_clv = serializers.CharField(allow_null=True)


class CustomerAgeBandsApi(APIView):
    @extend_schema(
        parameters=[SHOP],
        responses={200: AgeBandSerializer(many=True), **error_responses(*MEMBER_ERRORS)},
        description="Customers, net revenue and predicted CLV per age band (from the `age` or "
        "`birth_date` / `birthday` trait) as of the last nightly refresh.",
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        return Response([asdict(row) for row in customers.customer_age_bands(shop=shop)])


class CustomerModelApi(APIView):
    @extend_schema(
        parameters=[SHOP],
        responses={200: CustomerModelSerializer, **error_responses(*MEMBER_ERRORS)},
        description="The shop's customer model as of the last nightly refresh, or why it has "
        "none (the minimums it needs).",
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        return Response(asdict(customers.customer_model_get(shop=shop)))


class CustomerSessionEventsApi(APIView):
    @extend_schema(
        parameters=[SHOP],
        responses={
            200: SessionEventSerializer(many=True),
            **error_responses(*MEMBER_ERRORS),
        },
        description="The events of one of the customer's sessions, in order (at most 1000).",
    )
    def get(self, request, person_id: int, session_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        events = customers.session_events(shop=shop, person_id=person_id, session_id=session_id)
        return Response(events)


class RevenueForecastApi(APIView):
    @extend_schema(
        parameters=[SHOP],
        responses={200: ForecastSerializer, **error_responses(*MEMBER_ERRORS)},
        description="Daily net revenue and orders for the next 28 days with 80 % and 95 % "
        "intervals (docs/customers.md).",
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        return Response(customers.revenue_forecast(shop=shop, now=timezone.now()))
