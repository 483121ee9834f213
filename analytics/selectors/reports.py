"""A shop's daily and weekly report: its figures by SPEC.md's definitions, its period, the archive.

Money follows the KPIs: revenue is the orders placed in the period net of the refunds and
cancellations booked in it, orders count orders (never lines), AOV = revenue / orders. Product
and category units and revenue are the order lines of the period's orders less the refund lines
of the refunds booked in it (the product rollups, as the money headline nets refunds by their
own date). Country, customer and segment figures split the orders of the period; a refund counts
against its order's country (or as unattributed when the source did not link it to an order).
"""

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.utils.module_loading import import_string

from analytics.models import PRODUCT_SUMS, Anomaly, HourlyRevenue, Report, ReportRecipient
from analytics.periods import Period, local_date
from analytics.report_render import findings_compose, report_charts_render
from analytics.selectors.kpis import Kpis, kpis_get
from analytics.selectors.products import product_totals, top_products_by
from analytics.selectors.query import Query
from analytics.selectors.rollups import daily_rollups, hourly_rollups
from clickserver.db_routers import analytics_db
from clickserver.errors import ApplicationError
from clickserver.money import money_format
from clickserver.params import invalid
from events.models import Event, Order, Product, Refund, Shop

KINDS = tuple(Report.Kind.values)
TOP = 5
SEGMENTS = (
    ("value_vip", "VIP"),
    ("value_high", "High"),
    ("value_medium", "Medium"),
    ("value_low", "Low"),
)
UNCATEGORISED = "Uncategorised"
# A report lists at most this many of the period's anomalies (the most severe first); the count
# beside them is of all of them.
ANOMALIES = 20
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
# A day's report waits this long after the shop's midnight, so late events and the pipeline's
# rollups have landed before it is built.
SETTLE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Headline:
    first: date
    last: date
    revenue: str
    gross: str
    refunds: str
    orders: int
    customers: int
    aov: str
    sessions: int
    visitors: int


@dataclass(frozen=True, slots=True)
class Comparison:
    label: str
    figures: Headline
    revenue_change: float | None
    orders_change: float | None
    aov_change: float | None
    sessions_change: float | None


@dataclass(frozen=True, slots=True)
class HourRow:
    hour: int
    revenue: str
    orders: int
    sessions: int


@dataclass(frozen=True, slots=True)
class DayRow:
    day: date
    revenue: str
    orders: int
    sessions: int


@dataclass(frozen=True, slots=True)
class ProductLine:
    product_id: str
    name: str
    units: int
    orders: int
    revenue: str


@dataclass(frozen=True, slots=True)
class CategoryLine:
    category: str
    units: int
    revenue: str


@dataclass(frozen=True, slots=True)
class CountryLine:
    country: str
    orders: int
    revenue: str


@dataclass(frozen=True, slots=True)
class Customers:
    """Identified buyers of the period: new (no earlier order) or returning; guest orders."""

    new: int
    returning: int
    new_revenue: str
    returning_revenue: str
    guest_orders: int
    guest_revenue: str
    new_visitors: int
    returning_visitors: int


@dataclass(frozen=True, slots=True)
class SegmentLine:
    key: str
    name: str
    customers: int
    revenue: str


@dataclass(frozen=True, slots=True)
class AnomalyLine:
    """One of the period's anomalies; its window in the shop's local time."""

    kind: str
    metric: str
    severity: str
    status: str
    window_start: datetime
    window_end: datetime
    observed: float
    expected: float | None
    explanation: str


@dataclass(frozen=True, slots=True)
class AnomaliesSummary:
    count: int
    critical: int
    warning: int
    info: int
    rows: list[AnomalyLine]


