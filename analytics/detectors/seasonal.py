"""Spikes and drops in an hourly or daily series against its seasonal baseline (pure: no database).

The seasonal slot is the hour of the week for an hourly series (168 slots) and the day of the
week for a daily one (7 slots): Tuesday 14:00 is compared with earlier Tuesdays at 14:00.
Two methods, both robust to the anomalies they look for (medians, not means):

- `series_detect_mad` (the default, see docs/anomalies.md for the comparison): the expected value
  of a bucket is the median of the same slot over the previous `history_weeks` weeks, its scale
  the MAD of those values (× 1.4826), floored so that a flat history cannot make every wiggle an
  anomaly; robust z = (observed − expected) / scale, flagged from `threshold`.
- `series_detect_shesd`: Twitter's seasonal hybrid ESD (Hochenbaum, Vallis, Kejariwal 2017) with a
  median decomposition in place of STL: over a trailing window, residual = value − median of the
  window − median of the slot's deviations, then Rosner's generalized ESD test with median and
  MAD on the residuals. It runs a day at a time (a week for a daily series) and reports the
  outliers of that day only, as it would when run after each rollup refresh.

Both stay silent until a slot has `min_history` earlier values, never flag a shop-marked holiday
and keep holidays out of every baseline. The index is the bucket start in the shop's timezone
(tz-aware for hourly series, so that DST days keep their real hours); empty buckets should be
0, not missing: a missing bucket is treated as unknown, not as zero.
"""

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from analytics.detectors.esd import esd_test
from analytics.detectors.findings import (
    MAD_TO_SIGMA,
    Band,
    Direction,
    Finding,
    comparison_phrase,
    number_format,
    rows_median,
    severity_from_score,
    window_phrase,
)

HOUR = "hour"
DAY = "day"
SLOTS = {HOUR: 168, DAY: 7}
FREQUENCIES = {HOUR: "h", DAY: "D"}
MAD_DETECTOR = "hour_of_week_mad"
SHESD_DETECTOR = "seasonal_hybrid_esd"


@dataclass(frozen=True, slots=True)
class SeasonalConfig:
    """Per-shop parameters; the defaults are the ones evaluated in bench/anomaly_detectors.py."""

    frequency: str = HOUR
    threshold: float = 4.0  # robust z from which the MAD method speaks
    warning: float = 6.0  # |score| from which a finding is a warning, then critical
    critical: float = 10.0
    history_weeks: int = 8  # same-slot values in the MAD baseline
    min_history: int = 3  # earlier same-slot values needed before either method speaks
    # Floors of the scale, in the metric's unit: a slot whose history is flat (MAD 0) or tiny
    # (a few sessions at night) would otherwise call +1 an anomaly. Counts are at least Poisson
    # noisy, so 1 is their floor; for revenue use about one typical order (a single order is
    # the order detector's business, not a revenue anomaly).
    min_scale_fraction: float = 0.1
    min_scale: float = 1.0
    # The scale pools the past errors of the slot and this many buckets either side: a MAD of
    # 8 errors was off by a quarter or more for half the buckets; of 7 × 8, far less.
    scale_neighbours: int = 3
    holidays: frozenset[date] = field(default_factory=frozenset)
    alpha: float = 0.05  # S-H-ESD: the ESD test's significance level
    max_anoms: float = 0.02  # S-H-ESD: at most this share of a window's points are outliers
    esd_window_weeks: int = 4  # S-H-ESD: weeks of history before the day it reports on
    label: str = ""  # how the explanation names the metric; default: the metric, capitalised


def series_prepare(series: pd.Series, *, frequency: str) -> pd.Series:
    """A regular float series, one value per bucket, NaN where a bucket is missing."""
    if frequency not in SLOTS:
        raise ValueError(f"frequency must be one of {sorted(SLOTS)}, not {frequency!r}")
    if not isinstance(series.index, pd.DatetimeIndex):
        raise ValueError("the series needs a DatetimeIndex of bucket starts")
    regular = series.sort_index().astype(float)
    if frequency == DAY and regular.index.tz is not None:
        # Days are labelled by their local date; 24 h steps would drift at DST changes.
        regular.index = regular.index.tz_localize(None).normalize()
    if regular.index.has_duplicates:
        raise ValueError("the series has two values for one bucket")
    return regular.asfreq(FREQUENCIES[frequency])


