"""Purchase outliers and high-value orders (pure: no database).

Order values are heavy-tailed (on UCI Online Retail the median invoice is £273, the 99.9th
percentile £15,700 and the largest £168,470), so the tests work on log value, where the shop's
orders are close to normal:

- robust z = (log v − median log v) / (1.4826 × MAD of log v) over the shop's orders, flagged
  from `threshold`;
- Tukey's far-out fences on log value: below Q1 − k·IQR or above Q3 + k·IQR (k = 3);
- a fixed high-value threshold in the shop's currency (the Online Retail system alerts above
  £100; each shop sets its own, None turns it off).

A cancellation (negative value) is judged by its size against the same distribution of orders,
so the cancellation of an outsized order is flagged too. Zero-value orders have no log and are
left out. Only the high tail is flagged by default: on Online Retail the low tail at z 3.5 is
600+ tiny orders a year, which no owner wants alerts for (`low_tail=True` adds them).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.detectors.findings import (
    Band,
    Severity,
    comparison_phrase,
    robust_center_scale,
    severity_from_score,
)

ROBUST_Z = "robust_z"
IQR = "iqr"
HIGH_VALUE = "high_value"
COLUMNS = ("order_id", "placed_at", "value")


@dataclass(frozen=True, slots=True)
class OrderConfig:
    """Per-shop parameters; the defaults are the ones evaluated on Online Retail."""

    high_value: float | None = 100.0
    threshold: float = 3.5  # robust z of log value
    iqr_k: float = 3.0  # Tukey's "far out" fence on log value
    warning: float = 5.0  # |z| from which a finding is a warning, then critical
    critical: float = 7.0
    min_orders: int = 30  # orders in the reference before the distribution tests speak
    low_tail: bool = False
    currency: str = "£"


@dataclass(frozen=True, slots=True)
class OrderDistribution:
    """The shop's order values on log scale: centre, robust scale and IQR fences."""

    count: int
    center: float
    scale: float
    fence_low: float
    fence_high: float


@dataclass(frozen=True, slots=True)
class OrderFinding:
    order_id: str
    placed_at: pd.Timestamp
    value: float  # signed: a cancellation is negative
    is_cancellation: bool
    expected: float  # the shop's median order value
    band: Band  # values between the robust-z limits (0, inf while the shop has too few orders)
    score: float  # robust z of log |value|; NaN while the shop has too few orders
    reasons: tuple[str, ...]
    severity: Severity
    explanation: str


def order_distribution_fit(values: pd.Series | np.ndarray, *, iqr_k: float) -> OrderDistribution:
    """Fit on the positive values (orders, not cancellations or free orders)."""
    logs = np.log(np.asarray(values, dtype=float)[np.asarray(values, dtype=float) > 0])
    if logs.size == 0:
        return OrderDistribution(0, np.nan, np.nan, np.nan, np.nan)
    center, scale = robust_center_scale(logs)
    q1, q3 = np.quantile(logs, [0.25, 0.75])
    return OrderDistribution(
        count=int(logs.size),
        center=center,
        # Identical orders (MAD 0) would make every other order infinitely far.
        scale=max(scale, 1e-9),
        fence_low=float(q1 - iqr_k * (q3 - q1)),
        fence_high=float(q3 + iqr_k * (q3 - q1)),
    )


def orders_detect(
    orders: pd.DataFrame,
    *,
    config: OrderConfig | None = None,
    reference: pd.DataFrame | None = None,
) -> list[OrderFinding]:
    """Outlying and high-value orders among `orders` (columns order_id, placed_at, value).

    `reference` is the shop's order history that defines "usual" (default: `orders` itself);
    pass the last months of orders when checking today's.
    """
    config = config or OrderConfig()
    missing = [column for column in COLUMNS if column not in orders.columns]
    if missing:
        raise ValueError(f"orders need the columns {', '.join(missing)}")
    source = orders if reference is None else reference
    fit = order_distribution_fit(source["value"].to_numpy(), iqr_k=config.iqr_k)
    values = orders["value"].to_numpy(dtype=float)
    sizes = np.abs(values)
    with np.errstate(divide="ignore"):
        logs = np.where(sizes > 0, np.log(sizes), np.nan)
    speaks = fit.count >= config.min_orders
    score = (logs - fit.center) / fit.scale if speaks else np.full(len(values), np.nan)
    high_z = speaks & (score >= config.threshold)
    high_iqr = speaks & (logs > fit.fence_high)
    low_z = speaks & config.low_tail & (score <= -config.threshold)
    low_iqr = speaks & config.low_tail & (logs < fit.fence_low)
    is_big = (
        sizes > config.high_value if config.high_value is not None else np.zeros(len(values), bool)
    )
    flagged = np.flatnonzero(high_z | high_iqr | low_z | low_iqr | is_big)
    expected = float(np.exp(fit.center)) if speaks else np.nan
    band = (
        Band(
            low=float(np.exp(fit.center - config.threshold * fit.scale)),
            high=float(np.exp(fit.center + config.threshold * fit.scale)),
        )
        if speaks
        else Band(low=0.0, high=float("inf"))
    )
    findings = []
    for position in flagged:
        reasons = tuple(
            name
            for name, hit in (
                (ROBUST_Z, high_z[position] or low_z[position]),
                (IQR, high_iqr[position] or low_iqr[position]),
                (HIGH_VALUE, is_big[position]),
            )
            if hit
        )
        row = orders.iloc[position]
        findings.append(
            _finding_build(
                order_id=str(row["order_id"]),
                placed_at=pd.Timestamp(row["placed_at"]),
                value=float(values[position]),
                expected=expected,
                band=band,
                score=float(score[position]),
                reasons=reasons,
                config=config,
            )
        )
    return findings


def _finding_build(
    *,
    order_id: str,
    placed_at: pd.Timestamp,
    value: float,
    expected: float,
    band: Band,
    score: float,
    reasons: tuple[str, ...],
    config: OrderConfig,
) -> OrderFinding:
    is_cancellation = value < 0
    money = f"{config.currency}{abs(value):,.2f}"
    what = f"Cancellation {order_id}" if is_cancellation else f"Order {order_id}"
    verb = "took back" if is_cancellation else "was"
    parts = [f"{what} on {placed_at:%a %-d %b %Y %H:%M} {verb} {money}"]
    if np.isfinite(expected):
        parts.append(f", {comparison_phrase(abs(value), expected, unit=config.currency)}")
        parts.append(f" (the shop's median order; robust z {score:.1f} on log value)")
    if HIGH_VALUE in reasons and config.high_value is not None:
        parts.append(f"; above the {config.currency}{config.high_value:,.0f} high-value threshold")
    # A plain high-value order is routine news (info); how far it is from usual sets the rest.
    severity = (
        severity_from_score(score, warning=config.warning, critical=config.critical)
        if ROBUST_Z in reasons or IQR in reasons
        else Severity.INFO
    )
    return OrderFinding(
        order_id=order_id,
        placed_at=placed_at,
        value=value,
        is_cancellation=is_cancellation,
        expected=expected,
        band=band,
        score=score,
        reasons=reasons,
        severity=severity,
        explanation="".join(parts) + ".",
    )
