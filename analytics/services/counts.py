"""Hourly and daily session and event counts (`HourlyRollup`, `DailyRollup`)."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncHour

from analytics.models import CART_TYPES, ROLLUP_COUNTS, DailyRollup, HourlyRollup
from analytics.periods import MICROSECOND, SESSION_SPAN, hour_floor, local_date
from analytics.sql import rows_insert
from clickserver.params import local_midnight
from events.models import Event, Session

EVENT_COUNT_FIELDS = {
    "page_view": "pageview_count",
    "product_view": "product_view_count",
    "add_to_cart": "add_to_cart_count",
    "checkout_started": "checkout_count",
    "purchase": "purchase_count",
}


# (UTC hour, source, device, country) → rollup column → count or amount.
Buckets = dict[tuple, dict[str, int | Decimal]]


def hourly_rollups_recompute(
    *, shop_id: int, start: datetime, end: datetime, excluded: frozenset[int] = frozenset()
) -> None:
    """Replace the hourly rows of `[start, end)`: per dimension, and one total row per hour.

    `excluded`: person ids whose sessions and events are left out (tagged bots).
    """
    buckets: Buckets = defaultdict(lambda: defaultdict(int))
    _session_counts(buckets, shop_id=shop_id, start=start, end=end, excluded=excluded)
    _event_counts(buckets, shop_id=shop_id, start=start, end=end, excluded=excluded)
    totals: dict[datetime, dict[str, int | Decimal]] = defaultdict(lambda: defaultdict(int))
    for (hour, *_), values in buckets.items():
        for name, value in values.items():
            totals[hour][name] += value
    HourlyRollup.objects.filter(shop_id=shop_id, hour__gte=start, hour__lt=end).delete()
    rows_insert(
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


def _session_counts(
    buckets: Buckets, *, shop_id: int, start: datetime, end: datetime, excluded: frozenset[int]
) -> None:
    """Add the sessions started in `[start, end)` to the buckets of their start hour."""
    sessions = {
        row[0]: row[1:6]
        for row in Session.objects.filter(
            shop_id=shop_id, started_at__gte=start, started_at__lt=end
        ).values_list(
            "id", "started_at", "utm_source", "device", "country", "is_bounce", "person_id"
        )
        if row[6] not in excluded
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


def _event_counts(
    buckets: Buckets, *, shop_id: int, start: datetime, end: datetime, excluded: frozenset[int]
) -> None:
    """Add the events of `[start, end)` to the buckets of their hour and session's dimensions."""
    events = Event.objects.filter(
        shop_id=shop_id,
        occurred_at__gte=start,
        occurred_at__lt=end,
        type__in=list(EVENT_COUNT_FIELDS),
    )
    if excluded:
        events = events.exclude(person_id__in=sorted(excluded))
    counts = (
        events.annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
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


def daily_rollups_recompute(*, shop_id: int, start: datetime, end: datetime, tz) -> None:
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
    rows_insert(
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