@dataclass(frozen=True, slots=True)
class ReportFigures:
    shop: str
    shop_name: str
    kind: str
    first: date
    last: date
    timezone: str
    currency: str
    headline: Headline
    products_sold: int
    distinct_products: int
    peak_revenue_hour: int | None
    peak_revenue: str
    peak_sessions_hour: int | None
    peak_sessions: int
    hours: list[HourRow]
    days: list[DayRow]
    top_products: list[ProductLine]
    top_categories: list[CategoryLine]
    countries: list[CountryLine]
    unattributed_refunds: str
    customers: Customers
    segments: list[SegmentLine]
    comparisons: list[Comparison]
    anomalies: AnomaliesSummary
    # Product and category figures net of refund lines; reports stored before refund lines had
    # them before refunds and have no such key (the rendering labels them so).
    products_net: bool = True


def report_period_get(*, shop: Shop, kind: str, day: date, today: date) -> Period:
    """The period a report of `kind` covers for `day`: that day, or its ISO week (Monday to
    Sunday). A day after `today` (the shop's) or before the shop's first event is refused."""
    if kind not in KINDS:
        raise invalid("kind", f"expected one of {', '.join(KINDS)}")
    tz = ZoneInfo(shop.timezone)
    if day > today:
        raise invalid("day", f"{day} is in the future (today is {today} in {shop.timezone})")
    first_event = (
        Event.objects.using(analytics_db())
        .filter(shop_id=shop.pk)
        .order_by("occurred_at")
        .values_list("occurred_at", flat=True)
        .first()
    )
    if first_event is None:
        raise invalid("day", "the shop has no events yet")
    first_day = local_date(first_event, tz)
    if day < first_day:
        raise invalid("day", f"{day} is before the shop's first event ({first_day})")
    if kind == Report.Kind.WEEKLY:
        monday = day - timedelta(days=day.weekday())
        return Period(first=monday, last=monday + timedelta(days=6), tz=tz)
    return Period(first=day, last=day, tz=tz)


def _change(now: Decimal | int, before: Decimal | int) -> float | None:
    return round(float((Decimal(now) - Decimal(before)) / Decimal(before)), 6) if before else None


def report_headline_get(*, shop: Shop, period: Period) -> Headline:
    return _headline(kpis_get(query=Query(shop=shop, period=period)), period)


def _headline(kpis: Kpis, period: Period) -> Headline:
    return Headline(
        first=period.first,
        last=period.last,
        revenue=kpis.revenue,
        gross=money_format(Decimal(kpis.revenue) + Decimal(kpis.refunds)),
        refunds=kpis.refunds,
        orders=kpis.orders,
        customers=kpis.customers,
        aov=kpis.aov,
        sessions=kpis.sessions,
        visitors=kpis.visitors,
    )


def _comparison(label: str, now: Headline, before: Headline) -> Comparison:
    return Comparison(
        label=label,
        figures=before,
        revenue_change=_change(Decimal(now.revenue), Decimal(before.revenue)),
        orders_change=_change(now.orders, before.orders),
        aov_change=_change(Decimal(now.aov), Decimal(before.aov)),
        sessions_change=_change(now.sessions, before.sessions),
    )


def _hours_and_days(query: Query) -> tuple[list[HourRow], list[DayRow]]:
    """Net revenue, orders and sessions started per local hour of day and per local day."""
    tz = query.period.tz
    hours: dict[int, list[Any]] = {h: [Decimal(0), 0, 0] for h in range(24)}
    days: dict[date, list[Any]] = {
        query.period.first + timedelta(days=i): [Decimal(0), 0, 0] for i in range(query.period.days)
    }
    revenue = HourlyRevenue.objects.using(analytics_db()).filter(
        shop_id=query.shop.pk, hour__gte=query.period.start, hour__lt=query.period.end
    )
    for hour, orders, total, refunds in revenue.values_list(
        "hour", "order_count", "order_total", "refund_total"
    ):
        local = hour.astimezone(tz)
        for row in (hours[local.hour], days[local.date()]):
            row[0] += total - refunds
            row[1] += orders
    for hour, sessions in hourly_rollups(query).values_list("hour", "session_count"):
        hours[hour.astimezone(tz).hour][2] += sessions
    for day, sessions in daily_rollups(query).values_list("day", "session_count"):
        days[day][2] += sessions
    return (
        [HourRow(h, money_format(r), o, s) for h, (r, o, s) in hours.items()],
        [DayRow(d, money_format(r), o, s) for d, (r, o, s) in days.items()],
    )