def slot_codes(index: pd.DatetimeIndex, *, frequency: str) -> np.ndarray:
    if frequency == HOUR:
        return np.asarray(index.day_of_week * 24 + index.hour)
    return np.asarray(index.day_of_week)


def holiday_mask(index: pd.DatetimeIndex, holidays: frozenset[date]) -> np.ndarray:
    if not holidays:
        return np.zeros(len(index), dtype=bool)
    return pd.Series(index.date).isin(holidays).to_numpy()


def series_baseline(series: pd.Series, *, config: SeasonalConfig) -> pd.DataFrame:
    """The MAD method's expected value, band and robust z for every bucket (for charts too).

    Columns: observed, expected, low, high, score, speaks (False before `min_history` same-slot
    values and as many past errors, on holidays and on missing buckets).
    """
    values = series_prepare(series, frequency=config.frequency)
    holiday = holiday_mask(values.index, config.holidays)
    observed = values.to_numpy()
    # Counts and revenue vary in proportion to their level (a busy evening swings by more
    # sessions than a quiet night) and a spike is a multiple, so the method works on a signed
    # log, sign(x)·log(1 + |x|), where the noise is about even across the week; the sign keeps
    # net revenue that refunds pushed below zero.
    work = signed_log(observed)
    slots = slot_codes(values.index, frequency=config.frequency)
    kept = np.where(holiday, np.nan, observed)
    lags = _slot_lags(signed_log(kept), slots, config.history_weeks)
    count = np.sum(~np.isnan(lags), axis=1)
    center = np.where(count >= config.min_history, rows_median(lags), np.nan)
    # What the explanation calls usual: the plain median of the same weeks, in the metric's unit.
    raw_lags = _slot_lags(kept, slots, config.history_weeks)
    expected = np.where(np.isfinite(center), rows_median(raw_lags), np.nan)
    # The scale is the spread of the baseline's own past errors (value − centre of earlier
    # buckets, each against its own earlier history), not of the history around its median:
    # that in-sample spread leaves out the median's own error and came out too small (on
    # synthetic counts a quarter of the flags were false). The slot's errors are pooled with
    # the neighbouring hours' (or days') for a steadier MAD.
    error_lags = _slot_lags(np.where(holiday, np.nan, work - center), slots, config.history_weeks)
    pooled = np.hstack(
        [
            _rows_shift(error_lags, by)
            for by in range(-config.scale_neighbours, config.scale_neighbours + 1)
        ]
    )
    pooled_count = np.sum(~np.isnan(pooled), axis=1)
    spread = MAD_TO_SIGMA * rows_median(np.abs(pooled - rows_median(pooled)[:, None]))
    scale = np.fmax(spread, log_floor(expected, config=config))
    low = signed_exp(center - config.threshold * scale)
    high = signed_exp(center + config.threshold * scale)
    if np.nanmin(observed, initial=0.0) >= 0:
        low = np.fmax(low, 0.0)  # a count cannot go below zero, so neither does its band
    # On a log scale nothing is farther below a positive median than zero, and the median and
    # MAD look past the odd empty hour in the history. A slot that has been empty before (the
    # hour a shop opens, revenue from a few orders) is allowed to be empty again: on Online
    # Retail's hourly revenue, half the flags were such zeros.
    was_empty = np.any(raw_lags <= 0, axis=1)
    return pd.DataFrame(
        {
            "observed": observed,
            "expected": expected,
            "low": low,
            "high": high,
            "score": (work - center) / scale,
            "speaks": (pooled_count >= config.min_history)
            & np.isfinite(center)
            & ~((observed <= 0) & was_empty)
            & ~holiday
            & np.isfinite(observed),
        },
        index=values.index,
    )


