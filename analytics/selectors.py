"""Every read of the analytics app: rollup sums and bounded queries, returned as dataclasses.

Reads go to `analytics_db()` (the replica when configured). Dashboard numbers come from the rollup
tables; the only raw-log reads are funnels, the abandoned-cart recovery list and the live stream,
each bounded by the requested period (with an index on the time column) or by a row limit.
"""

import hashlib
import heapq
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from django.core.cache import cache
from django.db import connections
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour

from analytics.bitmaps import ids_union, ids_unpack
from analytics.funnels import (
    FunnelResult,
    StepSpec,
    UnitEvent,
    UnitLevel,
    funnel_from_counts,
    funnel_levels,
    funnel_summarize,
    unit_level,
)
from analytics.models import (
    DailyRollup,
    DailySessionPaths,
    DailyVisitors,
    HourlyRevenue,
    HourlyRollup,
    ProductDailyRollup,
    ProductMonthlyRollup,
    SessionPath,
)
from analytics.periods import Period, local_date
from analytics.services import (
    CART_TYPES,
    EPOCH,
    PRODUCT_SUMS,
    ROLLUP_COUNTS,
    SESSION_SPAN,
    EpochMicroseconds,
    rollups_generation,
)
from analytics.session_arrays import GroupCounts, funnel_counts, paths_unpack
from clickserver.db_routers import analytics_db
from events.models import Event, Order, Person, Session, Shop

CACHE_SECONDS = 300
# Part of every cache key: bumped when the shape of cached answers changes, so a deploy never
# reads what older code stored (2: plain dicts instead of dataclasses).
ANSWER_FORMAT = 2
BREAKDOWNS = ("utm_source", "device", "country")
PERSON_FUNNEL_WINDOW = 14 * 24 * 3600
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class Filters:
    """Session attributes to restrict to; empty means no restriction."""

    utm_source: str = ""
    device: str = ""
    country: str = ""

    def as_lookup(self, prefix: str = "") -> dict[str, str]:
        return {prefix + name: getattr(self, name) for name in BREAKDOWNS if getattr(self, name)}

    @property
    def is_empty(self) -> bool:
        return not self.as_lookup()


@dataclass(frozen=True, slots=True)
class Query:
    shop: Shop
    period: Period
    filters: Filters = Filters()


def _ratio(part: float | Decimal, whole: float | Decimal) -> float:
    return round(float(part) / float(whole), 6) if whole else 0.0


def _money(value: Decimal | None) -> str:
    return str((value or Decimal(0)).quantize(Decimal("0.01")))


# Answers this process computed or fetched, by cache key: a warm request then skips the second
# cache round trip and the unpickling. Safe across processes because the key holds the shop's
# generation (read from the shared cache on every request); entries expire with the shared ones.
_LOCAL: OrderedDict[str, tuple[float, Any]] = OrderedDict()
LOCAL_ENTRIES = 256


def cached(name: str, query: Query, params: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """`compute()` through the cache, under a key that changes with the shop's rollups."""
    generation = rollups_generation(shop_id=query.shop.pk)
    raw = repr((name, query.period.first, query.period.last, query.filters, sorted(params.items())))
    digest = hashlib.sha1(raw.encode()).hexdigest()
    key = f"analytics:{ANSWER_FORMAT}:{query.shop.pk}:{generation}:{digest}"
    now = time.monotonic()
    local = _LOCAL.get(key)
    if local is not None and local[0] > now:
        return local[1]
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, timeout=CACHE_SECONDS)
    _LOCAL[key] = (now + CACHE_SECONDS, value)
    _LOCAL.move_to_end(key)
    while len(_LOCAL) > LOCAL_ENTRIES:
        _LOCAL.popitem(last=False)
    return value


# --- rollup sums -------------------------------------------------------------------------------


def _filtered(query: Query, *, by_dimension: bool) -> dict[str, Any]:
    """The totals rows unless filtering or grouping by dimension, plus the filters."""
    is_total = not (by_dimension or not query.filters.is_empty)
    return {"shop_id": query.shop.pk, "is_total": is_total, **query.filters.as_lookup()}


def _rollups(query: Query, *, by_dimension: bool = False):
    """Daily rows of the period (periods are whole shop-local days)."""
    return DailyRollup.objects.using(analytics_db()).filter(
        day__gte=query.period.first,
        day__lte=query.period.last,
        **_filtered(query, by_dimension=by_dimension),
    )


def _hourly_rollups(query: Query):
    """Hourly rows of the period, for hour-level trends and the heat map."""
    return HourlyRollup.objects.using(analytics_db()).filter(
        hour__gte=query.period.start,
        hour__lt=query.period.end,
        **_filtered(query, by_dimension=False),
    )


def _rollup_totals(query: Query) -> dict[str, Any]:
    totals = _rollups(query).aggregate(**{name: Sum(name) for name in ROLLUP_COUNTS})
    return {name: value or 0 for name, value in totals.items()}


