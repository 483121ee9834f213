"""Rosner's generalized ESD (extreme studentized deviate) test, the core of S-H-ESD (pure).

Rosner, B. (1983), "Percentage Points for a Generalized ESD Many-Outlier Procedure",
Technometrics 25(2), 165-172; checked in the tests against the NIST/SEMATECH handbook's worked
example (section 1.3.5.17.3) on Rosner's 54 values.
"""

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

from analytics.detectors.findings import MAD_TO_SIGMA


@dataclass(frozen=True, slots=True)
class EsdResult:
    """Rosner's generalized ESD: the outliers' positions and each step's statistic and limit."""

    outliers: tuple[int, ...]
    statistics: tuple[float, ...]
    criticals: tuple[float, ...]


@lru_cache(maxsize=4096)
def esd_critical(count: int, step: int, alpha: float) -> float:
    """Rosner's λ_i for step i of n observations: (n−i)·t / √((n−i−1+t²)(n−i+1)), with t the
    t distribution's 1 − α/(2(n−i+1)) quantile at n−i−1 degrees of freedom."""
    remaining = count - step
    t = float(stats.t.ppf(1 - alpha / (2 * (remaining + 1)), remaining - 1))
    return remaining * t / math.sqrt((remaining - 1 + t * t) * (remaining + 1))


def esd_test(
    values: np.ndarray,
    *,
    max_outliers: int,
    alpha: float = 0.05,
    robust: bool = True,
    min_scale: float = 0.0,
) -> EsdResult:
    """Rosner's (1983) generalized ESD test for up to `max_outliers` outliers.

    Step i removes the value farthest from the centre and keeps R_i = its distance / scale; the
    outliers are the first k removed, k the largest i with R_i > λ_i. `robust` uses median and
    MAD (Twitter's S-H-ESD), otherwise mean and sample standard deviation (Rosner's original).
    """
    positions = np.flatnonzero(np.isfinite(values))
    remaining = values[positions].astype(float)
    count = remaining.size
    removed: list[int] = []
    statistics: list[float] = []
    criticals: list[float] = []
    for step in range(1, min(max_outliers, count - 2) + 1):
        if robust:
            center = float(np.median(remaining))
            scale = MAD_TO_SIGMA * float(np.median(np.abs(remaining - center)))
        else:
            center, scale = float(np.mean(remaining)), float(np.std(remaining, ddof=1))
        scale = max(scale, min_scale)
        if scale == 0:
            break
        deviations = np.abs(remaining - center)
        farthest = int(np.argmax(deviations))
        statistics.append(float(deviations[farthest]) / scale)
        criticals.append(esd_critical(count, step, alpha))
        removed.append(int(positions[farthest]))
        positions = np.delete(positions, farthest)
        remaining = np.delete(remaining, farthest)
    found = max(
        (
            step
            for step, (r, lam) in enumerate(zip(statistics, criticals, strict=True), 1)
            if r > lam
        ),
        default=0,
    )
    return EsdResult(tuple(removed[:found]), tuple(statistics), tuple(criticals))