def signed_log(values: np.ndarray | float) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def signed_exp(values: np.ndarray | float) -> np.ndarray:
    return np.sign(values) * np.expm1(np.abs(values))


def log_floor(expected: np.ndarray | float, *, config: SeasonalConfig) -> np.ndarray:
    """The smallest scale, on the signed-log scale: the step from the expected value to one
    floor (`min_scale` units or `min_scale_fraction` of it, the larger) above it."""
    size = np.abs(expected)
    floor = np.fmax(config.min_scale_fraction * size, config.min_scale)
    return np.log1p(size + floor) - np.log1p(size)


def _slot_lags(values: np.ndarray, slots: np.ndarray, weeks: int) -> np.ndarray:
    """Row t holds the same slot's value 1, 2, … `weeks` occurrences earlier (NaN if none)."""
    grouped = pd.Series(values).groupby(slots)
    return np.column_stack([grouped.shift(k).to_numpy() for k in range(1, weeks + 1)])


def series_detect_mad(
    series: pd.Series,
    *,
    metric: str,
    config: SeasonalConfig | None = None,
    start: pd.Timestamp | None = None,
) -> list[Finding]:
    """Buckets at or after `start` whose robust z against their slot's history passes the
    threshold."""
    config = config or SeasonalConfig()
    frame = series_baseline(series, config=config)
    flagged = frame[frame["speaks"] & (frame["score"].abs() >= config.threshold)]
    start = start_align(start, frame.index)
    if start is not None:
        flagged = flagged[flagged.index >= start]
    return [
        finding_build(
            metric=metric,
            detector=MAD_DETECTOR,
            start=at,
            observed=row.observed,
            expected=row.expected,
            band=Band(low=row.low, high=row.high),
            score=row.score,
            config=config,
        )
        for at, row in zip(flagged.index, flagged.itertuples(), strict=True)
    ]


def _rows_shift(matrix: np.ndarray, by: int) -> np.ndarray:
    """Row t takes row t − by (NaN where there is none)."""
    shifted = np.full_like(matrix, np.nan)
    if by > 0:
        shifted[by:] = matrix[:-by]
    elif by < 0:
        shifted[:by] = matrix[-by:]
    else:
        return matrix
    return shifted


def start_align(start: pd.Timestamp | None, index: pd.DatetimeIndex) -> pd.Timestamp | None:
    """`start` comparable with the prepared index (a daily index holds naive local dates)."""
    if start is None or index.tz is not None or start.tzinfo is None:
        return start
    return start.tz_localize(None)


def series_detect_shesd(
    series: pd.Series,
    *,
    metric: str,
    config: SeasonalConfig | None = None,
    start: pd.Timestamp | None = None,
) -> list[Finding]:
    """S-H-ESD outliers at or after `start`, each day judged against the weeks before it."""
    config = config or SeasonalConfig()
    values = series_prepare(series, frequency=config.frequency)
    holiday = holiday_mask(values.index, config.holidays)
    history = values.where(~holiday).to_numpy()
    slots = slot_codes(values.index, frequency=config.frequency)
    present = pd.Series(np.isfinite(history).astype(int))
    earlier = (present.groupby(slots).cumsum() - present).to_numpy()
    evaluable = (earlier >= config.min_history) & np.isfinite(history)
    start = start_align(start, values.index)
    if start is not None:
        evaluable &= np.asarray(values.index >= start)
    # One ESD run per reporting chunk: a day of an hourly series, a week of a daily one.
    chunk_of = (
        pd.factorize(np.asarray(values.index.date))[0]
        if config.frequency == HOUR
        else np.arange(len(values)) // 7
    )
    reach = config.esd_window_weeks * SLOTS[config.frequency]
    findings: list[Finding] = []
    for chunk in np.unique(chunk_of[evaluable]):
        inside = np.flatnonzero(chunk_of == chunk)
        low, high = max(0, inside[0] - reach), inside[-1] + 1
        for position, expected, band, score in _window_outliers(
            history[low:high], slots[low:high], config=config
        ):
            at = low + position
            if evaluable[at] and chunk_of[at] == chunk:
                findings.append(
                    finding_build(
                        metric=metric,
                        detector=SHESD_DETECTOR,
                        start=values.index[at],
                        observed=history[at],
                        expected=expected,
                        band=band,
                        score=score,
                        config=config,
                    )
                )
    return findings


