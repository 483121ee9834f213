"""The headline figures of a period: revenue, orders, conversion, abandonment, CLV, visitors."""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db.models import Count, Q, Sum

from analytics.bitmaps import ids_union
from analytics.models import DailyVisitors, HourlyRevenue
from analytics.selectors.query import Query, ratio
from analytics.selectors.rollups import daily_visitor_sets, rollup_totals
from clickserver.db_routers import analytics_db
from clickserver.money import money_format
from events.models import Order


@dataclass(frozen=True, slots=True)
class Kpis:
    revenue: str
    orders: int
    aov: str
    refunds: str
    sessions: int
    visit_conversion: float
    cart_abandonment: float
    clv: str
    customers: int
    visitors: int
    new_visitors: int
    returning_visitors: int
    start: date
    end: date


def kpis_get(*, query: Query) -> Kpis:
    shop, period = query.shop, query.period
    # The period's money and the revenue to date (for CLV) in one pass over the hourly rows.
    in_period = Q(hour__gte=period.start)
    sums = (
        HourlyRevenue.objects.using(analytics_db())
        .filter(shop_id=shop.pk, hour__lt=period.end)
        .aggregate(
            orders=Sum("order_count", filter=in_period),
            gross=Sum("order_total", filter=in_period),
            refunds=Sum("refund_total", filter=in_period),
            gross_to_date=Sum("order_total"),
            refunds_to_date=Sum("refund_total"),
        )
    )
    sums = {name: value or 0 for name, value in sums.items()}
    money = {
        "orders": sums["orders"],
        "revenue": Decimal(sums["gross"]) - Decimal(sums["refunds"]),
        "refunds": Decimal(sums["refunds"]),
    }
    to_date = Decimal(sums["gross_to_date"]) - Decimal(sums["refunds_to_date"])
    totals = rollup_totals(query)
    daily, daily_new = daily_visitor_sets(query)
    visitors = len(ids_union(daily.values()))
    new_visitors = len(ids_union(daily_new.values()))
    # Distinct buyers need the orders themselves; bounded by the period on (shop, placed_at).
    customers = (
        Order.objects.using(analytics_db())
        .filter(shop_id=shop.pk, placed_at__gte=period.start, placed_at__lt=period.end)
        .exclude(user_id="")
        .filter(is_cancelled=False)
        .aggregate(n=Count("user_id", distinct=True))["n"]
    )
    # People to date: everyone first seen by the period's end, summed from the visitor rollup's
    # daily new visitors (a day's count, not a scan of the person table).
    people = (
        DailyVisitors.objects.using(analytics_db())
        .filter(shop_id=shop.pk, day__lte=period.last)
        .aggregate(n=Sum("new_count"))["n"]
        or 0
    )
    return Kpis(
        revenue=money_format(money["revenue"]),
        orders=money["orders"],
        aov=money_format(money["revenue"] / money["orders"] if money["orders"] else Decimal(0)),
        refunds=money_format(money["refunds"]),
        sessions=totals["session_count"],
        visit_conversion=ratio(totals["converted_session_count"], totals["session_count"]),
        cart_abandonment=ratio(totals["abandoned_session_count"], totals["cart_session_count"]),
        clv=money_format(to_date / people if people else Decimal(0)),
        customers=customers,
        visitors=visitors,
        new_visitors=new_visitors,
        returning_visitors=visitors - new_visitors,
        start=period.first,
        end=period.last,
    )