def _revenue_totals(*, shop: Shop, start: datetime | None, end: datetime) -> dict[str, Any]:
    rows = HourlyRevenue.objects.using(analytics_db()).filter(shop_id=shop.pk, hour__lt=end)
    if start is not None:
        rows = rows.filter(hour__gte=start)
    totals = rows.aggregate(
        orders=Sum("order_count"), gross=Sum("order_total"), refunds=Sum("refund_total")
    )
    gross, refunds = totals["gross"] or Decimal(0), totals["refunds"] or Decimal(0)
    return {"orders": totals["orders"] or 0, "revenue": gross - refunds, "refunds": refunds}


# --- counts --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionCount:
    session_count: int
    bounce_count: int
    pageview_count: int
    start: date
    end: date


def session_count_get(*, query: Query) -> SessionCount:
    totals = _rollup_totals(query)
    return SessionCount(
        session_count=totals["session_count"],
        bounce_count=totals["bounce_count"],
        pageview_count=totals["pageview_count"],
        start=query.period.first,
        end=query.period.last,
    )


@dataclass(frozen=True, slots=True)
class UserCount:
    user_count: int
    start: date
    end: date


def _daily_visitors(query: Query) -> dict[date, Any]:
    """The period's per-day visitor bitmaps, by local day."""
    return _daily_visitor_sets(query, with_new=False)[0]


def _daily_visitor_sets(query: Query, *, with_new: bool = True) -> tuple[dict, dict]:
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


def _visitor_count(query: Query) -> int:
    if query.filters.is_empty:
        return len(ids_union(_daily_visitors(query).values()))
    # Visitors by source/device/country: distinct persons of the matching sessions in the period.
    return (
        Session.objects.using(analytics_db())
        .filter(
            shop_id=query.shop.pk,
            started_at__gte=query.period.start,
            started_at__lt=query.period.end,
            **query.filters.as_lookup(),
        )
        .aggregate(n=Count("person_id", distinct=True))["n"]
    )


def user_count_get(*, query: Query) -> UserCount:
    return UserCount(
        user_count=_visitor_count(query), start=query.period.first, end=query.period.last
    )


@dataclass(frozen=True, slots=True)
class VisitConversion:
    sessions: int
    converted_sessions: int
    rate: float
    start: date
    end: date


def visit_conversion_get(*, query: Query) -> VisitConversion:
    totals = _rollup_totals(query)
    return VisitConversion(
        sessions=totals["session_count"],
        converted_sessions=totals["converted_session_count"],
        rate=_ratio(totals["converted_session_count"], totals["session_count"]),
        start=query.period.first,
        end=query.period.last,
    )


# --- products ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProductRow:
    product_id: str
    product_name: str
    views: int
    carts: int
    abandoned_carts: int
    purchases: int
    orders: int
    units: int
    revenue: str
    view_to_purchase_rate: float


# The ProductRow field each products ordering sorts by, and the rollup column it sums.
PRODUCT_ORDER_COLUMNS = {
    "views": "view_count",
    "carts": "cart_count",
    "purchases": "purchase_count",
    "revenue": "revenue",
    "abandoned_carts": "abandoned_cart_count",
    "units": "units",
}


def _product_parts(query: Query) -> list[tuple[str, str, date, date]]:
    """(table, day column, low, high) covering the period: whole calendar months from the
    monthly table, the days at either end from the daily one."""
    first, last = query.period.first, query.period.last
    months = []
    month = first if first.day == 1 else (first.replace(day=1) + timedelta(days=32)).replace(day=1)
    while (following := (month + timedelta(days=32)).replace(day=1)) <= last + timedelta(days=1):
        months.append(month)
        month = following
    daily = ProductDailyRollup._meta.db_table
    if not months:
        return [(daily, "day", first, last)]
    parts = [(ProductMonthlyRollup._meta.db_table, "month", months[0], months[-1])]
    for low, high in ((first, months[0] - timedelta(days=1)), (month, last)):
        if low <= high:
            parts.append((daily, "day", low, high))
    return parts


def _product_rows_fetch(
    query: Query, columns: str, *, where: str = "", params: tuple = ()
) -> list[tuple]:
    """`columns` of the period's product rollup rows (months and edge days), not summed."""
    parts = _product_parts(query)
    sql = " UNION ALL ".join(
        f"SELECT {columns} FROM {table} "
        f"WHERE shop_id = %s AND {column} >= %s AND {column} <= %s{where}"
        for table, column, _, _ in parts
    )
    values = [v for _, _, low, high in parts for v in (query.shop.pk, low, high, *params)]
    with connections[analytics_db()].cursor() as cursor:
        cursor.execute(sql, values)
        return cursor.fetchall()