def _peak(values: list[tuple[int, Any]]) -> tuple[int | None, Any]:
    """The hour with the highest positive value (the earliest on a tie), or None."""
    best = max(values, key=lambda item: (item[1], -item[0]), default=None)
    return (best[0], best[1]) if best is not None and best[1] > 0 else (None, 0)


def _orders(query: Query) -> QuerySet:
    return Order.objects.using(analytics_db()).filter(
        shop_id=query.shop.pk,
        placed_at__gte=query.period.start,
        placed_at__lt=query.period.end,
        is_cancelled=False,
    )


def _categories(query: Query, totals: dict[str, list[Any]]) -> list[CategoryLine]:
    """Units and revenue by the products' catalogue category, net of refunds (the product
    rollups' sums, `totals` as `product_totals` gives them); categories with net revenue above
    zero, the highest first."""
    units_at = 1 + PRODUCT_SUMS.index("units")
    revenue_at = 1 + PRODUCT_SUMS.index("revenue")
    sold = {pid: sums for pid, sums in totals.items() if sums[units_at] or sums[revenue_at]}
    categories = dict(
        Product.objects.using(analytics_db())
        .filter(shop_id=query.shop.pk, product_id__in=list(sold))
        .exclude(category="")
        .values_list("product_id", "category")
    )
    sums: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for product_id, product in sold.items():
        row = sums[categories.get(product_id, UNCATEGORISED)]
        row[0] += product[units_at]
        row[1] += Decimal(product[revenue_at])
    ranked = sorted(
        ((name, row) for name, row in sums.items() if row[1] > 0),
        key=lambda item: (-item[1][1], item[0]),
    )[:TOP]
    return [
        CategoryLine(name, int(units), money_format(revenue)) for name, (units, revenue) in ranked
    ]


def _country(code: str, properties: Any) -> str:
    """The order's ISO country, else the name the source gave (imports), else ''."""
    if code:
        return code
    return str(properties.get("country_name", "")) if isinstance(properties, dict) else ""


def _countries(query: Query) -> tuple[list[CountryLine], Decimal]:
    sums: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for code, properties, total in _orders(query).values_list("country", "properties", "total"):
        row = sums[_country(code, properties)]
        row[0] += 1
        row[1] += total
    unattributed = Decimal(0)
    refunds = Refund.objects.using(analytics_db()).filter(
        shop_id=query.shop.pk,
        refunded_at__gte=query.period.start,
        refunded_at__lt=query.period.end,
    )
    for amount, order_id, code, properties in refunds.values_list(
        "amount", "order_id", "order__country", "order__properties"
    ):
        if order_id is None:
            unattributed += amount
        else:
            sums[_country(code, properties)][1] -= amount
    ranked = sorted(sums.items(), key=lambda item: (-item[1][1], item[0]))
    return [CountryLine(c, n, money_format(r)) for c, (n, r) in ranked], unattributed


def _customers(query: Query, *, new_visitors: int, returning_visitors: int) -> Customers:
    per_user: dict[str, Decimal] = defaultdict(Decimal)
    guest_orders, guest_revenue = 0, Decimal(0)
    for user_id, total in _orders(query).values_list("user_id", "total"):
        if user_id:
            per_user[user_id] += total
        else:
            guest_orders += 1
            guest_revenue += total
    earlier = set(
        Order.objects.using(analytics_db())
        .filter(
            shop_id=query.shop.pk,
            user_id__in=list(per_user),
            placed_at__lt=query.period.start,
            is_cancelled=False,
        )
        .values_list("user_id", flat=True)
        .distinct()
    )
    returning = [u for u in per_user if u in earlier]
    new = [u for u in per_user if u not in earlier]
    return Customers(
        new=len(new),
        returning=len(returning),
        new_revenue=money_format(sum((per_user[u] for u in new), Decimal(0))),
        returning_revenue=money_format(sum((per_user[u] for u in returning), Decimal(0))),
        guest_orders=guest_orders,
        guest_revenue=money_format(guest_revenue),
        new_visitors=new_visitors,
        returning_visitors=returning_visitors,
    )


