"""What every detector returns: a finding with observed, expected, band, severity and a sentence.

Pure (no database): the detectors hand these dataclasses to whoever stores and alerts on them.
Robust statistics shared by the detectors live here too, so that "robust z" means one thing.
"""

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

# MAD × 1.4826 estimates the standard deviation of a normal sample, so a robust z reads like a z.
MAD_TO_SIGMA = 1.4826
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Direction(StrEnum):
    SPIKE = "spike"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Band:
    """The range of values the detector calls normal, in the metric's unit."""

    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomalous window of one metric; `window_end` is exclusive (half-open buckets)."""

    metric: str
    detector: str
    window_start: pd.Timestamp
    window_end: pd.Timestamp
    observed: float
    expected: float
    band: Band
    score: float  # signed robust z (or the ESD statistic); its size sets the severity
    direction: Direction
    severity: Severity
    explanation: str


def severity_from_score(score: float, *, warning: float, critical: float) -> Severity:
    """Info just past the detection threshold, warning from `warning`, critical from `critical`."""
    size = abs(score)
    if size >= critical:
        return Severity.CRITICAL
    if size >= warning:
        return Severity.WARNING
    return Severity.INFO


def rows_median(matrix: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (NaN where a row is empty).

    np.nanmedian falls back to a Python loop per row when NaNs are present; sorting once (NaN
    sorts last) and indexing by each row's count is vectorised and gives the same answer.
    """
    ordered = np.sort(matrix, axis=1)
    count = np.sum(~np.isnan(matrix), axis=1)
    rows = np.arange(matrix.shape[0])
    lower = ordered[rows, np.maximum(count - 1, 0) // 2]
    upper = ordered[rows, np.minimum(count // 2, matrix.shape[1] - 1)]
    return np.where(count == 0, np.nan, (lower + upper) / 2)


def robust_center_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based sigma of the finite values (NaN, NaN when there are none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    center = float(np.median(finite))
    return center, MAD_TO_SIGMA * float(np.median(np.abs(finite - center)))


def number_format(value: float) -> str:
    """412 → '412', 1234.5 → '1,234.50', 0.125 → '0.125': whole numbers stay whole."""
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    if abs(value) < 1:
        return f"{value:.3g}"
    return f"{value:,.2f}"


def comparison_phrase(observed: float, expected: float, *, unit: str = "") -> str:
    """'about 5.2× the usual 80', 'about 85 % below the usual 80', or the plain difference."""
    usual = f"the usual {unit}{number_format(expected)}"
    if expected <= 0:
        return f"where about {unit}{number_format(expected)} is usual"
    ratio = observed / expected
    if ratio < 0.005:
        return f"against {usual}"
    if ratio >= 10:
        return f"about {ratio:,.0f}× {usual}"
    if ratio >= 1.5:
        return f"about {ratio:.1f}× {usual}"
    if ratio <= 0.67:
        return f"about {(1 - ratio) * 100:.0f} % below {usual}"
    change = "above" if observed >= expected else "below"
    return f"{abs(ratio - 1) * 100:.0f} % {change} {usual}"


def day_part(hour: int) -> str:
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 22:
        return "evening"
    return "night"


def window_phrase(start: pd.Timestamp, *, frequency: str) -> tuple[str, str]:
    """('14:00–15:00 on Tue 3 Mar 2026', 'a Tuesday afternoon') for an hour; a day's equivalent."""
    weekday = WEEKDAYS[start.day_of_week]
    date = f"{weekday[:3]} {start.day} {start.strftime('%b %Y')}"
    if frequency == "day":
        return f"on {date}", f"a {weekday}"
    end = start + pd.Timedelta(hours=1)
    when = f"{start:%H:%M}–{end:%H:%M} on {date}"
    part = day_part(start.hour)
    return when, f"a {weekday} {part}" if part != "night" else f"a {weekday} night"
