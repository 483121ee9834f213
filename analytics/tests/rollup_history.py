"""Synthetic rollup history for detection tests: detection reads rollups, not the raw log, so
weeks of history are written straight into the rollup tables (as the bench does at scale)."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from analytics.models import DailyRollup, HourlyRevenue, HourlyRollup
from analytics.tests.factories import OrderFactory
from events.models import PipelineJob, PipelineWatermark


def rollup_history_write(
    shop,
    *,
    end: datetime,
    weeks: int = 6,
    sessions: int = 10,
    pageviews: int = 30,
    orders: int = 1,
    order_value: str = "50.00",
    skip_from: datetime | None = None,
) -> None:
    """Flat hourly history (a UTC shop) of `weeks` weeks up to the hour `end`, with the daily
    rows that sum it; hours from `skip_from` on are left for the test (or the pipeline) to fill.
    Also `orders` orders a day for the order detector's reference."""
    start = end - timedelta(weeks=weeks)
    hours = []
    at = start
    while at < end and (skip_from is None or at < skip_from):
        hours.append(at)
        at += timedelta(hours=1)
    HourlyRollup.objects.bulk_create(
        HourlyRollup(
            shop=shop,
            is_total=True,
            hour=hour,
            session_count=sessions,
            converted_session_count=1,
            pageview_count=pageviews,
        )
        for hour in hours
    )
    HourlyRevenue.objects.bulk_create(
        HourlyRevenue(
            shop=shop, hour=hour, order_count=orders, order_total=Decimal(order_value) * orders
        )
        for hour in hours
    )
    days = sorted({hour.date() for hour in hours})
    per_day = {day: sum(1 for hour in hours if hour.date() == day) for day in days}
    DailyRollup.objects.bulk_create(
        DailyRollup(
            shop=shop,
            is_total=True,
            day=day,
            session_count=sessions * count,
            converted_session_count=count,
            pageview_count=pageviews * count,
        )
        for day, count in per_day.items()
    )
    for index, day in enumerate(days[-40:]):
        OrderFactory(
            shop=shop,
            order_id=f"hist-{index}",
            placed_at=datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
            # Spread like real orders (0.5× to 2× the usual), so the robust z has a real scale.
            total=Decimal(order_value)
            * Decimal(2 ** ((index % 9 - 4) / 4)).quantize(Decimal("0.01")),
        )
    # The rollups above already count these orders: a refresh must not recompute their days
    # from a log that has none of the synthetic sessions.
    PipelineWatermark.objects.update_or_create(
        job=PipelineJob.ANALYTICS_ORDERS,
        shop=shop,
        defaults={"position": int(time.time() * 1e6) + 1},
    )


def hour_set(shop, hour: datetime, **counts) -> None:
    """Write (or overwrite) one hour's totals row."""
    HourlyRollup.objects.update_or_create(
        shop=shop,
        is_total=True,
        hour=hour,
        utm_source="",
        device="",
        country="",
        defaults=counts,
    )
