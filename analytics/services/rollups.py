"""Filling and rebuilding the rollup tables: which local days to recompute, and recomputing them.

Rollups are derived: a local day touched by new data is deleted and recomputed whole (its hours,
its visitors and its products), so late events land in the right bucket and reruns are harmless.
Progress is kept in a shop's `PipelineWatermark` rows of the jobs `analytics` (Event.id),
`analytics-orders` (Order.updated_at in microseconds) and `analytics-refunds` (Refund.id).
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Count, Max, Min, QuerySet
from django.db.models.functions import TruncHour

from analytics.cache import rollups_generation_bump
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
from analytics.periods import HOUR, MICROSECOND, Period, day_runs, hour_ceil, hour_floor, local_date
from analytics.selectors.bots import bot_people_excluded
from analytics.services.counts import daily_rollups_recompute, hourly_rollups_recompute
from analytics.services.paths import paths_recompute
from analytics.services.products import product_months_recompute, products_recompute
from analytics.services.revenue import revenue_recompute
from analytics.services.visitors import visitors_recompute
from events.models import Event, Order, PipelineJob, PipelineWatermark, Refund, Session, Shop

# Rebuilds go a month at a time so memory stays bounded on large shops.
REBUILD_CHUNK_DAYS = 31


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


def _event_hours(new_events: QuerySet[Event]) -> set[datetime]:
    """The UTC hours of these events and of their sessions' starts."""
    # Distinct hours, not every timestamp: a large batch touches few hours.
    hours = _hours_of(new_events, "occurred_at")
    # A late event can move its session's start into another day.
    hours.update(
        _hours_of(
            Session.objects.filter(id__in=new_events.exclude(session=None).values("session_id")),
            "started_at",
        )
    )
    return hours


def rollups_refresh(*, shop_id: int, now: datetime) -> RefreshResult:
    """Recompute the local days touched by events, orders and refunds since the watermarks."""
    shop = Shop.objects.get(pk=shop_id)
    tz = ZoneInfo(shop.timezone)
    with transaction.atomic():
        events_mark = _watermark(PipelineJob.ANALYTICS, shop_id)
        orders_mark = _watermark(PipelineJob.ANALYTICS_ORDERS, shop_id)
        refunds_mark = _watermark(PipelineJob.ANALYTICS_REFUNDS, shop_id)
        upto = _events_processed_position(shop_id)
        new_events = Event.objects.filter(
            shop_id=shop_id, id__gt=events_mark.position, id__lte=upto
        )
        event_stats = new_events.aggregate(n=Count("id"))
        touched = _event_hours(new_events)
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
    # Tagged bots, when the shop excludes them: one indexed read per batch of days, then each
    # service skips their sessions and events in memory or in its one query. Orders and
    # revenue stay: a Shopify order is money whoever browsed.
    excluded = bot_people_excluded(shop_id=shop_id)
    hourly_rollups_recompute(shop_id=shop_id, start=hours_start, end=hours_end, excluded=excluded)
    daily_rollups_recompute(shop_id=shop_id, start=hours_start, end=hours_end, tz=period.tz)
    revenue_recompute(shop_id=shop_id, start=hours_start, end=hours_end)
    paths_recompute(
        shop_id=shop_id, start=hours_start, end=hours_end, period=period, excluded=excluded
    )
    visitors_recompute(shop_id=shop_id, period=period, excluded=excluded)
    products_recompute(shop_id=shop_id, period=period, excluded=excluded)
    product_months_recompute(shop_id=shop_id, period=period)