def _product_totals(query: Query, *, product_ids: list[str] | None = None) -> dict[str, list[Any]]:
    """Per product of the period (or of `product_ids`): [name, *PRODUCT_SUMS].

    Summing the few thousand part rows here is cheaper than grouping them in SQL (a derived
    table, a temporary table and a sort), and one fetch serves every ranking of the request.
    """
    where = ""
    params: tuple[str, ...] = ()
    if product_ids is not None:
        if not product_ids:
            return {}
        where = f" AND product_id IN ({', '.join(['%s'] * len(product_ids))})"
        params = tuple(product_ids)
    rows = _product_rows_fetch(
        query, f"product_id, product_name, {', '.join(PRODUCT_SUMS)}", where=where, params=params
    )
    totals: dict[str, list[Any]] = {}
    for product_id, name, *sums in rows:
        total = totals.get(product_id)
        if total is None:
            totals[product_id] = [name, *sums]
            continue
        total[0] = max(total[0], name)
        for i, value in enumerate(sums, start=1):
            total[i] += value
    return totals


def _top_products_by(query: Query, *, order_by: str, limit: int) -> list[ProductRow]:
    """The `limit` products with the highest non-zero `order_by`: ranked on that one column,
    then read whole for the winners only (the abandoned-cart list and the insights want a few)."""
    column = PRODUCT_ORDER_COLUMNS[order_by]
    sums: dict[str, Any] = defaultdict(int)
    for product_id, value in _product_rows_fetch(
        query, f"product_id, {column}", where=f" AND {column} > 0"
    ):
        sums[product_id] += value
    winners = heapq.nsmallest(limit, sums, key=lambda product_id: (-sums[product_id], product_id))
    return _top_products(
        _product_totals(query, product_ids=winners), order_by=order_by, limit=limit
    )


def _top_products(totals: dict[str, list[Any]], *, order_by: str, limit: int) -> list[ProductRow]:
    """The `limit` products with the highest `order_by` (ties: product id), as rows."""
    index = 1 + PRODUCT_SUMS.index(PRODUCT_ORDER_COLUMNS[order_by])
    top = heapq.nsmallest(limit, totals.items(), key=lambda item: (-item[1][index], item[0]))
    return [
        ProductRow(
            product_id=product_id,
            product_name=name or "",
            views=int(views),
            carts=int(carts),
            abandoned_carts=int(abandoned),
            purchases=int(purchases),
            orders=int(orders),
            units=int(units),
            revenue=_money(Decimal(revenue)),
            view_to_purchase_rate=_ratio(purchases, views),
        )
        for product_id, (
            name,
            views,
            carts,
            abandoned,
            purchases,
            orders,
            units,
            revenue,
        ) in top
    ]


@dataclass(frozen=True, slots=True)
class ProductVisitRow:
    product_id: str
    product_name: str
    visits: int


@dataclass(frozen=True, slots=True)
class ProductVisits:
    product_visits: int
    rows: list[ProductVisitRow]
    start: date
    end: date


def product_visits_get(*, query: Query, limit: int) -> ProductVisits:
    total = _rollup_totals(query)["product_view_count"]
    rows = [
        ProductVisitRow(product_id=r.product_id, product_name=r.product_name, visits=r.views)
        for r in _top_products(_product_totals(query), order_by="views", limit=limit)
    ]
    return ProductVisits(
        product_visits=total, rows=rows, start=query.period.first, end=query.period.last
    )


@dataclass(frozen=True, slots=True)
class Products:
    rows: list[ProductRow]
    most_abandoned: ProductRow | None
    start: date
    end: date


def products_get(*, query: Query, order_by: str, limit: int) -> Products:
    totals = _product_totals(query)
    abandoned = _top_products(totals, order_by="abandoned_carts", limit=1)
    return Products(
        rows=_top_products(totals, order_by=order_by, limit=limit),
        most_abandoned=abandoned[0] if abandoned and abandoned[0].abandoned_carts else None,
        start=query.period.first,
        end=query.period.last,
    )


# --- KPIs ----------------------------------------------------------------------------------------


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
    totals = _rollup_totals(query)
    daily, daily_new = _daily_visitor_sets(query)
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
        revenue=_money(money["revenue"]),
        orders=money["orders"],
        aov=_money(money["revenue"] / money["orders"] if money["orders"] else Decimal(0)),
        refunds=_money(money["refunds"]),
        sessions=totals["session_count"],
        visit_conversion=_ratio(totals["converted_session_count"], totals["session_count"]),
        cart_abandonment=_ratio(totals["abandoned_session_count"], totals["cart_session_count"]),
        clv=_money(to_date / people if people else Decimal(0)),
        customers=customers,
        visitors=visitors,
        new_visitors=new_visitors,
        returning_visitors=visitors - new_visitors,
        start=period.first,
        end=period.last,
    )


# --- trends --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrendPoint:
    bucket: str
    sessions: int
    visitors: int
    orders: int
    revenue: str


@dataclass(frozen=True, slots=True)
class Trends:
    interval: str
    rows: list[TrendPoint]
    # heat_map[weekday][hour]: sessions by local weekday (0 = Monday) and hour of day.
    heat_map: list[list[int]]
    peak_hour: int | None
    peak_weekday: str | None
    peak_bucket: str | None
    start: date
    end: date