def _window_outliers(
    window: np.ndarray, slots: np.ndarray, *, config: SeasonalConfig
) -> list[tuple[int, float, Band, float]]:
    """S-H-ESD on one window: (position, expected, band, score) of each outlier.

    Twitter's decomposition is STL's seasonal part plus the window's median in place of the
    trend; here the seasonal part is the median deviation of each slot from that median, which
    is what a robust periodic STL converges to for a fixed weekly shape, without statsmodels.
    It works on the same signed log as the MAD method, for the same reason.
    """
    work = signed_log(window)
    floor = float(log_floor(np.nanmedian(window), config=config))
    center = float(np.nanmedian(work))
    seasonal = pd.Series(work - center).groupby(slots).transform("median").to_numpy()
    residual = work - center - seasonal
    valid = int(np.sum(np.isfinite(residual)))
    result = esd_test(
        residual,
        max_outliers=max(1, int(config.max_anoms * valid)),
        alpha=config.alpha,
        min_scale=floor,
    )
    if not result.outliers:
        return []
    kept = residual.copy()
    kept[list(result.outliers)] = np.nan
    finite = kept[np.isfinite(kept)]
    level = float(np.median(finite))
    spread = max(MAD_TO_SIGMA * float(np.median(np.abs(finite - level))), floor)
    limit = result.criticals[len(result.outliers) - 1]
    rows = []
    for position in result.outliers:
        fitted = center + seasonal[position] + level
        band = Band(
            low=float(signed_exp(fitted - limit * spread)),
            high=float(signed_exp(fitted + limit * spread)),
        )
        score = (work[position] - fitted) / spread
        rows.append((position, float(signed_exp(fitted)), band, score))
    return rows


METHODS = {MAD_DETECTOR: series_detect_mad, SHESD_DETECTOR: series_detect_shesd}


def series_detect(
    series: pd.Series,
    *,
    metric: str,
    config: SeasonalConfig | None = None,
    method: str = MAD_DETECTOR,
    start: pd.Timestamp | None = None,
) -> list[Finding]:
    """Spikes and drops of `series` at or after `start` by `method` (the MAD one by default)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, not {method!r}")
    return METHODS[method](series, metric=metric, config=config, start=start)


def finding_build(
    *,
    metric: str,
    detector: str,
    start: pd.Timestamp,
    observed: float,
    expected: float,
    band: Band,
    score: float,
    config: SeasonalConfig,
) -> Finding:
    when, usual_for = window_phrase(start, frequency=config.frequency)
    label = config.label or metric.replace("_", " ").capitalize()
    # The labels are counts in the plural (Sessions, Orders) or mass nouns (Revenue, Visit
    # conversion): "Orders were 150", "Revenue was 9,983.94".
    verb = "were" if label.endswith("s") else "was"
    explanation = (
        f"{label} {when} {verb} {number_format(observed)}, "
        f"{comparison_phrase(observed, expected)} for {usual_for}."
    )
    step = pd.Timedelta(hours=1) if config.frequency == HOUR else pd.Timedelta(days=1)
    return Finding(
        metric=metric,
        detector=detector,
        window_start=start,
        window_end=start + step,
        observed=float(observed),
        expected=float(expected),
        band=band,
        score=float(score),
        direction=Direction.SPIKE if observed > expected else Direction.DROP,
        severity=severity_from_score(score, warning=config.warning, critical=config.critical),
        explanation=explanation,
    )
