"""Tracking health: is the data arriving whole and on time? (pure: no database)

Four checks over inputs a selector can produce cheaply:

- `orders_untracked_check`: Shopify orders (webhooks) without a tracked purchase event: the
  snippet is missing from the checkout or an ad blocker stops it;
- `rejections_check`: the share of rejected events in a bucket against the recent buckets
  (median and MAD of the share): a deploy that broke the storefront's payloads;
- `pipeline_lag_check`: how far processing is behind the newest accepted event;
- `days_without_events`: a whole day with no events where the shop usually has many.

Each returns `Finding`s like the series detectors, so one store and one alert path serve all.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from analytics.detectors.findings import (
    MAD_TO_SIGMA,
    Band,
    Direction,
    Finding,
    Severity,
    number_format,
    rows_median,
    severity_from_score,
)

UNTRACKED_ORDERS = "untracked_orders"
REJECTED_SHARE = "rejected_share"
PIPELINE_LAG = "pipeline_lag"
EVENTLESS_DAY = "eventless_day"


@dataclass(frozen=True, slots=True)
class HealthConfig:
    max_untracked_share: float = 0.1  # a few orders go untracked (blocked scripts) everywhere
    min_untracked: int = 3
    rejection_threshold: float = 4.0  # robust z of the rejected share
    rejection_history: int = 168  # buckets (a week of hours) behind the rejection baseline
    min_rejected: int = 10
    min_rejected_share: float = 0.05
    min_share_scale: float = 0.01  # one percentage point: a share that never moves is not a sd of 0
    warning: float = 6.0
    critical: float = 10.0
    lag_warning_seconds: float = 60.0  # the freshness promise is seconds, so a minute is late
    lag_critical_seconds: float = 600.0
    min_usual_daily_events: int = 20
    history_days: int = 28
    holidays: frozenset[date] = field(default_factory=frozenset)


def orders_untracked_check(
    *,
    shopify_order_ids: Iterable[str],
    tracked_order_ids: Iterable[str],
    window_start: pd.Timestamp,
    window_end: pd.Timestamp,
    config: HealthConfig | None = None,
) -> Finding | None:
    """A finding when too many of the window's Shopify orders have no tracked purchase."""
    config = config or HealthConfig()
    orders = {str(order_id) for order_id in shopify_order_ids}
    untracked = sorted(orders - {str(order_id) for order_id in tracked_order_ids})
    if not orders or len(untracked) < config.min_untracked:
        return None
    share = len(untracked) / len(orders)
    if share <= config.max_untracked_share:
        return None
    examples = ", ".join(untracked[:3]) + (", …" if len(untracked) > 3 else "")
    return Finding(
        metric=UNTRACKED_ORDERS,
        detector=UNTRACKED_ORDERS,
        window_start=window_start,
        window_end=window_end,
        observed=float(len(untracked)),
        expected=0.0,
        band=Band(low=0.0, high=config.max_untracked_share * len(orders)),
        score=share / config.max_untracked_share,
        direction=Direction.SPIKE,
        severity=Severity.CRITICAL if share >= 0.5 else Severity.WARNING,
        explanation=(
            f"{len(untracked)} of {len(orders)} Shopify orders ({share * 100:.0f} %) from "
            f"{window_start:%-d %b %H:%M} to {window_end:%-d %b %H:%M} have no tracked purchase "
            f"(e.g. {examples}): the tracking snippet is missing from the checkout or blocked."
        ),
    )


