"""What detection reads: a shop's settings as detector configs, its series from the rollups,
its new orders since a watermark and its recent events for the bot detector.

Series come from the rollup tables (hourly and daily totals rows, hourly revenue), never from
the raw log, so judging a shop costs a few thousand rows whatever its event count.
"""

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from django.db.models import Count, F
from django.db.models.functions import TruncHour

from analytics.detectors.bots import BotConfig
from analytics.detectors.health import HealthConfig
from analytics.detectors.orders import OrderConfig
from analytics.detectors.seasonal import DAY, HOUR, SeasonalConfig
from analytics.models import (
    AnomalyKind,
    DailyRollup,
    DetectionSettings,
    DetectionState,
    HourlyRevenue,
    HourlyRollup,
)
from events.models import Event, Order, PipelineJob, PipelineWatermark, RejectedEvent, Shop

# The series detection judges, per hour and per day: name → (kind, label in the sentence).
SERIES = {
    "sessions": (AnomalyKind.TRAFFIC, "Sessions"),
    "events": (AnomalyKind.TRAFFIC, "Events"),
    "orders": (AnomalyKind.BUSINESS, "Orders"),
    "revenue": (AnomalyKind.BUSINESS, "Revenue"),
    "conversion_rate": (AnomalyKind.BUSINESS, "Visit conversion"),
}
FREQUENCY_SUFFIX = {HOUR: "hourly", DAY: "daily"}
# Every metric an anomaly (and so an alert rule) can name.
SERIES_METRICS = tuple(
    f"{name}_{suffix}" for suffix in FREQUENCY_SUFFIX.values() for name in SERIES
)
ORDER_METRIC = "order_value"
BOT_METRIC = "bot"
NETWORK_METRIC = "shared_network"
HEALTH_METRICS = ("rejected_share", "pipeline_lag", "eventless_day")
# Written by notifications' daily model check (kind `model`); listed here so rules and filters
# accept them (analytics must not import notifications).
MODEL_METRICS = ("model_roc_auc", "model_ece", "model_score_psi")
METRICS = (
    *SERIES_METRICS,
    ORDER_METRIC,
    BOT_METRIC,
    NETWORK_METRIC,
    *HEALTH_METRICS,
    *MODEL_METRICS,
)
# The events the rollups count by type; "events" is their sum (custom types are not rolled up).
EVENT_COLUMNS = (
    "pageview_count",
    "product_view_count",
    "add_to_cart_count",
    "checkout_count",
    "purchase_count",
)
# The seasonal baseline looks 8 weeks back, and pools ±3 slots: read 9 weeks.
HISTORY = timedelta(weeks=9)
# Orders that define "usual": the newest this many positive ones of the last 90 days.
ORDER_REFERENCE = 10_000
ORDER_REFERENCE_DAYS = 90
# Bots: the events read per run at most (the newest), and how far back a person's pace is seen.
BOT_EVENTS_CAP = 500_000
BOT_LOOKBACK = timedelta(hours=1)
CURRENCY_SYMBOLS = {"GBP": "£", "USD": "$", "EUR": "€", "JPY": "¥"}


@dataclass(frozen=True, slots=True)
class ShopDetection:
    """A shop's detector configs, built from its `DetectionSettings` (defaults without one)."""

    shop: Shop
    tz: ZoneInfo
    hourly: SeasonalConfig
    daily: SeasonalConfig
    orders: OrderConfig
    bots: BotConfig
    health: HealthConfig
    exclude_bots: bool
    exclude_shared_networks: bool


def currency_symbol(code: str) -> str:
    return CURRENCY_SYMBOLS.get(code.upper(), f"{code.upper()} " if code else "")


def detection_settings_get(*, shop: Shop) -> DetectionSettings:
    """The shop's settings row, or an unsaved one holding the defaults."""
    return DetectionSettings.objects.filter(shop=shop).first() or DetectionSettings(shop=shop)


