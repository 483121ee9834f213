"""The per-shop choice between BG/NBD + Gamma-Gamma and the GBM, on constructed shops; no DB.

Two shops where one model clearly wins by construction:
- "periodic": every customer buys at her own fixed interval; half of them stop for good right
  after their third purchase. BG/NBD's buying process is memoryless and its dropout random, so
  it ranks the 2-repeat customers (all gone) among the best; the GBM's frequency and gap
  features separate them.
- "btyd": customers drawn from the BG/NBD + Gamma-Gamma story itself, where BG/NBD is the true
  model and the GBM only approximates it from ~2,000 training rows.
The backtest's figures are recomputed independently: the cut-off and the holdout's actual
spend with plain pandas, BG/NBD's summary by hand, MAE with numpy, Spearman with scipy, the
Gini by averaging over tie orders with pandas, the AUC by counting pairs.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from segments.predictions import btyd
from segments.predictions.customers import (
    BACKTEST_HOLDOUT_DAYS,
    GBM_MAX_TRAINING_ROWS,
    GBM_THREADS,
    MODEL_BGNBD_GG,
    MODEL_RFM_GBM,
    choice_wins,
    customers_fit,
    customers_model_choose,
    customers_predict,
)
from segments.predictions.rfm_model import rfm_features, rfm_model_fit, rfm_model_predict

START = pd.Timestamp("2025-01-01")
DAYS = 420
CUTOFF = START + pd.Timedelta(days=DAYS)


def _periodic_shop(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for customer in range(600):
        first, gap = rng.uniform(0, DAYS - 30), rng.uniform(12, 40)
        stops_after = 3 if rng.random() < 0.5 else 10_000
        value = rng.uniform(20, 200)
        day, bought = first, 0
        while day < DAYS and bought < stops_after:
            rows.append((customer, START + pd.Timedelta(days=day), value * rng.uniform(0.8, 1.2)))
            day, bought = day + gap, bought + 1
    return pd.DataFrame(rows, columns=["customer_id", "ordered_at", "value"])


def _btyd_shop(seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for customer in range(800):
        rate, dropout = rng.gamma(0.8, 1 / 25), rng.beta(1.0, 6.0)
        scale = 1 / rng.gamma(4, 1 / 400)
        day = rng.uniform(0, DAYS - 30)
        while day < DAYS:
            rows.append((customer, START + pd.Timedelta(days=day), rng.gamma(3, scale)))
            if rng.random() < dropout:
                break
            day += rng.exponential(1 / rate)
    return pd.DataFrame(rows, columns=["customer_id", "ordered_at", "value"])


@pytest.fixture(scope="module")
def periodic():
    orders = _periodic_shop()
    summary, fit = customers_fit(orders, cutoff=CUTOFF)
    return orders, summary, customers_model_choose(orders, fit, cutoff=CUTOFF)


def _gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Normalised Gini; a group of tied predictions gets its mean actual (every order averaged)."""

    def raw(score):
        frame = pd.DataFrame({"a": actual, "s": score})
        frame["a"] = frame.groupby("s")["a"].transform("mean")
        frame = frame.sort_values("s", ascending=False)
        n = len(frame)
        lorenz = frame["a"].cumsum() / frame["a"].sum()
        return lorenz.mean() - (n + 1) / (2 * n)

    return raw(predicted) / raw(actual)


