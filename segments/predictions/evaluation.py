"""Backtest metrics for customer-level predictions against what customers then did.

Ties are common (a baseline predicts 0 for most customers), so every rank metric treats tied
predictions as an unknown order and reports the average over it: Spearman uses mid-ranks,
ROC-AUC counts a tie as half, and the Gini spreads a tied group's actual value evenly.
"""

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True, slots=True)
class ValueScores:
    mae: float
    spearman: float
    gini: float


def _gini_raw(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Area between the cumulative-share curve (customers sorted by `predicted`, highest first)
    and the diagonal; tied predictions share their group's actual total evenly."""
    n = len(actual)
    order = np.argsort(-predicted, kind="stable")
    a, p = actual[order], predicted[order]
    # Each tied group's members get the group mean: the expectation over the tie's orderings,
    # since the cumulative sum is linear in the order of the values.
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    sums = np.add.reduceat(a, starts)
    sizes = np.diff(np.r_[starts, n])
    spread = np.repeat(sums / sizes, sizes)
    cumulative = np.cumsum(spread) / a.sum()
    return float(cumulative.sum() / n - (n + 1) / (2 * n))


def gini_normalized(actual, predicted) -> float:
    """Gini of `actual` ordered by `predicted`, divided by the Gini of the perfect order.

    1 = the prediction ranks customers exactly as their spend did, 0 = no better than random.
    """
    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if len(a) < 2 or a.sum() <= 0:
        raise ValueError("gini: needs at least two customers and a positive total")
    return _gini_raw(a, p) / _gini_raw(a, a)


def value_scores(actual, predicted) -> ValueScores:
    """MAE, Spearman rank correlation and normalised Gini of a per-customer prediction."""
    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    return ValueScores(
        mae=float(np.mean(np.abs(a - p))),
        spearman=float(spearmanr(a, p).statistic),
        gini=gini_normalized(a, p),
    )


def ranking_auc(bought, score) -> float:
    """ROC-AUC of a score against a 0/1 outcome (did the customer buy in the window)."""
    return float(roc_auc_score(np.asarray(bought, dtype=int), np.asarray(score, dtype=float)))