def rejections_check(
    *,
    accepted: pd.Series,
    rejected: pd.Series,
    config: HealthConfig | None = None,
    start: pd.Timestamp | None = None,
) -> list[Finding]:
    """Buckets (at or after `start`) whose rejected share jumps above the recent buckets'."""
    config = config or HealthConfig()
    frame = pd.concat({"accepted": accepted, "rejected": rejected}, axis=1).fillna(0).sort_index()
    total = frame["accepted"] + frame["rejected"]
    share = (frame["rejected"] / total.where(total > 0)).to_numpy()
    history = config.rejection_history
    # Row t sees the `history` shares before it (NaN-padded at the start).
    padded = np.concatenate([np.full(history, np.nan), share])
    windows = np.lib.stride_tricks.sliding_window_view(padded, history)[: len(share)]
    expected = rows_median(windows)
    spread = rows_median(np.abs(windows - expected[:, None])) * MAD_TO_SIGMA
    scale = np.fmax(spread, config.min_share_scale)
    score = (share - expected) / scale
    known = np.sum(~np.isnan(windows), axis=1) >= min(24, history)
    flagged = (
        known
        & (frame["rejected"].to_numpy() >= config.min_rejected)
        & (share >= config.min_rejected_share)
        & (score >= config.rejection_threshold)
    )
    if start is not None:
        flagged &= np.asarray(frame.index >= start)
    step = frame.index[1] - frame.index[0] if len(frame) > 1 else pd.Timedelta(hours=1)
    findings = []
    for position in np.flatnonzero(flagged):
        at = frame.index[position]
        high = expected[position] + config.rejection_threshold * scale[position]
        findings.append(
            Finding(
                metric=REJECTED_SHARE,
                detector=REJECTED_SHARE,
                window_start=at,
                window_end=at + step,
                observed=float(share[position]),
                expected=float(expected[position]),
                band=Band(low=0.0, high=float(min(high, 1.0))),
                score=float(score[position]),
                direction=Direction.SPIKE,
                severity=severity_from_score(
                    score[position], warning=config.warning, critical=config.critical
                ),
                explanation=(
                    f"{int(frame['rejected'].iloc[position]):,} of {int(total.iloc[position]):,} "
                    f"events from {at:%-d %b %H:%M} were rejected ({share[position] * 100:.1f} %), "
                    f"where {expected[position] * 100:.1f} % is usual: check the storefront's "
                    f"payloads and the rejected events' reasons."
                ),
            )
        )
    return findings


def pipeline_lag_check(
    *, lag_seconds: float, at: pd.Timestamp, config: HealthConfig | None = None
) -> Finding | None:
    """A finding when the oldest unprocessed event has waited past the warning limit."""
    config = config or HealthConfig()
    if lag_seconds < config.lag_warning_seconds:
        return None
    severity = Severity.CRITICAL if lag_seconds >= config.lag_critical_seconds else Severity.WARNING
    return Finding(
        metric=PIPELINE_LAG,
        detector=PIPELINE_LAG,
        window_start=at - pd.Timedelta(seconds=lag_seconds),
        window_end=at,
        observed=float(lag_seconds),
        expected=0.0,
        band=Band(low=0.0, high=config.lag_warning_seconds),
        score=lag_seconds / config.lag_warning_seconds,
        direction=Direction.SPIKE,
        severity=severity,
        explanation=(
            f"Processing is {_duration(lag_seconds)} behind at {at:%-d %b %H:%M}: new events "
            f"are stored but not yet in sessions and analytics (late from "
            f"{_duration(config.lag_warning_seconds)}, critical from "
            f"{_duration(config.lag_critical_seconds)})."
        ),
    )


def days_without_events(
    daily: pd.Series, *, config: HealthConfig | None = None, start: pd.Timestamp | None = None
) -> list[Finding]:
    """Complete days (at or after `start`) with no events where the shop usually has
    `min_usual_daily_events` or more; a day missing from `daily` counts as zero."""
    config = config or HealthConfig()
    counts = daily.sort_index().astype(float)
    counts.index = pd.DatetimeIndex(counts.index).tz_localize(None).normalize()
    counts = counts.asfreq("D", fill_value=0.0)
    holiday = pd.Series(counts.index.date).isin(config.holidays).to_numpy()
    usual = (
        counts.where(~holiday)
        .shift(1)
        .rolling(config.history_days, min_periods=min(7, config.history_days))
        .median()
    )
    flagged = (counts == 0) & (usual >= config.min_usual_daily_events) & ~holiday
    if start is not None:
        flagged &= counts.index >= pd.Timestamp(start).tz_localize(None).normalize()
    return [
        Finding(
            metric=EVENTLESS_DAY,
            detector=EVENTLESS_DAY,
            window_start=day,
            window_end=day + pd.Timedelta(days=1),
            observed=0.0,
            expected=float(usual[day]),
            band=Band(low=1.0, high=float("inf")),
            # How far 0 is below the usual count in Poisson sds: the day is certainly empty.
            score=-float(np.sqrt(usual[day])),
            direction=Direction.DROP,
            severity=Severity.CRITICAL,
            explanation=(
                f"No events at all on {day:%A %-d %b %Y}, where about "
                f"{number_format(usual[day])} a day is usual: the snippet or the ingestion "
                f"endpoint stopped."
            ),
        )
        for day in counts.index[flagged.to_numpy()]
    ]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
