"""The monitoring metrics against independent computations: sklearn's ROC-AUC and a count
over every (positive, negative) pair; scipy's KL divergences for the PSI; numpy's histogram
and weighted quantiles for the bins."""

import numpy as np
import pytest
from scipy.stats import entropy
from sklearn.metrics import roc_auc_score

from notifications.monitor.metrics import (
    live_shares,
    psi,
    reference_from_card,
    roc_auc,
    score_distribution,
)


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    positive, negative = scores[labels == 1], scores[labels == 0]
    wins = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return (wins + 0.5 * ties) / (len(positive) * len(negative))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_roc_auc_equals_sklearn_and_the_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    # Rounded to two places: many tied scores across both classes.
    scores = np.round(np.clip(rng.normal(0.2 + 0.1 * labels, 0.1), 0, 1), 2)

    value = roc_auc(labels, scores)

    assert value == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert value == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_roc_auc_of_a_perfect_a_reversed_and_a_constant_ranking():
    labels = np.array([0, 0, 1, 1])

    assert roc_auc(labels, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(labels, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert roc_auc(labels, np.full(4, 0.3)) == 0.5
    assert roc_auc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_psi_is_the_sum_of_both_kl_divergences():
    expected = [0.1, 0.2, 0.3, 0.4]
    actual = [0.25, 0.25, 0.25, 0.25]

    value = psi(expected=expected, actual=actual)

    assert value == pytest.approx(entropy(actual, expected) + entropy(expected, actual))
    assert psi(expected=expected, actual=expected) == 0.0


def test_psi_floors_an_empty_bin_and_refuses_different_bins():
    value = psi(expected=[0.5, 0.5], actual=[1.0, 0.0])

    assert value == pytest.approx(0.5 * np.log(1.0 / 0.5) + (1e-4 - 0.5) * np.log(1e-4 / 0.5))
    with pytest.raises(ValueError, match="same bins"):
        psi(expected=[0.5, 0.5], actual=[1.0])


def test_score_distribution_has_decile_edges_and_the_shares_numpy_counts():
    rng = np.random.default_rng(7)
    scores = rng.beta(2, 12, 2000)

    stored = score_distribution(scores)

    assert len(stored["edges"]) == 9
    deciles = np.quantile(scores, np.arange(1, 10) / 10, method="inverted_cdf")
    assert stored["edges"] == pytest.approx(deciles, abs=1e-6)
    counts, _ = np.histogram(scores, bins=[-np.inf, *stored["edges"], np.inf])
    # numpy's histogram puts a value equal to an edge in the bin above it, as we do.
    assert stored["shares"] == pytest.approx(counts / len(scores), abs=1e-6)
    assert stored["count"] == 2000


def test_score_distribution_weights_and_tied_scores():
    scores = np.array([0.1] * 6 + [0.5] * 4)
    weights = np.array([1.0] * 6 + [2.0] * 4)

    stored = score_distribution(scores, weights=weights)

    # Every decile edge is 0.1 or 0.5: the repeated ones collapse; 0.1 is the minimum.
    assert stored["edges"] == [0.5]
    assert stored["shares"] == pytest.approx([6 / 14, 8 / 14])


def test_reference_from_a_card_with_and_without_the_monitoring_part():
    new_card = {"monitoring": {"score_distribution": {"edges": [0.2], "shares": [0.7, 0.3]}}}
    old_card = {
        "calibration": {
            "test": {
                "bins": [
                    {"low": 0.0, "high": 0.1, "count": 6, "weight": 6.0},
                    {"low": 0.3, "high": 0.4, "count": 2, "weight": 4.0},
                ]
            }
        }
    }

    new = reference_from_card(new_card)
    old = reference_from_card(old_card)

    assert (new.edges, new.shares, new.source) == ([0.2], [0.7, 0.3], "score_distribution")
    assert old.source == "calibration_bins"
    assert old.edges == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert old.shares == pytest.approx([0.6, 0, 0, 0.4, 0, 0, 0, 0, 0, 0])
    assert reference_from_card({}) is None


def test_live_shares_bin_like_numpy_histogram():
    reference = reference_from_card(
        {"monitoring": {"score_distribution": {"edges": [0.1, 0.3], "shares": [0.2, 0.5, 0.3]}}}
    )
    scores = np.array([0.05, 0.1, 0.2, 0.3, 0.9])

    shares = live_shares(scores, reference)

    counts, _ = np.histogram(scores, bins=[-np.inf, 0.1, 0.3, np.inf])
    assert shares == pytest.approx(counts / 5)
    assert shares == pytest.approx([0.2, 0.4, 0.4])