def _auc(bought: np.ndarray, score: np.ndarray) -> float:
    pos, neg = score[bought == 1], score[bought == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return greater / (len(pos) * len(neg))


def test_the_periodic_shop_is_given_the_gbm(periodic):
    _, _, fit = periodic
    assert fit.kind == MODEL_RFM_GBM
    assert fit.backtest["ran"]
    assert fit.backtest["winner"] == MODEL_RFM_GBM
    assert all(fit.backtest["wins"].values())
    figures = fit.backtest["figures"]
    # Clearly: half the revenue error of BG/NBD, not a coin toss.
    assert figures[MODEL_RFM_GBM]["revenue_mae"] < 0.7 * figures[MODEL_BGNBD_GG]["revenue_mae"]
    assert fit.gbm is not None
    assert fit.parameters["gbm"]["training_rows"] > 0


def test_the_btyd_shop_keeps_bgnbd():
    orders = _btyd_shop()
    _, fit = customers_fit(orders, cutoff=CUTOFF)
    chosen = customers_model_choose(orders, fit, cutoff=CUTOFF)
    assert chosen.kind == MODEL_BGNBD_GG
    assert chosen.gbm is None
    assert chosen.backtest["ran"]
    assert chosen.backtest["winner"] == MODEL_BGNBD_GG
    assert not any(chosen.backtest["wins"].values())


def test_backtest_figures_equal_an_independent_computation(periodic):
    orders, _, fit = periodic
    backtest = fit.backtest
    last_day = orders.loc[orders["value"] >= 0, "ordered_at"].max().normalize()
    cut = last_day + pd.Timedelta(days=1 - BACKTEST_HOLDOUT_DAYS)
    end = last_day + pd.Timedelta(days=1)
    assert backtest["cutoff"] == cut.date().isoformat()
    assert backtest["holdout_end"] == end.date().isoformat()

    before = orders[orders["ordered_at"] < cut]
    days = before.assign(day=before["ordered_at"].dt.normalize())
    per_day = days.groupby(["customer_id", "day"])["value"].sum().reset_index()
    grouped = per_day.groupby("customer_id")
    x = grouped.size() - 1
    t_x = (grouped["day"].max() - grouped["day"].min()).dt.days
    big_t = ((cut - pd.Timedelta(days=1)) - grouped["day"].min()).dt.days
    monetary = ((grouped["value"].sum() - grouped["value"].first()) / x).where(x > 0, 0.0)
    customers = x.index
    assert backtest["customers"] == len(customers)

    window = orders[(orders["ordered_at"] >= cut) & (orders["ordered_at"] < end)]
    actual = window.groupby("customer_id")["value"].sum().reindex(customers, fill_value=0.0)
    actual_days = (
        window.assign(day=window["ordered_at"].dt.normalize())
        .groupby("customer_id")["day"]
        .nunique()
        .reindex(customers, fill_value=0)
    )
    soon = window[window["ordered_at"] < cut + pd.Timedelta(days=30)]
    bought_30 = customers.isin(soon["customer_id"]).astype(int)
    assert backtest["holdout_buyers"] == int((actual_days > 0).sum())

    # BG/NBD + Gamma-Gamma fitted on the hand-built summary (no refunds: net share 1).
    bg = btyd.bgnbd_fit(x, t_x, big_t)
    repeat = x > 0
    gg = btyd.gamma_gamma_fit(x[repeat], monetary[repeat])
    bg_orders = btyd.bgnbd_expected_purchases(bg, 90, x, t_x, big_t)
    bg_revenue = bg_orders * btyd.gamma_gamma_expected_value(gg, x, monetary)
    bg_buy = btyd.bgnbd_purchase_probability(bg, 30, x, t_x, big_t)
    with threadpool_limits(limits=GBM_THREADS, user_api="openmp"):  # as the refresh runs it
        gbm = rfm_model_fit(before, cutoff=cut, max_rows=GBM_MAX_TRAINING_ROWS)
        gbm_pred = rfm_model_predict(gbm, rfm_features(before, cutoff=cut)).reindex(customers)
    expected = {
        MODEL_BGNBD_GG: (bg_orders, bg_revenue, bg_buy),
        MODEL_RFM_GBM: tuple(
            gbm_pred[c].to_numpy()
            for c in ("expected_orders", "expected_revenue", "purchase_probability")
        ),
    }
    for name, (pred_orders, pred_revenue, pred_buy) in expected.items():
        figures = backtest["figures"][name]
        a = actual.to_numpy()
        assert figures["revenue_mae"] == pytest.approx(np.abs(a - pred_revenue).mean(), rel=1e-4)
        assert figures["revenue_spearman"] == pytest.approx(
            spearmanr(a, pred_revenue).statistic, abs=1e-4
        )
        assert figures["revenue_gini"] == pytest.approx(_gini(a, pred_revenue), abs=1e-4)
        assert figures["orders_mae"] == pytest.approx(
            np.abs(actual_days.to_numpy() - pred_orders).mean(), rel=1e-4
        )
        # Like the other rank figures, to 1e-4: the two BG/NBD fits (the refresh's and this one's)
        # stop the optimiser at slightly different points on different CPUs (1.5e-5 on an EPYC).
        assert figures["purchase_auc_30"] == pytest.approx(_auc(bought_30, pred_buy), abs=1e-4), (
            name
        )
    # The baseline: the previous 90 days' spend.
    recent = before[before["ordered_at"] >= cut - pd.Timedelta(days=90)]
    base = recent.groupby("customer_id")["value"].sum().reindex(customers, fill_value=0.0)
    assert backtest["figures"]["baseline"]["revenue_mae"] == pytest.approx(
        np.abs(actual - base).mean(), rel=1e-9
    )


def test_gbm_predictions_replace_the_90_day_figures(periodic):
    orders, summary, fit = periodic
    predicted = customers_predict(summary, fit, orders)
    with threadpool_limits(limits=GBM_THREADS, user_api="openmp"):
        gbm = rfm_model_predict(fit.gbm, rfm_features(orders, cutoff=CUTOFF))
    gbm = gbm.reindex(summary.index)
    bgnbd_only = customers_predict(summary, customers_fit(orders, cutoff=CUTOFF)[1])
    np.testing.assert_allclose(predicted["expected_orders_90"], gbm["expected_orders"])
    np.testing.assert_allclose(predicted["expected_revenue_90"], gbm["expected_revenue"])
    np.testing.assert_allclose(predicted["purchase_probability_30"], gbm["purchase_probability"])
    ratio = bgnbd_only["expected_orders_365"] / bgnbd_only["expected_orders_90"]
    np.testing.assert_allclose(predicted["expected_revenue_365"], gbm["expected_revenue"] * ratio)
    np.testing.assert_allclose(
        predicted["predicted_clv"], summary["revenue"] + predicted["expected_revenue_365"]
    )
    for column in ("alive_probability", "churn_risk"):
        np.testing.assert_allclose(predicted[column], bgnbd_only[column])
    with pytest.raises(ValueError, match="needs the orders"):
        customers_predict(summary, fit)


def test_a_short_history_keeps_bgnbd_and_says_why():
    orders = _btyd_shop()
    recent = orders[orders["ordered_at"] >= CUTOFF - pd.Timedelta(days=200)]
    _, fit = customers_fit(recent, cutoff=CUTOFF)
    chosen = customers_model_choose(recent, fit, cutoff=CUTOFF)
    assert chosen.kind == MODEL_BGNBD_GG
    assert not chosen.backtest["ran"]
    assert "needs orders spanning 300 days" in chosen.backtest["reason"]


def test_rule_ties_and_missing_figures_go_to_bgnbd():
    default = {"revenue_mae": 10.0, "revenue_spearman": 0.5, "revenue_gini": 0.6}
    assert choice_wins(dict(default), default) == dict.fromkeys(default, False)
    better = {"revenue_mae": 9.0, "revenue_spearman": 0.6, "revenue_gini": None}
    assert choice_wins(better, default) == {
        "revenue_mae": True,
        "revenue_spearman": True,
        "revenue_gini": False,
    }


def test_next_order_days_equals_a_root_finder():
    """t with P(order in (T, T+t]) = 1/2, found by brentq on the formula's own pieces."""
    from scipy.optimize import brentq

    from segments.predictions.customers import NEXT_ORDER_MAX_DAYS, next_order_days

    params = btyd.BgNbdParams(
        r=0.72, alpha=65.6, a=0.35, b=2.1, log_likelihood=0.0, customer_count=0
    )
    cases = [(0, 0.0, 10.0), (1, 20.0, 60.0), (3, 80.0, 100.0), (12, 300.0, 310.0), (2, 5.0, 200.0)]
    x, t_x, big_t = (np.array(c, dtype=float) for c in zip(*cases, strict=True))
    got = next_order_days(params, x, t_x, big_t)
    for i in range(len(cases)):

        def gap(t, i=i):
            # P(alive) * (1 - ((alpha+T)/(alpha+T+t))^(r+x)) - 1/2, written out from FHL 2005.
            alive = btyd.bgnbd_probability_alive(params, x[i], t_x[i], big_t[i])
            share = (params.alpha + big_t[i]) / (params.alpha + big_t[i] + t)
            return float(alive * (1 - share ** (params.r + x[i])) - 0.5)

        if gap(NEXT_ORDER_MAX_DAYS) < 0:
            assert np.isnan(got[i])  # never an even chance within the cap
        else:
            root = brentq(gap, 1e-9, NEXT_ORDER_MAX_DAYS, xtol=1e-10)
            assert got[i] == pytest.approx(root, rel=1e-8)
            # and the probability the model reports there is one half
            p = btyd.bgnbd_purchase_probability(params, got[i], x[i], t_x[i], big_t[i])
            assert float(p) == pytest.approx(0.5, abs=1e-9)
    assert np.isfinite(got).sum() >= 3
    assert np.isnan(got).sum() >= 1