def _bucket_of(moment: datetime | date, interval: str, query: Query) -> str:
    tz = query.period.tz
    if not isinstance(moment, datetime):
        day = moment
    elif interval == "hour":
        return moment.astimezone(tz).strftime("%Y-%m-%dT%H:00")
    else:
        day = local_date(moment, tz)
    if interval == "week":
        day = day - timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    return day.isoformat()


def _hourly_sessions(query: Query) -> list[tuple[datetime, int]]:
    """Sessions started per UTC hour of the period (several dimension rows per hour if filtered)."""
    return list(_hourly_rollups(query).values_list("hour", "session_count"))


def _heat_map(hourly: list[tuple[datetime, int]], tz) -> list[list[int]]:
    """heat[weekday][hour]: sessions by local weekday (0 = Monday) and hour of day."""
    heat = [[0] * 24 for _ in range(7)]
    for hour, sessions in hourly:
        local = hour.astimezone(tz)
        heat[local.weekday()][local.hour] += sessions
    return heat


def _peaks(heat: list[list[int]]) -> tuple[int | None, str | None]:
    """The busiest hour of day and weekday, or None without sessions."""
    by_hour = [sum(heat[day][hour] for day in range(7)) for hour in range(24)]
    by_day = [sum(heat[day]) for day in range(7)]
    if not any(by_day):
        return None, None
    return by_hour.index(max(by_hour)), WEEKDAYS[by_day.index(max(by_day))]


def trends_get(*, query: Query, interval: str) -> Trends:
    points: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"sessions": 0, "orders": 0, "revenue": Decimal(0), "visitors": 0}
    )
    hourly = _hourly_sessions(query)
    for hour, sessions in hourly:
        points[_bucket_of(hour, interval, query)]["sessions"] += sessions
    for hour, orders, total, refunds in (
        HourlyRevenue.objects.using(analytics_db())
        .filter(shop_id=query.shop.pk, hour__gte=query.period.start, hour__lt=query.period.end)
        .values_list("hour", "order_count", "order_total", "refund_total")
    ):
        point = points[_bucket_of(hour, interval, query)]
        point["orders"] += orders
        point["revenue"] += total - refunds
    for bucket, count in _visitor_counts(query, interval).items():
        points[bucket]["visitors"] = count
    rows = [
        TrendPoint(
            bucket=bucket,
            sessions=value["sessions"],
            visitors=value["visitors"],
            orders=value["orders"],
            revenue=_money(value["revenue"]),
        )
        for bucket, value in sorted(points.items())
    ]
    heat = _heat_map(hourly, query.period.tz)
    peak_hour, peak_weekday = _peaks(heat)
    return Trends(
        interval=interval,
        rows=rows,
        heat_map=heat,
        peak_hour=peak_hour,
        peak_weekday=peak_weekday,
        peak_bucket=max(rows, key=lambda p: p.sessions).bucket if peak_hour is not None else None,
        start=query.period.first,
        end=query.period.last,
    )


def _visitor_counts(query: Query, interval: str) -> dict[str, int]:
    """Distinct visitors per bucket: the daily table in SQL, else the period's sessions."""
    if interval != "hour" and query.filters.is_empty:
        buckets: dict[str, list[Any]] = defaultdict(list)
        for day, bitmap in _daily_visitors(query).items():
            buckets[_bucket_of(day, interval, query)].append(bitmap)
        return {bucket: len(ids_union(bitmaps)) for bucket, bitmaps in buckets.items()}
    people: dict[str, set[int]] = defaultdict(set)
    pairs = (
        Session.objects.using(analytics_db())
        .filter(
            shop_id=query.shop.pk,
            started_at__gte=query.period.start,
            started_at__lt=query.period.end,
            **query.filters.as_lookup(),
        )
        .annotate(hour=TruncHour("started_at", tzinfo=UTC))
        .values_list("hour", "person_id")
        .distinct()
    )
    for hour, person_id in pairs:
        people[_bucket_of(hour, interval, query)].add(person_id)
    return {bucket: len(persons) for bucket, persons in people.items()}


# --- funnels -------------------------------------------------------------------------------------


MICROSECONDS = 1_000_000


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class FunnelParams:
    steps: tuple[StepSpec, ...]
    unit: str = "session"
    strict: bool = False
    window: int | None = None
    breakdown: str = ""


@dataclass(frozen=True, slots=True)
class FunnelBreakdown:
    value: str
    result: FunnelResult


@dataclass(frozen=True, slots=True)
class Funnel:
    unit: str
    mode: str
    window: int | None
    steps: list[Any]
    units: int
    median_seconds_to_convert: float | None
    breakdown: list[FunnelBreakdown] = field(default_factory=list)
    start: date | None = None
    end: date | None = None


