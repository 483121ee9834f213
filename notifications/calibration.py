"""How well probabilities match outcomes: reliability table, Brier score, expected calibration
error. Pure numpy/sklearn, shared by the model card (test split) and the live report.

Bins are `BINS` equal-width intervals of the predicted probability, `[i/BINS, (i+1)/BINS)` with
1.0 in the last bin, the same bins as `sklearn.calibration.calibration_curve(strategy="uniform")`.
ECE is the weight-averaged gap between a bin's mean prediction and its observed rate:
`sum_b (W_b / W) * |mean_pred_b - rate_b|`.
"""

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss

BINS = 10


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    low: float
    high: float
    count: int  # predictions in the bin (unweighted)
    weight: float  # their total weight (= count without weights)
    mean_predicted: float
    observed_rate: float


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    count: int
    positive_rate: float
    mean_predicted: float
    brier: float
    ece: float
    bins: list[ReliabilityBin]  # only bins with predictions in them

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_report(
    *,
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray | None = None,
    bins: int = BINS,
) -> CalibrationReport:
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, 1.0)
    weights = np.ones_like(scores) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("no predictions to assess")
    total = weights.sum()
    # The same bin edges as calibration_curve(strategy="uniform"): 1.0 belongs to the last bin.
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        member = index == b
        if not member.any():
            continue
        w = weights[member]
        mean_predicted = float(np.average(scores[member], weights=w))
        observed = float(np.average(labels[member], weights=w))
        ece += w.sum() / total * abs(mean_predicted - observed)
        table.append(
            ReliabilityBin(
                low=round(b / bins, 4),
                high=round((b + 1) / bins, 4),
                count=int(member.sum()),
                weight=round(float(w.sum()), 4),
                mean_predicted=round(mean_predicted, 4),
                observed_rate=round(observed, 4),
            )
        )
    return CalibrationReport(
        count=len(scores),
        positive_rate=round(float(np.average(labels, weights=weights)), 4),
        mean_predicted=round(float(np.average(scores, weights=weights)), 4),
        brier=round(float(brier_score_loss(labels, scores, sample_weight=weights)), 4),
        ece=round(float(ece), 4),
        bins=table,
    )
