"""How the conversion model does in production: pure numpy, no Django, no TensorFlow.

- `roc_auc`: the Mann-Whitney rank formula (ties get their average rank), so it needs no
  sklearn at scoring time; the tests check it against sklearn and a pairwise count.
- `score_distribution`: the test split's score distribution as the model card stores it: the
  weighted deciles of the test prefixes' scores as bin edges, and each bin's share.
- `psi`: the population stability index of live scores against that reference,
  `sum_b (live_b - ref_b) * ln(live_b / ref_b)`, each share floored at `PSI_FLOOR` so an empty
  bin costs a finite amount. Rule of thumb (and our default threshold): < 0.1 stable,
  0.1-0.25 moderate, > 0.25 a shifted population.
- `reference_from_card`: the reference of a card, or for a card written before the monitoring
  existed, the ten equal-width reliability bins of its `calibration.test` report.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

DRIFT_QUANTILES = 10
PSI_FLOOR = 1e-4


@dataclass(frozen=True, slots=True)
class ScoreReference:
    """Interior bin edges (ascending; a score equal to an edge falls in the bin above it) and
    the reference share of each of the `len(edges) + 1` bins."""

    edges: list[float]
    shares: list[float]
    source: str  # "score_distribution" or "calibration_bins"


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative), ties counting one half.

    None when the labels hold one class only (the AUC is undefined).
    """
    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    # Average ranks (1-based) of tied runs.
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], len(ordered)]
    run_ranks = (starts + ends + 1) / 2.0
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(run_ranks, ends - starts)
    rank_sum = ranks[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def _bin_index(scores: np.ndarray, edges: list[float]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges, dtype=np.float64), scores, side="right")


def score_distribution(
    scores: np.ndarray, *, weights: np.ndarray | None = None, quantiles: int = DRIFT_QUANTILES
) -> dict[str, Any]:
    """The card's `monitoring.score_distribution`: weighted quantile edges and bin shares.

    Tied scores can make quantiles coincide; repeated edges are dropped, so a bin's share is
    what the scores really put there, not 1/quantiles.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    weights = np.ones_like(scores) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("no scores to describe")
    order = np.argsort(scores, kind="mergesort")
    cumulative = np.cumsum(weights[order]) / weights.sum()
    targets = np.arange(1, quantiles) / quantiles
    positions = np.minimum(np.searchsorted(cumulative, targets, side="left"), len(scores) - 1)
    edges = sorted({round(float(scores[order][i]), 6) for i in positions})
    # An edge at the minimum would leave its lower bin empty by construction.
    edges = [edge for edge in edges if edge > scores.min()]
    index = _bin_index(scores, edges)
    shares = np.bincount(index, weights=weights, minlength=len(edges) + 1) / weights.sum()
    return {
        "edges": edges,
        "shares": [round(float(share), 6) for share in shares],
        "count": len(scores),
    }


def reference_from_card(card: dict[str, Any]) -> ScoreReference | None:
    """The training score distribution the live scores are compared with, or None."""
    stored = (card.get("monitoring") or {}).get("score_distribution")
    if stored and stored.get("shares"):
        return ScoreReference(
            edges=[float(e) for e in stored["edges"]],
            shares=[float(s) for s in stored["shares"]],
            source="score_distribution",
        )
    bins = ((card.get("calibration") or {}).get("test") or {}).get("bins") or []
    total = sum(float(b.get("weight", b.get("count", 0))) for b in bins)
    if not bins or total <= 0:
        return None
    # The reliability table lists only non-empty bins of ten equal-width ones.
    shares = [0.0] * 10
    for b in bins:
        index = min(round(float(b["low"]) * 10), 9)
        shares[index] += float(b.get("weight", b.get("count", 0))) / total
    return ScoreReference(
        edges=[round(i / 10, 1) for i in range(1, 10)], shares=shares, source="calibration_bins"
    )


def live_shares(scores: np.ndarray, reference: ScoreReference) -> list[float]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    counts = np.bincount(_bin_index(scores, reference.edges), minlength=len(reference.shares))
    return [float(c) / len(scores) for c in counts]


def psi(*, expected: list[float], actual: list[float], floor: float = PSI_FLOOR) -> float:
    """Population stability index of `actual` shares against `expected` (same bins)."""
    if len(expected) != len(actual):
        raise ValueError("the two distributions need the same bins")
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    return float(np.sum((a - e) * np.log(a / e)))