def detection_settings_row(*, shop: Shop) -> dict[str, Any]:
    """The shop's settings as the API shows them (the defaults when it has no row)."""
    row = detection_settings_get(shop=shop)
    return {
        "shop": shop.domain,
        "hourly_threshold": row.hourly_threshold,
        "daily_threshold": row.daily_threshold,
        "min_history": row.min_history,
        "high_value_order": None if row.high_value_order is None else float(row.high_value_order),
        "order_threshold": row.order_threshold,
        "holidays": sorted(row.holidays),
        "exclude_bots": row.exclude_bots,
        "exclude_shared_networks": row.exclude_shared_networks,
        "updated_at": row.updated_at.isoformat() if row.pk and row.updated_at else None,
    }


def shop_detection_get(*, shop: Shop) -> ShopDetection:
    row = detection_settings_get(shop=shop)
    holidays = frozenset(date.fromisoformat(day) for day in row.holidays)
    return ShopDetection(
        shop=shop,
        tz=ZoneInfo(shop.timezone),
        hourly=SeasonalConfig(
            frequency=HOUR,
            threshold=row.hourly_threshold,
            min_history=row.min_history,
            holidays=holidays,
        ),
        daily=SeasonalConfig(
            frequency=DAY,
            threshold=row.daily_threshold,
            min_history=row.min_history,
            holidays=holidays,
        ),
        orders=OrderConfig(
            high_value=None if row.high_value_order is None else float(row.high_value_order),
            threshold=row.order_threshold,
            currency=currency_symbol(shop.currency),
        ),
        bots=BotConfig(),
        health=HealthConfig(holidays=holidays),
        exclude_bots=row.exclude_bots,
        exclude_shared_networks=row.exclude_shared_networks,
    )


def detection_state_get(*, shop_id: int) -> DetectionState:
    return DetectionState.objects.filter(shop_id=shop_id).first() or DetectionState(shop_id=shop_id)


def rollups_updated_at(*, shop_id: int) -> datetime | None:
    """When the shop's rollups last moved their watermark (what the sweep compares with)."""
    return (
        PipelineWatermark.objects.filter(job=PipelineJob.ANALYTICS, shop_id=shop_id)
        .values_list("updated_at", flat=True)
        .first()
    )


def _hour_index(start: datetime, end: datetime, tz: ZoneInfo) -> pd.DatetimeIndex:
    return pd.date_range(start, end, freq="h", inclusive="left", tz=UTC).tz_convert(tz)


def hourly_series_get(*, shop: Shop, start: datetime, end: datetime) -> pd.DataFrame:
    """Hourly sessions, events, orders, revenue and conversion rate over UTC hours [start, end),
    indexed by the hour's start in the shop's timezone.

    An hour without a rollup row is 0 from the shop's first rolled-up day on, and unknown (NaN)
    before it: a shop's first day is not a spike against weeks of zeros.
    """
    tz = ZoneInfo(shop.timezone)
    index = _hour_index(start, end, tz)
    # Built column-wise from the rows (one reindex each), not cell by cell: 1,500 `.loc`
    # writes were 90 % of a detection run.
    counts = _rows_frame(
        HourlyRollup.objects.filter(
            shop_id=shop.pk, is_total=True, hour__gte=start, hour__lt=end
        ).values_list("hour", "session_count", "converted_session_count", *EVENT_COLUMNS),
        columns=["at", "sessions", "converted", *EVENT_COLUMNS],
        tz=tz,
    )
    money = _rows_frame(
        HourlyRevenue.objects.filter(shop_id=shop.pk, hour__gte=start, hour__lt=end).values_list(
            "hour", "order_count", "order_total", "refund_total"
        ),
        columns=["at", "orders", "total", "refunds"],
        tz=tz,
    )
    frame = _counts_frame(counts, index=index)
    frame["orders"] = money["orders"].reindex(index).fillna(0.0)
    frame["revenue"] = (money["total"] - money["refunds"]).reindex(index).fillna(0.0)
    first = first_rollup_day(shop_id=shop.pk)
    return _before_first_unknown(frame, index=index, first=first)


