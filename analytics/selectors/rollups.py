"""Shared reads of the rollup tables: the period's daily, hourly, revenue and visitor rows."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from analytics.bitmaps import ids_unpack
from analytics.models import ROLLUP_COUNTS, DailyRollup, DailyVisitors, HourlyRevenue, HourlyRollup
from analytics.selectors.query import Query
from clickserver.db_routers import analytics_db
from events.models import Shop


def _filtered(query: Query, *, by_dimension: bool) -> dict[str, Any]:
    """The totals rows unless filtering or grouping by dimension, plus the filters."""
    is_total = not (by_dimension or not query.filters.is_empty)
    return {"shop_id": query.shop.pk, "is_total": is_total, **query.filters.as_lookup()}


def daily_rollups(query: Query, *, by_dimension: bool = False):
    """Daily rows of the period (periods are whole shop-local days)."""
    return DailyRollup.objects.using(analytics_db()).filter(
        day__gte=query.period.first,
        day__lte=query.period.last,
        **_filtered(query, by_dimension=by_dimension),
    )


def hourly_rollups(query: Query):
    """Hourly rows of the period, for hour-level trends and the heat map."""
    return HourlyRollup.objects.using(analytics_db()).filter(
        hour__gte=query.period.start,
        hour__lt=query.period.end,
        **_filtered(query, by_dimension=False),
    )


def rollup_totals(query: Query) -> dict[str, Any]:
    totals = daily_rollups(query).aggregate(**{name: Sum(name) for name in ROLLUP_COUNTS})
    return {name: value or 0 for name, value in totals.items()}


def revenue_totals(*, shop: Shop, start: datetime | None, end: datetime) -> dict[str, Any]:
    rows = HourlyRevenue.objects.using(analytics_db()).filter(shop_id=shop.pk, hour__lt=end)
    if start is not None:
        rows = rows.filter(hour__gte=start)
    totals = rows.aggregate(
        orders=Sum("order_count"), gross=Sum("order_total"), refunds=Sum("refund_total")
    )
    gross, refunds = totals["gross"] or Decimal(0), totals["refunds"] or Decimal(0)
    return {"orders": totals["orders"] or 0, "revenue": gross - refunds, "refunds": refunds}


def daily_visitors(query: Query) -> dict[date, Any]:
    """The period's per-day visitor bitmaps, by local day."""
    return daily_visitor_sets(query, with_new=False)[0]


def daily_visitor_sets(query: Query, *, with_new: bool = True) -> tuple[dict, dict]:
    """The period's per-day bitmaps of visitors and (with_new) of those first seen that day,
    from one read of the visitor rollup."""
    rows = DailyVisitors.objects.using(analytics_db()).filter(
        shop_id=query.shop.pk, day__gte=query.period.first, day__lte=query.period.last
    )
    visitors: dict[date, Any] = {}
    new: dict[date, Any] = {}
    for day, *blobs in rows.values_list("day", "visitors", *(["new"] if with_new else [])):
        visitors[day] = ids_unpack(blobs[0])
        if with_new:
            new[day] = ids_unpack(blobs[1])
    return visitors, new
