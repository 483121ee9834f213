"""Per-product daily and monthly counts and sales (`ProductDailyRollup`, `ProductMonthlyRollup`)."""

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Max, QuerySet, Sum
from django.db.models.functions import TruncHour

from analytics.models import PRODUCT_SUMS, ProductDailyRollup, ProductMonthlyRollup
from analytics.periods import SESSION_SPAN, Period, day_of
from analytics.sql import rows_insert
from events.models import Event, OrderLine, RefundLine

PRODUCT_TYPES = ("product_view", "add_to_cart", "purchase")


def _product_sums(row: Mapping[str, Any]) -> dict[str, Any]:
    """The summed counts of one aggregated row, by ProductCounts field name."""
    return {name: row[f"sum_{name}"] for name in PRODUCT_SUMS}


# (local day, product id) → ProductCounts column → count or amount, plus "product_name".
ProductBuckets = dict[tuple[date, str], dict[str, Any]]


def products_recompute(
    *, shop_id: int, period: Period, excluded: frozenset[int] = frozenset()
) -> None:
    """Replace the product rows of the period's days: event counts, abandoned carts and sales;
    the events of the `excluded` people (tagged bots) are left out, the orders are not."""
    rows: ProductBuckets = defaultdict(lambda: defaultdict(int))
    in_period = Event.objects.filter(
        shop_id=shop_id,
        occurred_at__gte=period.start,
        occurred_at__lt=period.end,
        type__in=PRODUCT_TYPES,
    ).exclude(product_id="")
    if excluded:
        in_period = in_period.exclude(person_id__in=sorted(excluded))
    _product_event_counts(rows, in_period=in_period, period=period)
    _abandoned_carts(rows, in_period=in_period, shop_id=shop_id, period=period)
    _product_sales(rows, shop_id=shop_id, period=period)
    ProductDailyRollup.objects.filter(
        shop_id=shop_id, day__gte=period.first, day__lte=period.last
    ).delete()
    rows_insert(
        ProductDailyRollup,
        (
            {"shop_id": shop_id, "day": day, "product_id": product_id, **values}
            for (day, product_id), values in rows.items()
        ),
    )


def _product_event_counts(
    rows: ProductBuckets, *, in_period: QuerySet[Event], period: Period
) -> None:
    """Views, carts and purchases per (day, product), plus the product's name."""
    field = {
        "product_view": "view_count",
        "add_to_cart": "cart_count",
        "purchase": "purchase_count",
    }
    # Grouping by UTC hour in SQL keeps the row count small and the query timezone-free.
    for row in (
        in_period.annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
        .values("hour", "type", "product_id")
        .annotate(n=Count("id"), name=Max("product_name"))
    ):
        bucket = rows[(day_of(row["hour"], period), row["product_id"])]
        bucket[field[row["type"]]] += row["n"]
        if row["name"]:
            bucket["product_name"] = row["name"]


def _abandoned_carts(
    rows: ProductBuckets, *, in_period: QuerySet[Event], shop_id: int, period: Period
) -> None:
    """Carts of sessions that never purchased, per (day, product).

    A session's events lie within SESSION_SPAN of its start, so its purchase, if any, lies
    within SESSION_SPAN of each of its carts.
    """
    purchased = set(
        Event.objects.filter(
            shop_id=shop_id,
            type="purchase",
            occurred_at__gte=period.start - SESSION_SPAN,
            occurred_at__lt=period.end + SESSION_SPAN,
        )
        .exclude(session=None)
        .values_list("session_id", flat=True)
    )
    for hour, product_id, session_id, n in (
        in_period.filter(type="add_to_cart")
        .exclude(session=None)
        .annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
        .values_list("hour", "product_id", "session_id")
        .annotate(n=Count("id"))
    ):
        if session_id not in purchased:
            rows[(day_of(hour, period), product_id)]["abandoned_cart_count"] += n


def _product_sales(rows: ProductBuckets, *, shop_id: int, period: Period) -> None:
    """Orders, units and revenue per (day, product): the order lines of the day's orders less
    the refund lines of the day's refunds; the line's name where the events gave none."""
    for line in (
        OrderLine.objects.filter(
            order__shop_id=shop_id,
            order__placed_at__gte=period.start,
            order__placed_at__lt=period.end,
            order__is_cancelled=False,
        )
        .annotate(hour=TruncHour("order__placed_at", tzinfo=UTC))
        .values("hour", "product_id")
        .annotate(
            orders=Count("order_id", distinct=True),
            units=Sum("quantity"),
            revenue=Sum(F("quantity") * F("unit_price")),
            name=Max("name"),
        )
    ):
        bucket = rows[(day_of(line["hour"], period), line["product_id"])]
        bucket["order_count"] += line["orders"]
        bucket["units"] += line["units"] or 0
        bucket["revenue"] += line["revenue"] or Decimal(0)
        if line["name"] and not bucket.get("product_name"):
            bucket["product_name"] = line["name"][:255]
    # Refund lines net the units and revenue on the refund's own day, as revenue is netted
    # (docs/analytics.md); the order still counts among the product's orders.
    for refunded in (
        RefundLine.objects.filter(
            refund__shop_id=shop_id,
            refund__refunded_at__gte=period.start,
            refund__refunded_at__lt=period.end,
        )
        .annotate(hour=TruncHour("refund__refunded_at", tzinfo=UTC))
        .values("hour", "product_id")
        .annotate(units=Sum("quantity"), amount=Sum("amount"), name=Max("name"))
    ):
        bucket = rows[(day_of(refunded["hour"], period), refunded["product_id"])]
        bucket["units"] -= refunded["units"] or 0
        bucket["revenue"] -= refunded["amount"] or Decimal(0)
        if refunded["name"] and not bucket.get("product_name"):
            bucket["product_name"] = refunded["name"][:255]


def _month_starts(period: Period) -> list[date]:
    months, month = [], period.first.replace(day=1)
    while month <= period.last:
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return months


def product_months_recompute(*, shop_id: int, period: Period) -> None:
    """Re-sum the calendar months that the recomputed days belong to."""
    months = _month_starts(period)
    rows: list[dict[str, Any]] = []
    for month in months:
        following = (month + timedelta(days=32)).replace(day=1)
        rows += [
            {
                "shop_id": shop_id,
                "month": month,
                "product_id": row["product_id"],
                "product_name": row["name"] or "",
                **_product_sums(row),
            }
            for row in ProductDailyRollup.objects.filter(
                shop_id=shop_id, day__gte=month, day__lt=following
            )
            .values("product_id")
            .annotate(name=Max("product_name"), **{f"sum_{f}": Sum(f) for f in PRODUCT_SUMS})
            .order_by()
        ]
    ProductMonthlyRollup.objects.filter(shop_id=shop_id, month__in=months).delete()
    rows_insert(ProductMonthlyRollup, rows)