def funnel_compute(*, query: Query, params: FunnelParams) -> Funnel:
    """Funnel over the events of the period's sessions (or persons), read by time-range index."""
    period = query.period
    window = params.window
    types = sorted({step.event_type for step in params.steps})
    needs_properties = any(step.filters for step in params.steps)
    if params.unit == "person":
        window = window if window is not None else PERSON_FUNNEL_WINDOW
        horizon = period.end + timedelta(seconds=window)
    else:
        horizon = period.end + SESSION_SPAN
    events = Event.objects.using(analytics_db()).filter(
        shop_id=query.shop.pk, occurred_at__gte=period.start, occurred_at__lt=horizon
    )
    # Strict mode needs every event to see what lies between two steps.
    if not params.strict:
        events = events.filter(type__in=types)
    if not query.filters.is_empty:
        events = events.filter(**query.filters.as_lookup("session__"))
    step_types = [step.event_type for step in params.steps]
    if (
        params.unit == "session"
        and not needs_properties
        and window is None
        and len(set(step_types)) == len(step_types)
    ):
        return _funnel_from_day_paths(query, params)
    groups: dict[int, str] = {}
    levels: dict[Any, UnitLevel] | None = None
    if params.unit == "session" and not needs_properties and window is None:
        levels, groups = _session_path_levels(
            query, params, types=set(types), until=_micros(horizon)
        )
        units: dict[Any, Any] = {}
    elif params.unit == "session" and not needs_properties:
        units, groups = _session_path_units(query, params, types=set(types), until=_micros(horizon))
    else:
        key = "person_id" if params.unit == "person" else "session_id"
        columns = [key, "at", "id", "type"] + (["properties"] if needs_properties else [])
        units = defaultdict(list)
        # Times come from the database as integer microseconds: converting a few hundred
        # thousand datetimes to aware Python objects would cost more than the whole funnel.
        rows = events.exclude(**{key: None}).annotate(at=EpochMicroseconds("occurred_at"))
        empty: dict[str, Any] = {}
        for row in rows.values_list(*columns):
            units[row[0]].append((row[1], row[2], row[3], row[4] if needs_properties else empty))
        if params.unit == "session":
            sessions = Session.objects.using(analytics_db()).filter(
                shop_id=query.shop.pk, started_at__gte=period.start, started_at__lt=period.end
            )
            attribute = params.breakdown or "id"
            groups = dict(sessions.values_list("id", attribute))
            units = {k: v for k, v in units.items() if k in groups}
        for unit_events in units.values():
            unit_events.sort()
    if levels is None:
        levels = funnel_levels(
            units.items(),
            params.steps,
            window=window * MICROSECONDS if window is not None else None,
            strict=params.strict,
            start_from=_micros(period.start) if params.unit == "person" else None,
            start_before=_micros(period.end) if params.unit == "person" else None,
        )
    total = funnel_summarize(levels.values(), params.steps, scale=MICROSECONDS)
    breakdown = []
    if params.breakdown:
        by_value: dict[str, list] = defaultdict(list)
        for unit_key, level in levels.items():
            by_value[groups[unit_key] or ""].append(level)
        breakdown = [
            FunnelBreakdown(
                value=value, result=funnel_summarize(items, params.steps, scale=MICROSECONDS)
            )
            for value, items in sorted(by_value.items())
        ]
    return _funnel_answer(query, params, window, total, breakdown)


def _funnel_from_day_paths(query: Query, params: FunnelParams) -> Funnel:
    """A windowless session funnel of distinct event types over the days' columnar paths."""
    period = query.period
    days = [
        paths_unpack(blob)
        for blob in DailySessionPaths.objects.using(analytics_db())
        .filter(shop_id=query.shop.pk, day__gte=period.first, day__lte=period.last)
        .values_list("data", flat=True)
    ]
    by_group = funnel_counts(
        days,
        [step.event_type for step in params.steps],
        strict=params.strict,
        filters=query.filters.as_lookup(),
        breakdown=params.breakdown,
    )
    steps, n = params.steps, len(params.steps)
    everything = GroupCounts(reached=[0] * (n + 1), durations=[])
    for counts in by_group.values():
        everything.reached[:] = [
            a + b for a, b in zip(everything.reached, counts.reached, strict=True)
        ]
        everything.durations.extend(counts.durations)
    total = funnel_from_counts(everything.reached, everything.durations, steps, scale=MICROSECONDS)
    breakdown = (
        [
            FunnelBreakdown(
                value=value,
                result=funnel_from_counts(
                    counts.reached, counts.durations, steps, scale=MICROSECONDS
                ),
            )
            for value, counts in sorted(by_group.items())
        ]
        if params.breakdown
        else []
    )
    return _funnel_answer(query, params, None, total, breakdown)


def _funnel_answer(
    query: Query,
    params: FunnelParams,
    window: int | None,
    total: FunnelResult,
    breakdown: list[FunnelBreakdown],
) -> Funnel:
    return Funnel(
        unit=params.unit,
        mode="strict" if params.strict else "ordered",
        window=window,
        steps=total.steps,
        units=total.units,
        median_seconds_to_convert=total.median_seconds_to_convert,
        breakdown=breakdown,
        start=query.period.first,
        end=query.period.last,
    )


EMPTY: dict[str, Any] = {}
PATH_CHUNK = 2000


