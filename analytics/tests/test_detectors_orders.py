"""Purchase outliers and high-value orders (pure: no database; Online Retail when present)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analytics.detectors.findings import Severity
from analytics.detectors.orders import (
    HIGH_VALUE,
    IQR,
    ROBUST_Z,
    OrderConfig,
    order_distribution_fit,
    orders_detect,
)
from conftest import SHARED_DATA

RETAIL = SHARED_DATA / "online_retail" / "online_retail.csv.gz"
PLACED_AT = pd.Timestamp("2026-03-03 10:00", tz="UTC")


def lognormal_orders(seed: int, *, count: int = 2000, whales: int = 20):
    """Orders around £60 (log sd 0.6) with `whales` orders at 30–300× that, and their ids."""
    rng = np.random.default_rng(seed)
    values = np.round(np.exp(rng.normal(np.log(60), 0.6, count)), 2)
    injected = rng.choice(count, whales, replace=False)
    values[injected] = np.round(60 * rng.uniform(30, 300, whales), 2)
    orders = pd.DataFrame(
        {"order_id": [f"#{i}" for i in range(count)], "placed_at": PLACED_AT, "value": values}
    )
    return orders, {f"#{i}" for i in injected}


def test_robust_z_and_fences_match_scipy_and_numpy():
    orders, _ = lognormal_orders(1)
    logs = np.log(orders["value"])

    fit = order_distribution_fit(orders["value"], iqr_k=3.0)

    q1, q3 = np.quantile(logs, [0.25, 0.75])
    assert fit.center == pytest.approx(np.median(logs))
    assert fit.scale == pytest.approx(stats.median_abs_deviation(logs, scale="normal"), rel=1e-4)
    assert (fit.fence_low, fit.fence_high) == pytest.approx(
        (q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1))
    )


def test_outliers_are_found_with_high_precision_and_recall():
    found = injected_count = true_positives = 0
    for seed in range(10):
        orders, whales = lognormal_orders(seed)
        flagged = {f.order_id for f in orders_detect(orders, config=OrderConfig(high_value=None))}
        found += len(flagged)
        injected_count += len(whales)
        true_positives += len(flagged & whales)

    assert true_positives / found >= 0.9
    assert true_positives / injected_count >= 0.95


def test_high_value_threshold_is_per_shop():
    orders = pd.DataFrame(
        {"order_id": ["a", "b", "c"], "placed_at": PLACED_AT, "value": [20.0, 150.0, 99.0]}
    )

    default = orders_detect(orders)
    higher = orders_detect(orders, config=OrderConfig(high_value=500))
    off = orders_detect(orders, config=OrderConfig(high_value=None))

    assert [(f.order_id, f.reasons, f.severity) for f in default] == [
        ("b", (HIGH_VALUE,), Severity.INFO)
    ]
    assert np.isnan(default[0].score)  # three orders are too few for a distribution
    assert higher == []
    assert off == []


def test_a_cancelled_whale_is_flagged_and_explained():
    orders, _ = lognormal_orders(2, whales=0)
    orders.loc[len(orders)] = ["C9001", pd.Timestamp("2026-03-03 10:17", tz="UTC"), -18000.0]
    history = orders.iloc[:-1]

    [finding] = orders_detect(
        orders.tail(1), reference=history, config=OrderConfig(high_value=None)
    )

    assert finding.is_cancellation
    assert finding.reasons == (ROBUST_Z, IQR)
    assert finding.severity == Severity.CRITICAL
    expected = np.exp(np.median(np.log(history["value"])))
    assert finding.expected == pytest.approx(expected)
    assert finding.explanation == (
        f"Cancellation C9001 on Tue 3 Mar 2026 10:17 took back £18,000.00, about "
        f"{18000 / expected:,.0f}× the usual £{expected:,.2f} (the shop's median order; "
        f"robust z {finding.score:.1f} on log value)."
    )


def test_small_orders_are_flagged_only_when_the_shop_asks():
    orders, _ = lognormal_orders(3, whales=0)
    orders.loc[len(orders)] = ["tiny", PLACED_AT, 0.5]

    default = orders_detect(orders, config=OrderConfig(high_value=None))
    low_tail = orders_detect(orders, config=OrderConfig(high_value=None, low_tail=True))

    assert "tiny" not in {f.order_id for f in default}
    assert "tiny" in {f.order_id for f in low_tail}


def test_missing_columns_are_refused():
    with pytest.raises(ValueError, match="placed_at"):
        orders_detect(pd.DataFrame({"order_id": ["a"], "value": [1.0]}))


@pytest.fixture(scope="module")
def retail_invoices() -> pd.DataFrame:
    if not RETAIL.is_file():
        pytest.skip(f"UCI Online Retail not found at {RETAIL}")
    lines = pd.read_csv(RETAIL, dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str})
    lines = lines[~lines["InvoiceNo"].str.startswith("A")]  # bad-debt adjustments, not orders
    lines["value"] = lines["Quantity"] * lines["UnitPrice"]
    return (
        lines.groupby("InvoiceNo")
        .agg(value=("value", "sum"), placed_at=("InvoiceDate", "min"))
        .reset_index()
        .rename(columns={"InvoiceNo": "order_id"})
    )


def test_online_retail_extreme_orders_and_their_cancellations_are_flagged(retail_invoices):
    findings = {f.order_id: f for f in orders_detect(retail_invoices)}

    # 80,995 PAPER CRAFT, LITTLE BIRDIE (2011-12-09) and 74,215 MEDIUM CERAMIC TOP STORAGE JAR
    # (2011-01-18), each cancelled minutes later.
    for order_id, value in [("581483", 168469.6), ("C581484", -168469.6),
                            ("541431", 77183.6), ("C541433", -77183.6)]:  # fmt: skip
        assert findings[order_id].value == pytest.approx(value)
        assert set(findings[order_id].reasons) == {ROBUST_Z, IQR, HIGH_VALUE}
    assert findings["581483"].severity == Severity.CRITICAL
    assert findings["541431"].severity == Severity.WARNING
    assert findings["C581484"].is_cancellation
