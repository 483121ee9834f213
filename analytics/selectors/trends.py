"""Series per hour, day, week or month, and the weekday × hour heat map of sessions."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models.functions import TruncHour

from analytics.bitmaps import ids_union
from analytics.models import HourlyRevenue
from analytics.periods import local_date
from analytics.selectors.query import Query
from analytics.selectors.rollups import daily_visitors, hourly_rollups
from clickserver.db_routers import analytics_db
from clickserver.money import money_format
from events.models import Session

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


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


def hourly_sessions(query: Query) -> list[tuple[datetime, int]]:
    """Sessions started per UTC hour of the period (several dimension rows per hour if filtered)."""
    return list(hourly_rollups(query).values_list("hour", "session_count"))


def heat_map(hourly: list[tuple[datetime, int]], tz) -> list[list[int]]:
    """heat[weekday][hour]: sessions by local weekday (0 = Monday) and hour of day."""
    heat = [[0] * 24 for _ in range(7)]
    for hour, sessions in hourly:
        local = hour.astimezone(tz)
        heat[local.weekday()][local.hour] += sessions
    return heat


def peaks(heat: list[list[int]]) -> tuple[int | None, str | None]:
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
    hourly = hourly_sessions(query)
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
            revenue=money_format(value["revenue"]),
        )
        for bucket, value in sorted(points.items())
    ]
    heat = heat_map(hourly, query.period.tz)
    peak_hour, peak_weekday = peaks(heat)
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
        for day, bitmap in daily_visitors(query).items():
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