def _session_paths(query: Query):
    return SessionPath.objects.using(analytics_db()).filter(
        shop_id=query.shop.pk,
        started_at__gte=query.period.start,
        started_at__lt=query.period.end,
        **query.filters.as_lookup(),
    )


def _path_events(
    first: int, kinds: str, offsets: str, *, types: set[str], strict: bool, since: int, until: int
) -> list[UnitEvent]:
    """A session's events in `[since, until)` (all in strict mode, else the steps' types)."""
    events = [
        (first + offset, order, kind, EMPTY)
        for order, (kind, offset) in enumerate(
            zip(orjson.loads(kinds), orjson.loads(offsets), strict=True)
        )
        if strict or kind in types
    ]
    if events and (events[0][0] < since or events[-1][0] >= until):
        events = [event for event in events if since <= event[0] < until]
    return events


def _session_path_units(
    query: Query, params: FunnelParams, *, types: set[str], until: int
) -> tuple[dict[int, list[UnitEvent]], dict[int, str]]:
    """The period's sessions as funnel units, one `SessionPath` row each instead of every event.

    The same events the raw read takes: the session's events in `[period start, until)` (all of
    them in strict mode, else those of the steps' types), ordered by (time, id).
    """
    attribute = params.breakdown or "session_id"
    since = _micros(query.period.start)
    units: dict[int, list[UnitEvent]] = {}
    groups: dict[int, str] = {}
    for session_id, group, first, kinds, offsets in _session_paths(query).values_list(
        "session_id", attribute, "first_at_us", "kinds", "offsets"
    ):
        groups[session_id] = group
        events = _path_events(
            first, kinds, offsets, types=types, strict=params.strict, since=since, until=until
        )
        if events:
            units[session_id] = events
    return units, groups


def _shape_level(
    kinds: str, ties: str, steps: tuple[StepSpec, ...], *, types: set[str], strict: bool
) -> UnitLevel | None:
    """The level of every session with these event types and ties (None: not a unit).

    Without a window the funnel looks at the order of the events and at which of them tie, never
    at the times themselves, so stand-in times that keep both give the same level.
    """
    tied = set(orjson.loads(ties)) if ties else set()
    events, at = [], 0
    for order, kind in enumerate(orjson.loads(kinds)):
        at += order not in tied
        if strict or kind in types:
            events.append((at, order, kind, EMPTY))
    if not events:
        return None
    return unit_level(events, steps, window=None, strict=strict)


def _session_path_levels(
    query: Query, params: FunnelParams, *, types: set[str], until: int
) -> tuple[dict[int, UnitLevel], dict[int, str]]:
    """Session levels without a window, one computation per distinct (kinds, ties) shape.

    Sessions that complete the funnel (their time to convert needs their times) and sessions
    with events outside `[period start, until)` are computed one by one from their offsets.
    """
    attribute = params.breakdown or "session_id"
    since = _micros(query.period.start)
    n = len(params.steps)
    memo: dict[tuple[str, str], UnitLevel | None] = {}
    levels: dict[int, UnitLevel] = {}
    groups: dict[int, str] = {}
    one_by_one = []
    for session_id, group, kinds, ties, first, last in _session_paths(query).values_list(
        "session_id", attribute, "kinds", "ties", "first_at_us", "last_at_us"
    ):
        groups[session_id] = group
        if first < since or last >= until:
            one_by_one.append(session_id)
            continue
        shape = (kinds, ties)
        if shape in memo:
            level = memo[shape]
        else:
            level = memo[shape] = _shape_level(
                kinds, ties, params.steps, types=types, strict=params.strict
            )
        if level is None:
            continue
        if level.level == n:
            one_by_one.append(session_id)
        else:
            levels[session_id] = level
    paths = SessionPath.objects.using(analytics_db())
    for i in range(0, len(one_by_one), PATH_CHUNK):
        for session_id, first, kinds, offsets in paths.filter(
            session_id__in=one_by_one[i : i + PATH_CHUNK]
        ).values_list("session_id", "first_at_us", "kinds", "offsets"):
            events = _path_events(
                first, kinds, offsets, types=types, strict=params.strict, since=since, until=until
            )
            if events:
                levels[session_id] = unit_level(
                    events, params.steps, window=None, strict=params.strict
                )
    return levels, groups


# --- carts, retention, geography, live, insights -----------------------------------------------


@dataclass(frozen=True, slots=True)
class RecoveryRow:
    person_id: int
    user_id: str
    session_id: int
    abandoned_at: datetime


@dataclass(frozen=True, slots=True)
class AbandonedCarts:
    rate: float
    cart_sessions: int
    abandoned_sessions: int
    value: str
    products: list[ProductRow]
    rows: list[RecoveryRow]
    start: date
    end: date


