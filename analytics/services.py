"""Every write of the analytics app: filling and rebuilding the rollup tables.

Rollups are derived: a local day touched by new data is deleted and recomputed whole (its hours,
its visitors and its products), so late events land in the right bucket and reruns are harmless.
Progress is kept in a shop's `PipelineWatermark` rows of the jobs `analytics` (Event.id),
`analytics-orders` (Order.updated_at in microseconds) and `analytics-refunds` (Refund.id).
"""

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from django.core.cache import cache
from django.db import connection, models, transaction
from django.db.models import BigIntegerField, Count, F, Func, Max, Min, Sum
from django.db.models.functions import TruncHour

from analytics.bitmaps import ids_pack
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
from analytics.periods import (
    HOUR,
    Period,
    day_runs,
    hour_ceil,
    hour_floor,
    local_date,
    local_midnight,
)
from analytics.session_arrays import PackSession, paths_pack
from clickserver.chunking import chunks
from events.models import (
    Event,
    Order,
    OrderLine,
    PipelineJob,
    PipelineWatermark,
    Refund,
    Session,
    Shop,
)

EVENT_COUNT_FIELDS = {
    "page_view": "pageview_count",
    "product_view": "product_view_count",
    "add_to_cart": "add_to_cart_count",
    "checkout_started": "checkout_count",
    "purchase": "purchase_count",
}
ROLLUP_COUNTS = (
    "session_count",
    "converted_session_count",
    "bounce_count",
    "cart_session_count",
    "abandoned_session_count",
    "abandoned_value",
    "pageview_count",
    "product_view_count",
    "add_to_cart_count",
    "checkout_count",
    "purchase_count",
)
CART_TYPES = ("add_to_cart", "checkout_started")
PRODUCT_TYPES = ("product_view", "add_to_cart", "purchase")
# A session lasts at most 24 h after its start (plus the inactivity timeout of its last event),
# so its events lie within this much of its start.
SESSION_SPAN = timedelta(hours=25)
# Rebuilds go a month at a time so memory stays bounded on large shops.
REBUILD_CHUNK_DAYS = 31
GENERATION_KEY = "analytics:generation:{shop_id}"
INSERT_BATCH = 2000
MICROSECOND = timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PRODUCT_SUMS = (
    "view_count",
    "cart_count",
    "abandoned_cart_count",
    "purchase_count",
    "order_count",
    "units",
    "revenue",
)


class EpochMicroseconds(Func):
    """Microseconds since 1970 of a UTC datetime column, computed by the database."""

    output_field = BigIntegerField()

    def as_mysql(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            template="TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', %(expressions)s)",
            **extra_context,
        )

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            # Exact: whole seconds from strftime, microseconds from the stored text
            # ('YYYY-MM-DD HH:MM:SS.ffffff', no fraction when it is 0). julianday() is a double
            # of days and drifts by tens of microseconds. '%%%%s' survives both the template's
            # and the SQLite backend's %-formatting as strftime's '%s'.
            template=(
                "(CAST(strftime('%%%%s', %(expressions)s) AS INTEGER) * 1000000"
                " + CAST(substr(%(expressions)s, 21, 6) AS INTEGER))"
            ),
            **extra_context,
        )


