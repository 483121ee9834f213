"""The order summariser (frequency / recency / T / monetary) and the backtest metrics; no DB."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from conftest import SHARED_DATA
from segments.predictions.evaluation import gini_normalized, ranking_auc, value_scores
from segments.predictions.summary import holdout_summarize, orders_net_share, orders_summarize

CDNOW = SHARED_DATA / "customers" / "cdnow"
CUTOFF = pd.Timestamp("2024-02-01")


def orders_frame(*rows: tuple[str, str, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "ordered_at", "value"]).assign(
        ordered_at=lambda f: pd.to_datetime(f["ordered_at"])
    )


ORDERS = orders_frame(
    ("ann", "2024-01-01 09:00", 10.0),
    ("ann", "2024-01-01 17:00", 5.0),  # same day: one purchase occasion worth 15
    ("ann", "2024-01-08 10:00", 30.0),
    ("ann", "2024-01-15 10:00", 50.0),
    ("ann", "2024-01-20 10:00", -20.0),  # a refund: revenue, not a purchase
    ("bob", "2024-01-31 23:59", 0.0),  # a free order on the window's last day is a purchase
    ("cat", "2024-01-10 12:00", 40.0),
    ("cat", "2024-02-01 00:00", 99.0),  # at the cut-off: outside [start, cutoff)
    ("cat", "2024-02-03 08:00", 60.0),
    ("cat", "2024-02-03 18:00", 15.0),
    ("cat", "2024-02-20 08:00", -10.0),
)


def test_orders_summarize_counts_purchase_days_and_nets_refunds():
    summary = orders_summarize(ORDERS, cutoff=CUTOFF)

    rows = summary[["frequency", "recency", "T", "monetary", "revenue"]]
    assert list(rows.itertuples(name=None)) == [
        ("ann", 2, 14.0, 30.0, 40.0, 75.0),
        ("bob", 0, 0.0, 0.0, 0.0, 0.0),
        ("cat", 0, 0.0, 21.0, 0.0, 40.0),
    ]


def test_orders_summarize_in_weeks_divides_durations():
    summary = orders_summarize(ORDERS, cutoff=CUTOFF, unit_days=7)

    assert (summary.loc["ann", "recency"], summary.loc["ann", "T"]) == (2.0, 30 / 7)
    assert summary.loc["cat", "T"] == 3.0


def test_holdout_summarize_counts_purchase_days_and_net_revenue():
    holdout = holdout_summarize(ORDERS, start=CUTOFF, end=CUTOFF + pd.Timedelta(days=30))

    assert list(holdout.itertuples(name=None)) == [("cat", 2, 164.0)]


def test_orders_net_share_is_net_over_order_value():
    assert orders_net_share(ORDERS, cutoff=CUTOFF) == pytest.approx(115 / 135)


def test_orders_summarize_reproduces_the_published_cdnow_summary():
    transactions, published = CDNOW / "CDNOW_sample.txt", CDNOW / "cdnow_customers_summary.csv"
    if not transactions.is_file() or not published.is_file():
        pytest.skip(f"CDNOW files not found in {CDNOW}")
    raw = pd.read_fwf(
        transactions,
        header=None,
        names=["id", "cohort", "date", "cds", "value"],
        dtype={"date": str},
    )
    orders = pd.DataFrame(
        {
            "customer_id": raw["id"],
            "ordered_at": pd.to_datetime(raw["date"], format="%Y%m%d"),
            "value": raw["value"],
        }
    )
    expected = pd.read_csv(published)

    summary = orders_summarize(orders, cutoff=pd.Timestamp("1997-10-01"), unit_days=7)

    # The published file numbers customers 1..2357 in order of first purchase, then id.
    ours = summary.sort_values(["first_at", "customer_id"]).reset_index()
    assert len(ours) == 2357
    assert (ours["frequency"].to_numpy() == expected["frequency"].to_numpy()).all()
    np.testing.assert_array_equal(ours["recency"].round(2), expected["recency"])
    np.testing.assert_array_equal(ours["T"].round(2), expected["T"])


def _gini_by_permutations(actual, predicted):
    """Brute force: the plain (Kaggle) Gini averaged over every order of tied predictions."""
    n = len(actual)
    groups = [
        [i for i in range(n) if predicted[i] == value]
        for value in sorted(set(predicted), reverse=True)
    ]
    totals = []
    for orders in itertools.product(*(itertools.permutations(g) for g in groups)):
        ranked = [actual[i] for group in orders for i in group]
        cumulative = np.cumsum(ranked) / sum(actual)
        totals.append(cumulative.sum() / n - (n + 1) / (2 * n))
    perfect = np.cumsum(sorted(actual, reverse=True)) / sum(actual)
    return np.mean(totals) / (perfect.sum() / n - (n + 1) / (2 * n))


def test_gini_normalized_averages_over_tied_predictions():
    actual = [0.0, 5.0, 1.0, 0.0, 12.0, 3.0]
    predicted = [0.0, 2.0, 0.0, 0.0, 2.0, 1.0]

    gini = gini_normalized(actual, predicted)

    assert gini == pytest.approx(_gini_by_permutations(actual, predicted), rel=1e-12)
    assert gini_normalized(actual, actual) == 1.0
    assert gini_normalized(actual, [1.0] * 6) == pytest.approx(0.0, abs=1e-12)


def test_value_scores_and_auc_against_direct_computations():
    actual = np.array([0.0, 5.0, 1.0, 0.0, 12.0, 3.0])
    predicted = np.array([1.0, 4.0, 0.0, 0.5, 9.0, 3.0])

    scores = value_scores(actual, predicted)
    auc = ranking_auc(actual > 0, [0.1, 0.9, 0.1, 0.2, 0.8, 0.1])

    assert scores.mae == pytest.approx(np.mean([1, 1, 1, 0.5, 3, 0]))
    assert scores.spearman == pytest.approx(spearmanr(actual, predicted).statistic)
    # Positives 0.9, 0.1, 0.8, 0.1 against negatives 0.1, 0.2: 2 + 0.5 + 2 + 0.5 wins of 8.
    assert auc == pytest.approx(5 / 8)
