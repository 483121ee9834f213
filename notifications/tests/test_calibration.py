import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from notifications.calibration import calibration_report


def test_reliability_bins_match_sklearns_calibration_curve():
    rng = np.random.default_rng(3)
    scores = rng.beta(1, 4, size=5000)
    labels = (rng.random(5000) < scores**0.8).astype(int)

    report = calibration_report(labels=labels, scores=scores)

    observed, predicted = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    np.testing.assert_allclose([b.observed_rate for b in report.bins], observed, atol=1e-4)
    np.testing.assert_allclose([b.mean_predicted for b in report.bins], predicted, atol=1e-4)
    assert report.brier == pytest.approx(brier_score_loss(labels, scores), abs=1e-4)
    counts = np.bincount(np.minimum((scores * 10).astype(int), 9), minlength=10)
    expected_ece = sum(
        n / len(scores) * abs(p - o)
        for n, p, o in zip(counts[counts > 0], predicted, observed, strict=True)
    )
    assert report.ece == pytest.approx(expected_ece, abs=1e-4)


def test_a_calibrated_forecaster_has_a_small_ece_and_an_overconfident_one_a_large_one():
    rng = np.random.default_rng(5)
    truth = rng.uniform(0.0, 0.3, size=20_000)
    labels = (rng.random(20_000) < truth).astype(int)

    honest = calibration_report(labels=labels, scores=truth)
    saturated = calibration_report(labels=labels, scores=np.where(truth > 0.15, 1.0, 0.0))

    assert honest.ece < 0.01
    assert saturated.ece > 0.3


def test_weights_count_a_prediction_as_often_as_its_weight():
    labels = np.array([1, 0, 0])
    scores = np.array([0.9, 0.2, 0.2])

    weighted = calibration_report(labels=labels[:2], scores=scores[:2], weights=np.array([1, 2]))
    repeated = calibration_report(labels=labels, scores=scores)

    assert (weighted.brier, weighted.ece, weighted.positive_rate) == (
        repeated.brier,
        repeated.ece,
        repeated.positive_rate,
    )
    assert [(b.count, b.weight, b.mean_predicted, b.observed_rate) for b in weighted.bins] == [
        (1, 2.0, 0.2, 0.0),
        (1, 1.0, 0.9, 1.0),
    ]
    assert [b.count for b in repeated.bins] == [2, 1]
