"""Segment endpoints: parse the query, call one service or selector, render JSON or CSV."""

from collections.abc import Callable
from dataclasses import asdict
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
from clickserver.params import local_midnight, period_days_parse
from clickserver.renderers import CsvRenderer
from clickserver.schema import (
    END,
    FORMAT,
    MEMBER_ERRORS,
    PAGE,
    PAGE_SIZE,
    SHOP,
    START,
    error_responses,
    paginated,
)
from events.selectors import shop_get_for_user
from segments import builtin
from segments.rules import RULES_SCHEMA
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


class TableApi(APIView):
    renderer_classes = [JSONRenderer, CsvRenderer]
    pagination_class = Pagination
    csv_name = "segments"

    def table(self, request, queryset: QuerySet, to_rows: Callable[..., list[Any]]) -> Response:
        paginator = self.pagination_class()
        if request.accepted_renderer.format == "csv":
            csv_paging_check(request, paginator)
            return Response([asdict(row) for row in to_rows(page=list(queryset[:CSV_MAX_ROWS]))])
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response([asdict(row) for row in to_rows(page=page)])


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