def _rows_insert(model: type[models.Model], rows: Iterable[Mapping[str, Any]]) -> None:
    """Multi-row INSERTs of plain dicts (field name → value; missing fields take their default).

    `bulk_create` builds a model instance and prepares every value through its field; rollup
    rebuilds write hundreds of thousands of rows, where that costs more than the database does.
    """
    fields = [f for f in model._meta.concrete_fields if not f.primary_key or f.is_relation]
    ops = connection.ops
    adapt = {
        f.attname: ops.adapt_datetimefield_value
        if isinstance(f, models.DateTimeField)
        else ops.adapt_datefield_value
        if isinstance(f, models.DateField)
        else None
        for f in fields
    }
    defaults = {f.attname: f.get_default() for f in fields}
    columns = ", ".join(ops.quote_name(str(f.column)) for f in fields)
    sql = (
        f"INSERT INTO {ops.quote_name(model._meta.db_table)} ({columns}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    batch: list[tuple] = []
    with connection.cursor() as cursor:
        for row in rows:
            values = []
            for name, default in defaults.items():
                value = row.get(name, default)
                adapter = adapt[name]
                if value is not None and adapter is not None:
                    value = adapter(value)
                values.append(value)
            batch.append(tuple(values))
            if len(batch) == INSERT_BATCH:
                cursor.executemany(sql, batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)


def rollups_generation(*, shop_id: int) -> int:
    """The shop's rollup generation, part of every cache key; a bump retires all cached answers.

    A generation lost from the cache restarts at the clock in nanoseconds, which is never a value
    handed out before, so a cache eviction cannot bring back an older answer.
    """
    key = GENERATION_KEY.format(shop_id=shop_id)
    generation = cache.get(key)
    if generation is None:
        generation = time.time_ns()
        cache.add(key, generation, timeout=None)
        generation = cache.get(key, generation)
    return generation


def rollups_generation_bump(*, shop_id: int) -> None:
    cache.set(GENERATION_KEY.format(shop_id=shop_id), time.time_ns(), timeout=None)


@dataclass(frozen=True, slots=True)
class RefreshResult:
    events: int
    orders: int
    refunds: int
    days: int


def _watermark(job: PipelineJob, shop_id: int) -> PipelineWatermark:
    PipelineWatermark.objects.get_or_create(job=job, shop_id=shop_id)
    return PipelineWatermark.objects.select_for_update().get(job=job, shop_id=shop_id)


def _events_processed_position(shop_id: int) -> int:
    """Events up to here have their session assigned by the pipeline.

    Without a pipeline watermark (nothing has run the pipeline for this shop) every stored
    event counts as processed.
    """
    position = (
        PipelineWatermark.objects.filter(job=PipelineJob.EVENTS, shop_id=shop_id)
        .values_list("position", flat=True)
        .first()
    )
    if position is not None:
        return position
    return Event.objects.filter(shop_id=shop_id).aggregate(top=Max("id"))["top"] or 0


def _hours_of(rows, column: str) -> set[datetime]:
    hours = rows.annotate(hour=TruncHour(column, tzinfo=UTC)).values_list("hour", flat=True)
    return {hour.astimezone(UTC) for hour in hours.distinct()}


def rollups_refresh(*, shop_id: int, now: datetime) -> RefreshResult:
    """Recompute the local days touched by events, orders and refunds since the watermarks."""
    shop = Shop.objects.get(pk=shop_id)
    tz = ZoneInfo(shop.timezone)
    with transaction.atomic():
        events_mark = _watermark(PipelineJob.ANALYTICS, shop_id)
        orders_mark = _watermark(PipelineJob.ANALYTICS_ORDERS, shop_id)
        refunds_mark = _watermark(PipelineJob.ANALYTICS_REFUNDS, shop_id)
        upto = _events_processed_position(shop_id)
        touched: set[datetime] = set()

        new_events = Event.objects.filter(
            shop_id=shop_id, id__gt=events_mark.position, id__lte=upto
        )
        event_stats = new_events.aggregate(n=Count("id"))
        # Distinct hours, not every timestamp: a large batch touches few hours.
        touched.update(_hours_of(new_events, "occurred_at"))
        # A late event can move its session's start into another day.
        touched.update(
            _hours_of(
                Session.objects.filter(
                    id__in=new_events.exclude(session=None).values("session_id")
                ),
                "started_at",
            )
        )

        since = datetime.fromtimestamp(orders_mark.position / 1e6, tz=UTC)
        changed_orders = list(
            Order.objects.filter(shop_id=shop_id, updated_at__gt=since).values_list(
                "placed_at", "updated_at"
            )
        )
        touched.update(placed for placed, _ in changed_orders)
        new_refunds = list(
            Refund.objects.filter(shop_id=shop_id, id__gt=refunds_mark.position).values_list(
                "id", "refunded_at"
            )
        )
        touched.update(refunded for _, refunded in new_refunds)

        days = {local_date(moment, tz) for moment in touched}
        # An hour can straddle two local days where the offset is not a whole hour.
        days |= {local_date(moment + HOUR - MICROSECOND, tz) for moment in touched}
        for first, last in day_runs(days):
            _days_recompute(shop_id=shop_id, period=Period(first=first, last=last, tz=tz))

        events_mark.position = max(events_mark.position, upto)
        events_mark.save(update_fields=["position", "updated_at"])
        if changed_orders:
            newest = max(updated for _, updated in changed_orders)
            orders_mark.position = int(newest.timestamp() * 1e6)
            orders_mark.save(update_fields=["position", "updated_at"])
        if new_refunds:
            refunds_mark.position = max(refund_id for refund_id, _ in new_refunds)
            refunds_mark.save(update_fields=["position", "updated_at"])
        if days:
            transaction.on_commit(lambda: rollups_generation_bump(shop_id=shop_id))
    return RefreshResult(
        events=event_stats["n"],
        orders=len(changed_orders),
        refunds=len(new_refunds),
        days=len(days),
    )


@dataclass(frozen=True, slots=True)
class RebuildResult:
    days: int


def rollups_rebuild(*, shop_id: int, now: datetime) -> RebuildResult:
    """Drop every rollup of the shop and recompute all days that hold data, a month at a time.

    The watermarks are set to the current ends first, so data arriving during the rebuild is
    picked up by the next refresh (recomputing a day twice is harmless).
    """
    with transaction.atomic():
        for model in (
            HourlyRollup,
            DailyRollup,
            DailySessionPaths,
            HourlyRevenue,
            DailyVisitors,
            ProductDailyRollup,
            ProductMonthlyRollup,
            SessionPath,
        ):
            model.objects.filter(shop_id=shop_id).delete()
        newest_order = Order.objects.filter(shop_id=shop_id).aggregate(m=Max("updated_at"))["m"]
        positions = {
            PipelineJob.ANALYTICS: _events_processed_position(shop_id),
            PipelineJob.ANALYTICS_ORDERS: int(newest_order.timestamp() * 1e6)
            if newest_order
            else 0,
            PipelineJob.ANALYTICS_REFUNDS: Refund.objects.filter(shop_id=shop_id).aggregate(
                m=Max("id")
            )["m"]
            or 0,
        }
        for job, position in positions.items():
            PipelineWatermark.objects.update_or_create(
                job=job, shop_id=shop_id, defaults={"position": position}
            )
    shop = Shop.objects.get(pk=shop_id)
    tz = ZoneInfo(shop.timezone)
    bounds = [
        Event.objects.filter(shop_id=shop_id).aggregate(a=Min("occurred_at"), b=Max("occurred_at")),
        Order.objects.filter(shop_id=shop_id).aggregate(a=Min("placed_at"), b=Max("placed_at")),
        Refund.objects.filter(shop_id=shop_id).aggregate(
            a=Min("refunded_at"), b=Max("refunded_at")
        ),
    ]
    moments = [value for bound in bounds for value in bound.values() if value is not None]
    days = 0
    if moments:
        first, last = local_date(min(moments), tz), local_date(max(moments), tz)
        days = (last - first).days + 1
        while first <= last:
            chunk_last = min(last, first + timedelta(days=REBUILD_CHUNK_DAYS - 1))
            with transaction.atomic():
                _days_recompute(shop_id=shop_id, period=Period(first=first, last=chunk_last, tz=tz))
            first = chunk_last + timedelta(days=1)
    rollups_generation_bump(shop_id=shop_id)
    return RebuildResult(days=days)


def rollups_days_recompute(*, shop_id: int, days: list[date] | None, now: datetime) -> int:
    """Recompute these local days (all of them when `days` is None); returns how many.

    For data that left the log (an erasure): the watermarks see only what arrived, so the days
    that held the removed rows are named here instead.
    """
    if days is None:
        return rollups_rebuild(shop_id=shop_id, now=now).days
    tz = ZoneInfo(Shop.objects.get(pk=shop_id).timezone)
    for first, last in day_runs(days):
        with transaction.atomic():
            _days_recompute(shop_id=shop_id, period=Period(first=first, last=last, tz=tz))
    if days:
        rollups_generation_bump(shop_id=shop_id)
    return len(set(days))


def _days_recompute(*, shop_id: int, period: Period) -> None:
    """Replace all rollups of these local days (and the UTC hours that overlap them)."""
    hours_start, hours_end = hour_floor(period.start), hour_ceil(period.end)
    _hours_recompute(shop_id=shop_id, start=hours_start, end=hours_end)
    _daily_rollups_recompute(shop_id=shop_id, start=hours_start, end=hours_end, tz=period.tz)
    _revenue_recompute(shop_id=shop_id, start=hours_start, end=hours_end)
    _paths_recompute(shop_id=shop_id, start=hours_start, end=hours_end, period=period)
    _visitors_recompute(shop_id=shop_id, period=period)
    _products_recompute(shop_id=shop_id, period=period)
    _product_months_recompute(shop_id=shop_id, period=period)


def _hours_recompute(*, shop_id: int, start: datetime, end: datetime) -> None:
    buckets: dict[tuple, dict[str, int | Decimal]] = defaultdict(lambda: defaultdict(int))
    sessions = {
        row[0]: row[1:]
        for row in Session.objects.filter(
            shop_id=shop_id, started_at__gte=start, started_at__lt=end
        ).values_list("id", "started_at", "utm_source", "device", "country", "is_bounce")
    }
    purchased: set[int] = set()
    carts: dict[int, Decimal] = defaultdict(Decimal)
    for session_id, kind, price, quantity in _session_flag_events(
        shop_id=shop_id, start=start, end=end
    ):
        if session_id not in sessions:
            continue
        if kind == "purchase":
            purchased.add(session_id)
        else:
            carts[session_id] += (price or Decimal(0)) * (quantity or 1)
    for session_id, (started_at, source, device, country, is_bounce) in sessions.items():
        bucket = buckets[(hour_floor(started_at), source, device, country)]
        bucket["session_count"] += 1
        bucket["bounce_count"] += int(is_bounce)
        # Converted means a purchase event in the session, the same test the funnel makes.
        bucket["converted_session_count"] += int(session_id in purchased)
        if session_id in carts:
            bucket["cart_session_count"] += 1
            if session_id not in purchased:
                bucket["abandoned_session_count"] += 1
                bucket["abandoned_value"] += carts[session_id]

    counts = (
        Event.objects.filter(
            shop_id=shop_id,
            occurred_at__gte=start,
            occurred_at__lt=end,
            type__in=list(EVENT_COUNT_FIELDS),
        )
        .annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
        .values("hour", "type", "session__utm_source", "session__device", "session__country")
        .annotate(n=Count("id"))
    )
    for row in counts:
        key = (
            row["hour"].astimezone(UTC),
            row["session__utm_source"] or "",
            row["session__device"] or "",
            row["session__country"] or "",
        )
        buckets[key][EVENT_COUNT_FIELDS[row["type"]]] += row["n"]

    totals: dict[datetime, dict[str, int | Decimal]] = defaultdict(lambda: defaultdict(int))
    for (hour, *_), values in buckets.items():
        for name, value in values.items():
            totals[hour][name] += value
    HourlyRollup.objects.filter(shop_id=shop_id, hour__gte=start, hour__lt=end).delete()
    _rows_insert(
        HourlyRollup,
        [
            {
                "shop_id": shop_id,
                "hour": hour,
                "utm_source": source,
                "device": device,
                "country": country,
                **values,
            }
            for (hour, source, device, country), values in buckets.items()
        ]
        + [
            {"shop_id": shop_id, "hour": hour, "is_total": True, **values}
            for hour, values in totals.items()
        ],
    )


def _daily_rollups_recompute(*, shop_id: int, start: datetime, end: datetime, tz) -> None:
    """Re-sum the local days that the recomputed hours `[start, end)` belong to.

    An hour belongs to the local day it starts in, the same rule as `hour >= period.start` on the
    hourly table, so a day row always equals the sum of that day's hourly rows.
    """
    first, last = local_date(start, tz), local_date(end - MICROSECOND, tz)
    days: dict[tuple, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for row in HourlyRollup.objects.filter(
        shop_id=shop_id,
        hour__gte=local_midnight(first, tz),
        hour__lt=local_midnight(last + timedelta(days=1), tz),
    ).values("hour", "is_total", "utm_source", "device", "country", *ROLLUP_COUNTS):
        key = (
            local_date(row["hour"], tz),
            row["is_total"],
            row["utm_source"],
            row["device"],
            row["country"],
        )
        bucket = days[key]
        for name in ROLLUP_COUNTS:
            bucket[name] += row[name]
    DailyRollup.objects.filter(shop_id=shop_id, day__gte=first, day__lte=last).delete()
    _rows_insert(
        DailyRollup,
        (
            {
                "shop_id": shop_id,
                "day": day,
                "is_total": is_total,
                "utm_source": source,
                "device": device,
                "country": country,
                **values,
            }
            for (day, is_total, source, device, country), values in days.items()
        ),
    )


def _session_flag_events(*, shop_id: int, start: datetime, end: datetime):
    """Cart and purchase events that can belong to sessions started in `[start, end)`."""
    return Event.objects.filter(
        shop_id=shop_id,
        type__in=(*CART_TYPES, "purchase"),
        occurred_at__gte=start,
        occurred_at__lt=end + SESSION_SPAN,
    ).values_list("session_id", "type", "product_price", "product_quantity")


def _revenue_recompute(*, shop_id: int, start: datetime, end: datetime) -> None:
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
    _rows_insert(
        HourlyRevenue,
        ({"shop_id": shop_id, "hour": hour, **values} for hour, values in buckets.items()),
    )


def _visitors_recompute(*, shop_id: int, period: Period) -> None:
    """Persons with at least one event on each local day (SPEC's visitor definition)."""
    visitors: dict[date, set[int]] = defaultdict(set)
    new: dict[date, set[int]] = defaultdict(set)
    # Distinct (UTC hour, person) in SQL keeps the rows near the session count, not the events.
    for hour, person_id, first_seen_at in (
        Event.objects.filter(
            shop_id=shop_id, occurred_at__gte=period.start, occurred_at__lt=period.end
        )
        .exclude(person=None)
        .annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
        .values_list("hour", "person_id", "person__first_seen_at")
        .distinct()
    ):
        day = _day_of(hour, period)
        visitors[day].add(person_id)
        if local_date(first_seen_at, period.tz) == day:
            new[day].add(person_id)
    DailyVisitors.objects.filter(
        shop_id=shop_id, day__gte=period.first, day__lte=period.last
    ).delete()
    _rows_insert(
        DailyVisitors,
        (
            {
                "shop_id": shop_id,
                "day": day,
                "visitor_count": len(people),
                "new_count": len(new[day]),
                "visitors": ids_pack(people),
                "new": ids_pack(new[day]),
            }
            for day, people in visitors.items()
        ),
    )


def _product_sums(row: Mapping[str, Any]) -> dict[str, Any]:
    """The summed counts of one aggregated row, by ProductCounts field name."""
    return {name: row[f"sum_{name}"] for name in PRODUCT_SUMS}


def _products_recompute(*, shop_id: int, period: Period) -> None:
    # Counts, units and revenue per (day, product), plus the product's name.
    rows: dict[tuple[date, str], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    field = {
        "product_view": "view_count",
        "add_to_cart": "cart_count",
        "purchase": "purchase_count",
    }
    in_period = Event.objects.filter(
        shop_id=shop_id,
        occurred_at__gte=period.start,
        occurred_at__lt=period.end,
        type__in=PRODUCT_TYPES,
    ).exclude(product_id="")
    # Grouping by UTC hour in SQL keeps the row count small and the query timezone-free.
    for row in (
        in_period.annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
        .values("hour", "type", "product_id")
        .annotate(n=Count("id"), name=Max("product_name"))
    ):
        bucket = rows[(_day_of(row["hour"], period), row["product_id"])]
        bucket[field[row["type"]]] += row["n"]
        if row["name"]:
            bucket["product_name"] = row["name"]
    # Carts of sessions that never purchased. A session's events lie within SESSION_SPAN of its
    # start, so its purchase, if any, lies within SESSION_SPAN of each of its carts.
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
            rows[(_day_of(hour, period), product_id)]["abandoned_cart_count"] += n
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
        bucket = rows[(_day_of(line["hour"], period), line["product_id"])]
        bucket["order_count"] += line["orders"]
        bucket["units"] += line["units"] or 0
        bucket["revenue"] += line["revenue"] or Decimal(0)
        if line["name"] and not bucket.get("product_name"):
            bucket["product_name"] = line["name"][:255]
    ProductDailyRollup.objects.filter(
        shop_id=shop_id, day__gte=period.first, day__lte=period.last
    ).delete()
    _rows_insert(
        ProductDailyRollup,
        (
            {"shop_id": shop_id, "day": day, "product_id": product_id, **values}
            for (day, product_id), values in rows.items()
        ),
    )


def _day_of(hour: datetime, period: Period) -> date:
    """The local day of an hour bucket; an hour straddling the period start counts in it."""
    return local_date(max(hour, period.start), period.tz)


def _paths_recompute(*, shop_id: int, start: datetime, end: datetime, period: Period) -> None:
    """One `SessionPath` per session started in `[start, end)`: its events in funnel order; and
    the `DailySessionPaths` of the period's days from the same events."""
    in_range = Session.objects.filter(shop_id=shop_id, started_at__gte=start, started_at__lt=end)
    sessions = {
        row[0]: row[1:]
        for row in in_range.values_list(
            "id", "started_at", "person_id", "utm_source", "device", "country"
        )
    }
    events: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    for session_id, at, event_id, kind in (
        Event.objects.filter(
            shop_id=shop_id,
            occurred_at__gte=start,
            occurred_at__lt=end + SESSION_SPAN,
            session_id__isnull=False,
        )
        .annotate(at=EpochMicroseconds("occurred_at"))
        .values_list("session_id", "at", "id", "type")
    ):
        if session_id in sessions:
            events[session_id].append((at, event_id, kind))
    paths: list[dict[str, Any]] = []
    for session_id, items in events.items():
        items.sort()
        started_at, person_id, source, device, country = sessions[session_id]
        first = items[0][0]
        kinds = [kind for _, _, kind in items]
        ties = [i for i in range(1, len(items)) if items[i][0] == items[i - 1][0]]
        carts = [(at, event_id) for at, event_id, kind in items if kind in CART_TYPES]
        last_cart = max(carts) if carts else None
        paths.append(
            {
                "session_id": session_id,
                "shop_id": shop_id,
                "started_at": started_at,
                "person_id": person_id,
                "utm_source": source,
                "device": device,
                "country": country,
                "first_at_us": first,
                "last_at_us": items[-1][0],
                "kinds": orjson.dumps(kinds).decode(),
                "offsets": orjson.dumps([at - first for at, _, _ in items]).decode(),
                "ties": orjson.dumps(ties).decode() if ties else "",
                "is_abandoned": bool(carts) and "purchase" not in kinds,
                "last_cart_at": EPOCH + timedelta(microseconds=last_cart[0]) if last_cart else None,
                "last_cart_event_id": last_cart[1] if last_cart else None,
            }
        )
    # A late event can move a session's start out of the range its old row lies in. Two
    # deletes, each on an index: one OR over a subquery made MariaDB scan every shop's paths.
    SessionPath.objects.filter(shop_id=shop_id, started_at__gte=start, started_at__lt=end).delete()
    for chunk in chunks(list(sessions), INSERT_BATCH):
        SessionPath.objects.filter(session_id__in=chunk).delete()
    _rows_insert(SessionPath, paths)

    by_day: dict[date, list[PackSession]] = defaultdict(list)
    for session_id, items in sorted(events.items()):
        started_at, _, source, device, country = sessions[session_id]
        if period.start <= started_at < period.end:
            day = local_date(started_at, period.tz)
            by_day[day].append(((source, device, country), [(at, kind) for at, _, kind in items]))
    DailySessionPaths.objects.filter(
        shop_id=shop_id, day__gte=period.first, day__lte=period.last
    ).delete()
    _rows_insert(
        DailySessionPaths,
        (
            {
                "shop_id": shop_id,
                "day": day,
                "session_count": len(day_sessions),
                "event_count": sum(len(items) for _, items in day_sessions),
                "data": paths_pack(day_sessions),
            }
            for day, day_sessions in by_day.items()
        ),
    )


def _month_starts(period: Period) -> list[date]:
    months, month = [], period.first.replace(day=1)
    while month <= period.last:
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return months


def _product_months_recompute(*, shop_id: int, period: Period) -> None:
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
    _rows_insert(ProductMonthlyRollup, rows)
