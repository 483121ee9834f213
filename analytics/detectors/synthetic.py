"""Seeded synthetic series with injected anomalies, and the precision/recall of a detector on them.

Used by the detector tests and bench/anomaly_detectors.py, so both measure the same thing. The
traffic shape is the demo simulator's (events.simulator: quiet nights, busy evenings, busier
weekends), with a slow upward trend and negative-binomial noise (variance μ + μ²/30, noisier than
Poisson, as real hourly counts are). Anomalies go where they are meaningful: spikes (× 2.5–5) into
buckets that expect at least `spike_min` and drops (to 0–30 %) into buckets that expect at least
`drop_min`; a third of the spikes repeat a week later in the same slot, so a detector whose
baseline a spike inflates misses the second one.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.detectors.findings import Finding
from analytics.detectors.seasonal import HOUR
from events.simulator import HOUR_WEIGHTS, WEEKDAY_WEIGHTS

START = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday
DISPERSION = 30.0  # negative binomial size: variance = μ + μ² / DISPERSION


@dataclass(frozen=True, slots=True)
class SyntheticSeries:
    series: pd.Series
    expected: pd.Series  # the noise-free mean
    anomalies: frozenset[pd.Timestamp]  # bucket starts of the injected anomalies
    evaluate_from: pd.Timestamp  # the warm-up before it gives every detector its history


@dataclass(frozen=True, slots=True)
class DetectionScore:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        injected = self.true_positives + self.false_negatives
        return self.true_positives / injected if injected else 1.0


def series_synthesize(
    *,
    seed: int,
    frequency: str = HOUR,
    weeks: int = 16,
    warmup_weeks: int = 4,
    level: float = 40.0,
    anomaly_share: float = 0.01,
    spike_min: float = 10.0,
    drop_min: float = 40.0,
) -> SyntheticSeries:
    """`weeks` of buckets averaging `level`, with about `anomaly_share` of the buckets after the
    warm-up anomalous (half spikes, half drops)."""
    rng = np.random.default_rng(seed)
    step = "h" if frequency == HOUR else "D"
    index = pd.date_range(START, periods=weeks * (168 if frequency == HOUR else 7), freq=step)
    hour_shape = np.asarray(HOUR_WEIGHTS) / np.mean(HOUR_WEIGHTS)
    day_shape = np.asarray(WEEKDAY_WEIGHTS) / np.mean(WEEKDAY_WEIGHTS)
    mean = level * day_shape[index.day_of_week] * np.linspace(1.0, 1.15, len(index))
    if frequency == HOUR:
        mean = mean * hour_shape[index.hour]
    values = rng.negative_binomial(DISPERSION, DISPERSION / (DISPERSION + mean)).astype(float)
    evaluate_from = START + pd.Timedelta(weeks=warmup_weeks)
    late = np.asarray(index >= evaluate_from)
    week = 168 if frequency == HOUR else 7
    count = max(2, round(anomaly_share * late.sum()))
    anomalies: set[int] = set()
    spikes = rng.permutation(np.flatnonzero(late & (mean >= spike_min) & (index < index[-week])))
    for position in spikes[: count // 2]:
        anomalies.add(int(position))
        values[position] = round(mean[position] * rng.uniform(2.5, 5.0))
        if rng.random() < 1 / 3:
            # The same slot a week later: the first spike is now in the second one's history.
            anomalies.add(int(position + week))
            values[position + week] = round(mean[position + week] * rng.uniform(2.5, 5.0))
    drops = rng.permutation(np.flatnonzero(late & (mean >= drop_min)))
    taken = 0
    for position in drops:
        if taken == count - count // 2:
            break
        if int(position) in anomalies:
            continue
        anomalies.add(int(position))
        values[position] = round(mean[position] * rng.uniform(0.0, 0.3))
        taken += 1
    return SyntheticSeries(
        series=pd.Series(values, index=index),
        expected=pd.Series(mean, index=index),
        anomalies=frozenset(index[sorted(anomalies)]),
        evaluate_from=evaluate_from,
    )


def detection_score(findings: Iterable[Finding], synthetic: SyntheticSeries) -> DetectionScore:
    """Exact-bucket matches between the findings (from `evaluate_from` on) and the injections."""
    flagged = {
        # A daily detector labels days with naive local dates; the synthetic days are UTC.
        f.window_start.tz_localize(START.tz) if f.window_start.tzinfo is None else f.window_start
        for f in findings
    }
    flagged = {at for at in flagged if at >= synthetic.evaluate_from}
    truth = set(synthetic.anomalies)
    return DetectionScore(
        true_positives=len(flagged & truth),
        false_positives=len(flagged - truth),
        false_negatives=len(truth - flagged),
    )


def scores_sum(scores: Iterable[DetectionScore]) -> DetectionScore:
    scores = list(scores)
    return DetectionScore(
        true_positives=sum(s.true_positives for s in scores),
        false_positives=sum(s.false_positives for s in scores),
        false_negatives=sum(s.false_negatives for s in scores),
    )