def abandoned_carts_get(*, query: Query, limit: int) -> AbandonedCarts:
    totals = _rollup_totals(query)
    recovery = _recovery_list(query, limit=limit)
    return AbandonedCarts(
        rate=_ratio(totals["abandoned_session_count"], totals["cart_session_count"]),
        cart_sessions=totals["cart_session_count"],
        abandoned_sessions=totals["abandoned_session_count"],
        value=_money(totals["abandoned_value"]),
        products=[
            row
            for row in _top_products_by(query, order_by="abandoned_carts", limit=10)
            if row.abandoned_carts
        ],
        rows=recovery,
        start=query.period.first,
        end=query.period.last,
    )


# The walk's first page holds this many sessions per person wanted (anonymous sessions are
# skipped); each further page is twice the last, up to RECOVERY_PAGE_MAX.
RECOVERY_PAGE_PER_PERSON = 5
RECOVERY_PAGE_MAX = 5000


def _recovery_list(query: Query, *, limit: int) -> list[RecoveryRow]:
    """Identified people whose sessions of the period had a cart and no purchase, newest first.

    A session's place is its newest cart event of the period (time, then event id). Abandoned
    sessions are walked backwards along the `SessionPath` index (shop, is_abandoned,
    last_cart_at) a page at a time, so the work stops once `limit` people are found. Sessions
    whose newest cart lies after the period's end (they started in its last hours) take their
    newest cart before the end from the log.
    """
    db = analytics_db()
    period = query.period
    abandoned = SessionPath.objects.using(db).filter(
        shop_id=query.shop.pk,
        is_abandoned=True,
        started_at__gte=period.start,
        started_at__lt=period.end,
        **query.filters.as_lookup(),
    )
    # Bounded above too: a session started in the period has its events within SESSION_SPAN.
    late = dict(
        abandoned.filter(
            last_cart_at__gte=period.end, last_cart_at__lt=period.end + SESSION_SPAN
        ).values_list("session_id", "person_id")
    )
    edge: dict[int, tuple[datetime, int]] = {}
    for session_id, at, event_id in (
        Event.objects.using(db)
        .filter(
            session_id__in=list(late),
            type__in=CART_TYPES,
            occurred_at__gte=period.start,
            occurred_at__lt=period.end,
        )
        .values_list("session_id", "occurred_at", "id")
    ):
        edge[session_id] = max(edge.get(session_id, (at, event_id)), (at, event_id))
    # (at, event id, session id, person id), newest first, merged into the main walk.
    pending = sorted(
        (
            (at, event_id, session_id, late[session_id])
            for session_id, (at, event_id) in edge.items()
        ),
        reverse=True,
    )
    walk = (
        abandoned.filter(last_cart_at__lt=period.end)
        .order_by("-last_cart_at", "-last_cart_event_id")
        .values_list("last_cart_at", "last_cart_event_id", "session_id", "person_id")
    )
    found: dict[int, RecoveryRow] = {}
    users: dict[int, str] = {}

    def take(rows: list[tuple[datetime, int, int, int | None]]) -> None:
        wanted = {row[3] for row in rows if row[3] is not None} - users.keys()
        users.update(Person.objects.using(db).filter(id__in=wanted).values_list("id", "user_id"))
        for at, _, session_id, person_id in rows:
            if person_id is None or person_id in found or len(found) >= limit:
                continue
            if users.get(person_id):
                found[person_id] = RecoveryRow(
                    person_id=person_id,
                    user_id=users[person_id],
                    session_id=session_id,
                    abandoned_at=at,
                )

    offset, size = 0, max(limit * RECOVERY_PAGE_PER_PERSON, 50)
    while len(found) < limit:
        page = list(walk[offset : offset + size])
        offset, size = offset + size, min(size * 2, RECOVERY_PAGE_MAX)
        if not page:
            take(pending)
            break
        merged: list[tuple[Any, ...]] = []
        for row in page:
            while pending and pending[0][:2] > (row[0], row[1]):
                merged.append(pending.pop(0))
            merged.append(row)
        take(merged)
    return list(found.values())


@dataclass(frozen=True, slots=True)
class CohortRow:
    cohort_week: date
    size: int
    # active[i]: cohort members with a session i weeks after their first week.
    active: list[int]
    retention: list[float]


@dataclass(frozen=True, slots=True)
class Retention:
    rows: list[CohortRow]
    start: date
    end: date


def retention_get(*, query: Query) -> Retention:
    """Weekly cohorts of new visitors and how many of them came back i weeks later.

    A cohort is the people first seen in a week (Monday first) of the period; `active[i]` counts
    those of them with an event in the period i weeks after the cohort's week.
    """
    period = query.period
    weeks_new: dict[date, list[Any]] = defaultdict(list)
    weeks_active: dict[date, list[Any]] = defaultdict(list)
    daily, new = _daily_visitor_sets(query)
    for day, bitmap in daily.items():
        week = day - timedelta(days=day.weekday())
        weeks_active[week].append(bitmap)
        if day in new:
            weeks_new[week].append(new[day])
    active_by_week = {week: ids_union(bitmaps) for week, bitmaps in weeks_active.items()}
    last_week = period.last - timedelta(days=period.last.weekday())
    rows = []
    for week, bitmaps in sorted(weeks_new.items()):
        cohort = ids_union(bitmaps)
        if not cohort:
            continue
        active = []
        later = week
        while later <= last_week:
            active.append(
                cohort.intersection_cardinality(active_by_week[later])
                if later in active_by_week
                else 0
            )
            later += timedelta(days=7)
        while active and not active[-1]:
            active.pop()
        rows.append(
            CohortRow(
                cohort_week=week,
                size=active[0],
                active=active,
                retention=[_ratio(n, active[0]) for n in active],
            )
        )
    return Retention(rows=rows, start=period.first, end=period.last)