def _segments(query: Query) -> list[SegmentLine]:
    """The period's buyers by their value band at the period's end (the value segments'
    definition, read through settings.REPORT_VALUE_BANDS: analytics imports no segments)."""
    bands: dict[int, str] = import_string(settings.REPORT_VALUE_BANDS)(
        shop_id=query.shop.pk, now=query.period.end
    )
    per_person: dict[int, Decimal] = defaultdict(Decimal)
    for person_id, total in (
        _orders(query).filter(person__isnull=False).values_list("person_id", "total")
    ):
        per_person[person_id] += total
    sums: dict[str, list[Any]] = {key: [0, Decimal(0)] for key, _ in SEGMENTS}
    for person_id, total in per_person.items():
        band = bands.get(person_id)
        if band in sums:
            sums[band][0] += 1
            sums[band][1] += total
    return [
        SegmentLine(key=key, name=name, customers=sums[key][0], revenue=money_format(sums[key][1]))
        for key, name in SEGMENTS
    ]


def report_anomalies_get(*, shop: Shop, period: Period) -> AnomaliesSummary:
    """The anomalies whose window starts inside the period (the shop's local days, whatever
    their status now), the most severe first, then by window."""
    found = list(
        Anomaly.objects.using(analytics_db())
        .filter(shop_id=shop.pk, window_start__gte=period.start, window_start__lt=period.end)
        .only(
            "kind", "metric", "severity", "status", "window_start", "window_end", "observed",
            "expected", "explanation",
        )
        .order_by("window_start", "id")
    )  # fmt: skip
    found.sort(key=lambda a: SEVERITY_RANK.get(a.severity, len(SEVERITY_RANK)))
    by_severity: dict[str, int] = defaultdict(int)
    for anomaly in found:
        by_severity[anomaly.severity] += 1
    return AnomaliesSummary(
        count=len(found),
        critical=by_severity["critical"],
        warning=by_severity["warning"],
        info=by_severity["info"],
        rows=[
            AnomalyLine(
                kind=a.kind,
                metric=a.metric,
                severity=a.severity,
                status=a.status,
                window_start=a.window_start.astimezone(period.tz),
                window_end=a.window_end.astimezone(period.tz),
                observed=a.observed,
                expected=a.expected,
                explanation=a.explanation,
            )
            for a in found[:ANOMALIES]
        ],
    )