def _rows_frame(rows, *, columns: list[str], tz: ZoneInfo | None) -> pd.DataFrame:
    """Rows keyed by their first column (UTC instants in `tz`, or dates), values as floats."""
    frame = pd.DataFrame(list(rows), columns=columns)
    at = pd.to_datetime(frame.pop("at"), utc=tz is not None)
    keys = pd.DatetimeIndex(at).tz_convert(tz) if tz is not None else pd.DatetimeIndex(at)
    return frame.astype(float).set_axis(keys)


def _counts_frame(counts: pd.DataFrame, *, index: pd.DatetimeIndex) -> pd.DataFrame:
    frame = pd.DataFrame(index=index)
    frame["sessions"] = counts["sessions"].reindex(index).fillna(0.0)
    frame["converted"] = counts["converted"].reindex(index).fillna(0.0)
    frame["events"] = counts[list(EVENT_COLUMNS)].sum(axis=1).reindex(index).fillna(0.0)
    return frame


def _before_first_unknown(
    frame: pd.DataFrame, *, index: pd.DatetimeIndex, first: date | None
) -> pd.DataFrame:
    """Conversion rate from the counts; every series NaN before the shop's first day."""
    sessions = frame["sessions"]
    frame["conversion_rate"] = frame["converted"] / sessions.where(sessions > 0)
    frame = frame[list(SERIES)].copy()
    if first is None:
        frame[:] = np.nan
    else:
        frame.loc[np.asarray(index.date < first)] = np.nan
    return frame


def daily_series_get(*, shop: Shop, first: date, last: date, hourly: pd.DataFrame) -> pd.DataFrame:
    """Daily series over local days first..last: sessions, events and conversion from the daily
    rollups; orders and revenue summed from `hourly` (there is no daily revenue table)."""
    index = pd.date_range(first, last, freq="D")
    counts = _rows_frame(
        DailyRollup.objects.filter(
            shop_id=shop.pk, is_total=True, day__gte=first, day__lte=last
        ).values_list("day", "session_count", "converted_session_count", *EVENT_COLUMNS),
        columns=["at", "sessions", "converted", *EVENT_COLUMNS],
        tz=None,
    )
    frame = _counts_frame(counts, index=index)
    by_day = (
        hourly[["orders", "revenue"]]
        .groupby(hourly.index.tz_localize(None).normalize())
        .sum(min_count=1)
    )
    frame[["orders", "revenue"]] = by_day.reindex(index).fillna(0.0)
    return _before_first_unknown(frame, index=index, first=first_rollup_day(shop_id=shop.pk))


def first_rollup_day(*, shop_id: int) -> date | None:
    return (
        DailyRollup.objects.filter(shop_id=shop_id, is_total=True)
        .order_by("day")
        .values_list("day", flat=True)
        .first()
    )


def orders_changed_get(*, shop_id: int, since_us: int, placed_after: datetime) -> pd.DataFrame:
    """Orders updated after the watermark `since_us` and placed after `placed_after`, as the
    order detector's frame (a cancelled order's value is negative), plus `updated_at_us`."""
    since = datetime.fromtimestamp(since_us / 1e6, tz=UTC)
    rows = Order.objects.filter(
        shop_id=shop_id, updated_at__gt=since, placed_at__gte=placed_after
    ).values_list("order_id", "placed_at", "total", "is_cancelled", "cancelled_at", "updated_at")
    records = [
        {
            "order_id": order_id,
            # A cancellation is judged when it happened, against the same distribution.
            "placed_at": cancelled_at or placed_at if is_cancelled else placed_at,
            "value": -float(total) if is_cancelled else float(total),
            "updated_at_us": int(updated.timestamp() * 1e6),
        }
        for order_id, placed_at, total, is_cancelled, cancelled_at, updated in rows
    ]
    return pd.DataFrame(records, columns=["order_id", "placed_at", "value", "updated_at_us"])


def orders_reference_get(*, shop_id: int, now: datetime) -> pd.DataFrame:
    """The shop's recent positive orders: what a usual order looks like."""
    values = list(
        Order.objects.filter(
            shop_id=shop_id,
            is_cancelled=False,
            total__gt=Decimal(0),
            placed_at__gte=now - timedelta(days=ORDER_REFERENCE_DAYS),
            placed_at__lt=now,
        )
        .order_by("-placed_at")
        .values_list("total", flat=True)[:ORDER_REFERENCE]
    )
    return pd.DataFrame({"value": [float(value) for value in values]})


