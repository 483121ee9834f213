"""The RFM gradient-boosted model and the 90-day baseline on a small simulated shop; no DB."""

import numpy as np
import pandas as pd
import pytest

from segments.predictions.rfm_model import (
    FEATURES,
    baseline_predict,
    rfm_features,
    rfm_model_fit,
    rfm_model_predict,
)

START = pd.Timestamp("2023-01-01")
CUTOFF = pd.Timestamp("2024-01-01")


@pytest.fixture(scope="module")
def shop_orders():
    """600 customers buying at individual Poisson rates (some stop at a random date); seed 3."""
    rng = np.random.default_rng(3)
    rows = []
    for customer in range(600):
        rate = rng.gamma(0.8, 1 / 20)  # purchases a day
        first = rng.uniform(0, 300)
        stop = first + rng.exponential(250)
        value = rng.gamma(3, 15)
        day = first
        while day < min(stop, 455):
            rows.append((customer, START + pd.Timedelta(days=day), value * rng.gamma(5, 0.2)))
            day += rng.exponential(1 / max(rate, 1e-3))
    return pd.DataFrame(rows, columns=["customer_id", "ordered_at", "value"])


def test_rfm_features_window_counts():
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a"],
            "ordered_at": pd.to_datetime(["2023-06-01", "2023-11-20", "2023-12-25", "2023-12-28"]),
            "value": [10.0, 20.0, 30.0, -5.0],
        }
    )

    row = rfm_features(orders, cutoff=CUTOFF).loc["a"]

    assert list(row.index) == list(FEATURES)
    assert (row["frequency"], row["recency"], row["T"]) == (2, 207, 213)
    assert (row["days_since_last"], row["mean_gap"], row["monetary"]) == (6, 103.5, 25.0)
    assert (row["orders_30d"], row["revenue_30d"]) == (1, 25.0)
    assert (row["orders_90d"], row["revenue_90d"], row["revenue_365d"]) == (2, 45.0, 55.0)


def test_baseline_repeats_each_customers_last_90_days(shop_orders):
    window = shop_orders[
        (shop_orders["ordered_at"] >= CUTOFF - pd.Timedelta(days=90))
        & (shop_orders["ordered_at"] < CUTOFF)
    ]

    baseline = baseline_predict(shop_orders, cutoff=CUTOFF)

    spend = window.groupby("customer_id")["value"].sum()
    known = shop_orders.loc[shop_orders["ordered_at"] < CUTOFF, "customer_id"].unique()
    assert sorted(baseline.index) == sorted(known)
    pd.testing.assert_series_equal(
        baseline["expected_revenue"].loc[spend.index], spend, check_names=False
    )
    assert (baseline["expected_revenue"].drop(spend.index) == 0).all()


def test_rfm_model_never_sees_orders_after_the_cutoff(shop_orders):
    later = pd.DataFrame(
        {
            "customer_id": [0, 1, 2],
            "ordered_at": [CUTOFF, CUTOFF + pd.Timedelta(days=5), CUTOFF + pd.Timedelta(days=80)],
            "value": [500.0, 80.0, -40.0],
        }
    )
    before = shop_orders[shop_orders["ordered_at"] < CUTOFF]

    model = rfm_model_fit(before, cutoff=CUTOFF)
    again = rfm_model_fit(pd.concat([before, later]), cutoff=CUTOFF)

    features = rfm_features(before, cutoff=CUTOFF)
    pd.testing.assert_frame_equal(
        rfm_model_predict(model, features), rfm_model_predict(again, features)
    )


def test_rfm_model_ranks_frequent_recent_buyers_higher(shop_orders):
    model = rfm_model_fit(shop_orders, cutoff=CUTOFF)
    features = rfm_features(shop_orders, cutoff=CUTOFF)

    predicted = rfm_model_predict(model, features)

    assert (predicted[["expected_orders", "expected_revenue"]] >= 0).all().all()
    assert predicted["purchase_probability"].between(0, 1).all()
    recent = features["orders_90d"] >= 3
    lapsed = features["days_since_last"] > 180
    assert recent.sum() > 10
    assert lapsed.sum() > 10
    assert (
        predicted.loc[recent, "expected_orders"].mean()
        > 5 * predicted.loc[lapsed, "expected_orders"].mean()
    )
    assert (
        predicted.loc[recent, "purchase_probability"].mean()
        > predicted.loc[lapsed, "purchase_probability"].mean() + 0.3
    )


def test_rfm_model_refuses_a_shop_without_history():
    orders = pd.DataFrame(
        {"customer_id": [1], "ordered_at": [CUTOFF - pd.Timedelta(days=1)], "value": [10.0]}
    )

    with pytest.raises(ValueError, match="too little history"):
        rfm_model_fit(orders, cutoff=CUTOFF)