@dataclass(frozen=True, slots=True)
class CountryRow:
    country: str
    sessions: int
    converted_sessions: int
    conversion: float


@dataclass(frozen=True, slots=True)
class Geography:
    rows: list[CountryRow]
    start: date
    end: date


def geography_get(*, query: Query) -> Geography:
    rows = (
        _rollups(query, by_dimension=True)
        .values("country")
        .annotate(n=Sum("session_count"), converted=Sum("converted_session_count"))
        .order_by("-n", "country")
    )
    return Geography(
        rows=[
            CountryRow(
                country=row["country"],
                sessions=row["n"],
                converted_sessions=row["converted"],
                conversion=_ratio(row["converted"], row["n"]),
            )
            for row in rows
        ],
        start=query.period.first,
        end=query.period.last,
    )


@dataclass(frozen=True, slots=True)
class LiveEvent:
    id: int
    type: str
    occurred_at: datetime
    anonymous_id: str
    user_id: str
    url: str
    product_id: str
    product_name: str
    country: str


@dataclass(frozen=True, slots=True)
class Live:
    rows: list[LiveEvent]
    last_id: int


def live_get(*, shop: Shop, since_id: int, limit: int) -> Live:
    """The newest events after `since_id` (at most `limit`), oldest first by event time.

    "Newest" is by arrival (`id`), the cursor the stream polls with; within the answer the rows
    are ordered by `occurred_at` (then id), since a batch can carry events out of time order.
    `last_id` is the highest id returned, whatever its position.
    """
    fields = list(LiveEvent.__dataclass_fields__)
    rows = list(
        Event.objects.using(analytics_db())
        .filter(shop_id=shop.pk, id__gt=since_id)
        .order_by("-id")
        .values_list(*fields)[:limit]
    )
    events = sorted((LiveEvent(*row) for row in rows), key=lambda e: (e.occurred_at, e.id))
    return Live(rows=events, last_id=max((e.id for e in events), default=since_id))


@dataclass(frozen=True, slots=True)
class Insights:
    findings: list[str]
    peak_hour: int | None
    peak_weekday: str | None
    most_abandoned_product: str | None
    best_source: str | None
    revenue_change: float | None
    start: date
    end: date


def insights_get(*, query: Query) -> Insights:
    peak_hour, peak_weekday = _peaks(_heat_map(_hourly_sessions(query), query.period.tz))
    top_abandoned = _top_products_by(query, order_by="abandoned_carts", limit=1)
    sources = [
        row
        for row in _rollups(query, by_dimension=True)
        .exclude(utm_source="")
        .values("utm_source")
        .annotate(n=Sum("session_count"), converted=Sum("converted_session_count"))
        if row["n"]
    ]
    best = max(sources, key=lambda r: (r["converted"] / r["n"], r["n"]), default=None)
    now = _revenue_totals(shop=query.shop, start=query.period.start, end=query.period.end)
    previous_period = query.period.previous()
    before = _revenue_totals(shop=query.shop, start=previous_period.start, end=previous_period.end)
    change = (
        round(float((now["revenue"] - before["revenue"]) / before["revenue"]), 6)
        if before["revenue"]
        else None
    )
    findings = []
    if peak_hour is not None:
        findings.append(f"Traffic peaks at {peak_hour:02d}:00 and on {peak_weekday}s.")
    abandoned = top_abandoned[0] if top_abandoned and top_abandoned[0].abandoned_carts else None
    if abandoned:
        findings.append(
            f"The most abandoned product is {abandoned.product_name or abandoned.product_id} "
            f"({abandoned.abandoned_carts} carts left without a purchase)."
        )
    if best:
        findings.append(
            f"{best['utm_source']} converts best: {best['converted']} of {best['n']} sessions "
            f"({_ratio(best['converted'], best['n']):.1%})."
        )
    if change is not None:
        direction = "up" if change >= 0 else "down"
        findings.append(
            f"Revenue is {direction} {abs(change):.1%} on the previous {query.period.days} days "
            f"({_money(now['revenue'])} vs {_money(before['revenue'])})."
        )
    return Insights(
        findings=findings,
        peak_hour=peak_hour,
        peak_weekday=peak_weekday,
        most_abandoned_product=abandoned.product_id if abandoned else None,
        best_source=best["utm_source"] if best else None,
        revenue_change=change,
        start=query.period.first,
        end=query.period.last,
    )
