"""Hourly orders and refunds (`HourlyRevenue`)."""

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import Count, Sum
from django.db.models.functions import TruncHour

from analytics.models import HourlyRevenue
from analytics.sql import rows_insert
from events.models import Order, Refund


def revenue_recompute(*, shop_id: int, start: datetime, end: datetime) -> None:
    buckets: dict[datetime, dict[str, int | Decimal]] = defaultdict(lambda: defaultdict(int))
    orders = (
        Order.objects.filter(
            shop_id=shop_id, placed_at__gte=start, placed_at__lt=end, is_cancelled=False
        )
        .annotate(hour=TruncHour("placed_at", tzinfo=UTC))
        .values("hour")
        .annotate(n=Count("id"), total=Sum("total"))
    )
    for row in orders:
        bucket = buckets[row["hour"].astimezone(UTC)]
        bucket["order_count"] += row["n"]
        bucket["order_total"] += row["total"] or Decimal(0)
    refunds = (
        Refund.objects.filter(shop_id=shop_id, refunded_at__gte=start, refunded_at__lt=end)
        .annotate(hour=TruncHour("refunded_at", tzinfo=UTC))
        .values("hour")
        .annotate(n=Count("id"), total=Sum("amount"))
    )
    for row in refunds:
        bucket = buckets[row["hour"].astimezone(UTC)]
        bucket["refund_count"] += row["n"]
        bucket["refund_total"] += row["total"] or Decimal(0)
    HourlyRevenue.objects.filter(shop_id=shop_id, hour__gte=start, hour__lt=end).delete()
    rows_insert(
        HourlyRevenue,
        ({"shop_id": shop_id, "hour": hour, **values} for hour, values in buckets.items()),
    )