def events_processed_position(*, shop_id: int) -> int:
    """Events up to here have their person and session (the pipeline's watermark)."""
    return (
        PipelineWatermark.objects.filter(job=PipelineJob.EVENTS, shop_id=shop_id)
        .values_list("position", flat=True)
        .first()
        or 0
    )


def bot_events_get(*, shop_id: int, after_id: int, upto_id: int, now: datetime) -> pd.DataFrame:
    """Events of the people active since `after_id`, over the hour before the oldest of them:
    the bot detector's frame (person_id, session_id, occurred_at, user_agent, network, type)."""
    new = Event.objects.filter(
        shop_id=shop_id, id__gt=after_id, id__lte=upto_id, person__isnull=False
    )
    oldest = new.order_by("id").values_list("occurred_at", flat=True).first()
    columns = ["person_id", "session_id", "occurred_at", "user_agent", "network", "type"]
    if oldest is None:
        return pd.DataFrame(columns=columns)
    rows = (
        Event.objects.filter(
            shop_id=shop_id,
            person__isnull=False,
            occurred_at__gte=max(oldest, now - timedelta(days=1)) - BOT_LOOKBACK,
            occurred_at__lte=now,
            id__lte=upto_id,
        )
        .order_by("-id")
        .values_list("person_id", "session_id", "occurred_at", "user_agent", F("ip"), "type")[
            :BOT_EVENTS_CAP
        ]
    )
    frame = pd.DataFrame(list(rows), columns=columns)
    frame["network"] = frame["network"].fillna("")
    return frame


def rejections_hourly_get(
    *, shop_id: int, start: datetime, end: datetime, hourly: pd.DataFrame
) -> tuple[pd.Series, pd.Series]:
    """Accepted (the rollups' event counts) and rejected events per hour over [start, end)."""
    rejected = pd.Series(0.0, index=pd.date_range(start, end, freq="h", inclusive="left", tz=UTC))
    counts = (
        RejectedEvent.objects.filter(shop_id=shop_id, received_at__gte=start, received_at__lt=end)
        .annotate(hour=TruncHour("received_at", tzinfo=UTC))
        .values("hour")
        .annotate(n=Count("id"))
        .values_list("hour", "n")
    )
    for hour, count in counts:
        rejected[pd.Timestamp(hour).tz_convert(UTC)] = count
    accepted = hourly["events"].tz_convert(UTC).reindex(rejected.index).fillna(0.0)
    return accepted, rejected


def shopify_orders_tracking_get(
    *, shop_id: int, start: datetime, end: datetime
) -> tuple[list[str], list[str]]:
    """(the ids of the Shopify orders placed in [start, end), those of them with a tracked
    `purchase` event): two indexed reads, the events' by time around the window (a purchase
    is tracked within minutes of its order; a day either side is generous)."""
    shopify = list(
        Order.objects.filter(
            shop_id=shop_id,
            source=Order.Source.SHOPIFY,
            placed_at__gte=start,
            placed_at__lt=end,
        ).values_list("order_id", flat=True)
    )
    if not shopify:
        return [], []
    tracked = set(
        Event.objects.filter(
            shop_id=shop_id,
            type="purchase",
            occurred_at__gte=start - timedelta(days=1),
            occurred_at__lt=end + timedelta(days=1),
        )
        .exclude(order_id="")
        .values_list("order_id", flat=True)
    )
    return shopify, sorted(tracked.intersection(shopify))


def series_config(
    setup: ShopDetection, *, name: str, frequency: str, usual_order: float
) -> SeasonalConfig:
    """The seasonal config of one series: the shop's, with the scale floor in the series' unit
    (a revenue anomaly is more than one typical order; a rate moves by at least a point)."""
    base = setup.hourly if frequency == HOUR else setup.daily
    label = SERIES[name][1]
    if name == "revenue":
        return replace(base, label=label, min_scale=max(usual_order, 1.0))
    if name == "conversion_rate":
        return replace(base, label=label, min_scale=0.01)
    return replace(base, label=label)