def report_figures_get(*, shop: Shop, kind: str, period: Period) -> ReportFigures:
    query = Query(shop=shop, period=period)
    kpis = kpis_get(query=query)
    headline = _headline(kpis, period)
    hours, days = _hours_and_days(query)
    peak_revenue_hour, peak_revenue = _peak([(r.hour, Decimal(r.revenue)) for r in hours])
    peak_sessions_hour, peak_sessions = _peak([(r.hour, r.sessions) for r in hours])
    totals = product_totals(query)
    units = [int(sums[1 + PRODUCT_SUMS.index("units")]) for sums in totals.values()]
    top = top_products_by(query, order_by="revenue", limit=TOP)
    countries, unattributed = _countries(query)
    comparisons = [
        _comparison(
            "the previous week" if kind == Report.Kind.WEEKLY else "the previous day",
            headline,
            report_headline_get(shop=shop, period=period.previous()),
        )
    ]
    if kind == Report.Kind.DAILY:
        week_ago = period.first - timedelta(days=7)
        comparisons.append(
            _comparison(
                f"last {week_ago:%A}",
                headline,
                report_headline_get(shop=shop, period=Period(week_ago, week_ago, period.tz)),
            )
        )
    return ReportFigures(
        shop=shop.domain,
        shop_name=shop.name or shop.domain,
        kind=kind,
        first=period.first,
        last=period.last,
        timezone=shop.timezone,
        currency=shop.currency,
        headline=headline,
        products_sold=sum(units),
        distinct_products=sum(1 for u in units if u > 0),
        peak_revenue_hour=peak_revenue_hour,
        peak_revenue=money_format(peak_revenue),
        peak_sessions_hour=peak_sessions_hour,
        peak_sessions=int(peak_sessions),
        hours=hours,
        days=days,
        top_products=[
            ProductLine(p.product_id, p.product_name, p.units, p.orders, p.revenue) for p in top
        ],
        top_categories=_categories(query, totals),
        countries=countries,
        unattributed_refunds=money_format(unattributed),
        customers=_customers(
            query, new_visitors=kpis.new_visitors, returning_visitors=kpis.returning_visitors
        ),
        segments=_segments(query),
        comparisons=comparisons,
        anomalies=report_anomalies_get(shop=shop, period=period),
    )


def report_data_compute(*, shop: Shop, kind: str, period: Period) -> dict[str, Any]:
    """The report's figures in their stored (JSON) form, with its findings and charts."""
    figures = report_figures_get(shop=shop, kind=kind, period=period)
    data = json.loads(json.dumps(asdict(figures), cls=DjangoJSONEncoder))
    data["findings"] = findings_compose(data)
    data["charts"] = report_charts_render(data)
    return data


def reports_due_get(*, shops: list[Shop], now: datetime) -> list[tuple[int, str, date]]:
    """(shop id, kind, first day) of each report whose period ended (plus SETTLE) in the shop's
    timezone and that is not stored yet: yesterday's daily, last ISO week's weekly. Shops
    without an event in the period are left out."""
    wanted = []
    for shop in shops:
        local = (now - SETTLE).astimezone(ZoneInfo(shop.timezone))
        yesterday = local.date() - timedelta(days=1)
        monday = local.date() - timedelta(days=local.weekday() + 7)
        wanted += [
            (shop, Report.Kind.DAILY.value, yesterday, yesterday),
            (shop, Report.Kind.WEEKLY.value, monday, monday + timedelta(days=6)),
        ]
    stored = set(Report.objects.filter(shop__in=shops).values_list("shop_id", "kind", "first_day"))
    due = []
    for shop, kind, first, last in wanted:
        if (shop.pk, kind, first) in stored:
            continue
        period = Period(first, last, ZoneInfo(shop.timezone))
        has_events = Event.objects.filter(
            shop_id=shop.pk, occurred_at__gte=period.start, occurred_at__lt=period.end
        ).exists()
        if has_events:
            due.append((shop.pk, kind, first))
    return due


def report_list(*, shop: Shop, kind: str = "") -> QuerySet:
    """The shop's reports, newest period first (the archive); `kind` filters when given."""
    if kind and kind not in KINDS:
        raise invalid("kind", f"expected one of {', '.join(KINDS)}")
    reports = Report.objects.filter(shop=shop).defer("data", "text", "html")
    if kind:
        reports = reports.filter(kind=kind)
    return reports.order_by("-first_day", "kind", "-id")


def report_get(*, shop: Shop, report_id: int) -> Report:
    report = Report.objects.filter(shop=shop, pk=report_id).first()
    if report is None:
        raise ApplicationError("No such report.", code="not_found", status=404)
    return report


def report_recipients_get(*, shop: Shop, kind: str) -> list[str]:
    flag = "is_weekly" if kind == Report.Kind.WEEKLY else "is_daily"
    return list(
        ReportRecipient.objects.filter(shop=shop, **{flag: True})
        .order_by("email")
        .values_list("email", flat=True)
    )
