"""A shop's order table to one prediction per customer: the nightly refresh's pure core.

`customers_fit` decides whether the shop has enough history for its own BG/NBD + Gamma-Gamma
fit (the model that won the Online Retail backtest, docs/customers.md) and fits it;
`customers_predict` turns the fit into each customer's figures. No database, no clock: the
refresh (segments/services/customers.py) reads the orders and writes the rows.

Minimums for a shop's own fit (below any of them the shop gets no predictions and the API and
the Customers page say which minimum is not met, rather than showing numbers from too little
data): MIN_CUSTOMERS customers with an order, MIN_REPEAT_CUSTOMERS of them with a repeat
purchase day (Gamma-Gamma is fitted on repeat customers only), MIN_HISTORY_DAYS days from the
shop's first order. Klaviyo asks for 500 purchasers and 180 days; these are lower so that a
young shop is served earlier, and the fit's own uncertainty is what a small shop pays for it.

Per-shop model choice (`model_choose`): when the shop's orders span at least
BACKTEST_MIN_SPAN_DAYS, both candidates are backtested on the shop's own orders with a time
split (fit on orders before the last purchase day + 1 - BACKTEST_HOLDOUT_DAYS, predict the
BACKTEST_HOLDOUT_DAYS after it) and the gradient-boosted RFM model (rfm_model.py) replaces
BG/NBD + Gamma-Gamma for the 90-day figures when it beats it on at least two of the three
holdout-revenue metrics (MAE, Spearman, normalised Gini); a tie on a metric counts for BG/NBD,
the default (it needs no training window and its parameters can be read). Otherwise, or without
enough history, BG/NBD + Gamma-Gamma is kept and the reason is recorded.

Churn risk = P(no order in the next CHURN_HORIZON_DAYS | history): bands low < CHURN_MEDIUM <=
medium < CHURN_HIGH <= high. The expected next order is the day by which the customer has an
even chance of having ordered again (closed form in `next_order_days`), none when that chance
never reaches one half (P(alive) <= 0.5) or only after NEXT_ORDER_MAX_DAYS.
"""

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from segments.predictions.btyd import (
    BgNbdParams,
    FitError,
    GammaGammaParams,
    bgnbd_expected_purchases,
    bgnbd_fit,
    bgnbd_probability_alive,
    bgnbd_purchase_probability,
    gamma_gamma_expected_value,
    gamma_gamma_fit,
)
from segments.predictions.evaluation import ranking_auc, value_scores
from segments.predictions.rfm_model import (
    FEATURES,
    RfmModel,
    baseline_predict,
    rfm_features,
    rfm_model_fit,
    rfm_model_predict,
)
from segments.predictions.summary import (
    DAY,
    holdout_summarize,
    orders_net_share,
    orders_summarize,
    orders_validate,
)

MIN_CUSTOMERS = 100
MIN_REPEAT_CUSTOMERS = 20
MIN_HISTORY_DAYS = 90
CHURN_HORIZON_DAYS = 365
CHURN_MEDIUM = 0.4
CHURN_HIGH = 0.7
NEXT_ORDER_MAX_DAYS = 730
PURCHASE_HORIZON_DAYS = 30
HORIZONS = (90, 365)

MODEL_BGNBD_GG = "bgnbd_gg"
MODEL_RFM_GBM = "rfm_gbm"
MODEL_NONE = "none"
# The backtest's holdout; the GBM's own training needs origins up to 180 days before its
# cut-off (rfm_model_fit: horizon 90 + 3 steps of 30) and some history before the earliest, so
# the orders must span holdout + 180 + 30 days before the choice is made.
BACKTEST_HOLDOUT_DAYS = 90
BACKTEST_MIN_SPAN_DAYS = BACKTEST_HOLDOUT_DAYS + 180 + 30
BACKTEST_MIN_HOLDOUT_BUYERS = 20
# The GBM's training rows are sampled down to this many (the refresh's time target at 100,000
# customers: four origins give up to 400,000 rows, and the trees gain little past ~50,000).
GBM_MAX_TRAINING_ROWS = 40_000
# The GBM's OpenMP threads: one. The nightly refresh runs beside other work on shared cores,
# where OpenMP's spinning threads made a fit 2-8x slower than one thread (bench/customers.py:
# 8 s single-threaded against 18-60 s with the default threads at load 5 on 2 cores).
GBM_THREADS = 1
# The metrics of the rule: for each, whether higher is better.
CHOICE_METRICS = {"revenue_mae": False, "revenue_spearman": True, "revenue_gini": True}
PREDICTION_COLUMNS = [
    "alive_probability",
    "expected_orders_90",
    "expected_orders_365",
    "expected_revenue_90",
    "expected_revenue_365",
    "predicted_clv",
    "purchase_probability_30",
    "next_order_days",
    "churn_risk",
    "churn_band",
]


@dataclass(frozen=True, slots=True)
class CustomerFit:
    kind: str
    reason: str
    customer_count: int
    repeat_customer_count: int
    history_days: int
    bgnbd: BgNbdParams | None = None
    gamma_gamma: GammaGammaParams | None = None
    net_share: float = 1.0
    parameters: dict = field(default_factory=dict)
    # The instant the summary and the fit stop at (the GBM's features are taken there).
    cutoff: pd.Timestamp | None = None
    # Set when the backtest chose the GBM: it replaces BG/NBD's 90-day figures.
    gbm: RfmModel | None = None
    # The backtest's cut-off, holdout, each model's figures, the rule and the winner, or why
    # none was run (`customers_backtest`).
    backtest: dict = field(default_factory=dict)


def _weighted(summary: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Identical rows once with their count: day-granular summaries repeat a lot, and the
    likelihood of n identical customers is n times one's."""
    return summary.groupby(columns, sort=False).size().rename("weight").reset_index()


def customers_fit(
    orders: pd.DataFrame, *, cutoff: pd.Timestamp
) -> tuple[pd.DataFrame, CustomerFit]:
    """The per-customer summary (days) of orders before `cutoff`, and the shop's fit or why none.

    `orders`: `customer_id`, `ordered_at` (shop-local, naive), `value` (an order's total, or a
    refund as a negative value), as `summary.orders_summarize` reads them.
    """
    frame = orders_validate(orders)
    summary = orders_summarize(frame, cutoff=cutoff)
    customers = len(summary)
    repeaters = int((summary["frequency"] > 0).sum()) if customers else 0
    history = int((cutoff - summary["first_at"].min()) / pd.Timedelta(days=1)) if customers else 0
    counted = (customers, repeaters, history)
    missing = [
        f"{need} {what} (this shop: {have})"
        for need, what, have in (
            (MIN_CUSTOMERS, "customers with an order", customers),
            (MIN_REPEAT_CUSTOMERS, "customers with a repeat purchase", repeaters),
            (MIN_HISTORY_DAYS, "days since the first order", history),
        )
        if have < need
    ]
    if missing:
        reason = "Predictions need at least " + "; ".join(missing) + "."
        return summary, CustomerFit(MODEL_NONE, reason, *counted)
    try:
        counts = _weighted(summary, ["frequency", "recency", "T"])
        bgnbd = bgnbd_fit(
            counts["frequency"], counts["recency"], counts["T"], weights=counts["weight"]
        )
        repeat = summary[(summary["frequency"] > 0) & (summary["monetary"] > 0)]
        values = _weighted(repeat, ["frequency", "monetary"])
        spend = gamma_gamma_fit(values["frequency"], values["monetary"], weights=values["weight"])
        if spend.q <= 1 or abs(bgnbd.a - 1) < 1e-9:
            raise FitError("the fitted parameters give no finite expectation")
        # Customers who all buy alike (no spread in rates) push r and alpha to infinity, where
        # the expectations cannot be evaluated: no predictions rather than partial ones.
        checks = bgnbd_expected_purchases(
            bgnbd, max(HORIZONS), counts["frequency"], counts["recency"], counts["T"]
        )
        if not np.all(np.isfinite(checks)):
            raise FitError(
                "the customers' purchase rates are too alike to fit (degenerate parameters "
                f"r = {bgnbd.r:.3g}, alpha = {bgnbd.alpha:.3g})"
            )
    except FitError as exc:
        return summary, CustomerFit(MODEL_NONE, f"The model could not be fitted: {exc}.", *counted)
    net_share = orders_net_share(frame, cutoff=cutoff)
    parameters = {
        "bgnbd": {"r": bgnbd.r, "alpha": bgnbd.alpha, "a": bgnbd.a, "b": bgnbd.b},
        "gamma_gamma": {"p": spend.p, "q": spend.q, "v": spend.v},
        "net_share": net_share,
        "time_unit": "day",
    }
    return summary, CustomerFit(
        MODEL_BGNBD_GG,
        "",
        *counted,
        bgnbd=bgnbd,
        gamma_gamma=spend,
        net_share=net_share,
        parameters=parameters,
        cutoff=pd.Timestamp(cutoff),
    )


def next_order_days(params: BgNbdParams, frequency, recency, T) -> np.ndarray:
    """Days after T until P(an order in (T, T+t]) = 1/2; NaN when it never gets there.

    P = P(alive) (1 - ((alpha+T)/(alpha+T+t))^(r+x)) (btyd.bgnbd_purchase_probability), so with
    k = 1 - 1/(2 P(alive)): t = (alpha+T) (k^(-1/(r+x)) - 1), defined for P(alive) > 1/2.
    """
    x = np.asarray(frequency, dtype=float)
    big_t = np.asarray(T, dtype=float)
    alive = bgnbd_probability_alive(params, x, recency, big_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 1 - 0.5 / alive
        days = (params.alpha + big_t) * (k ** (-1 / (params.r + x)) - 1)
    return np.where((alive > 0.5) & (days <= NEXT_ORDER_MAX_DAYS), days, np.nan)


def churn_bands(risk: np.ndarray) -> np.ndarray:
    """ "low", "medium" or "high" per churn risk; "" where the risk is unknown (NaN)."""
    risk = np.asarray(risk, dtype=float)
    bands = np.where(risk >= CHURN_HIGH, "high", np.where(risk >= CHURN_MEDIUM, "medium", "low"))
    return np.where(np.isnan(risk), "", bands).astype(object)


def _gbm_threads() -> AbstractContextManager:
    return threadpool_limits(limits=GBM_THREADS, user_api="openmp")


def _figure(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _scores(actual: pd.DataFrame, predicted: pd.DataFrame, bought_30: pd.Series) -> dict:
    """The backtest's figures of one model: `predicted` has expected_orders, expected_revenue
    and purchase_probability per customer, aligned with `actual` (orders, revenue)."""
    revenue = value_scores(actual["revenue"], predicted["expected_revenue"])
    auc = (
        ranking_auc(bought_30, predicted["purchase_probability"])
        if bought_30.nunique() == 2
        else math.nan
    )
    return {
        "revenue_mae": _figure(revenue.mae),
        "revenue_spearman": _figure(revenue.spearman),
        "revenue_gini": _figure(revenue.gini),
        "orders_mae": _figure(
            float(np.mean(np.abs(actual["orders"] - predicted["expected_orders"])))
        ),
        "purchase_auc_30": _figure(auc),
    }


def choice_wins(candidate: dict, default: dict) -> dict[str, bool]:
    """Per metric of CHOICE_METRICS: does `candidate` beat `default` strictly? A missing
    (undefined) figure never wins."""
    wins = {}
    for name, higher in CHOICE_METRICS.items():
        a, b = candidate.get(name), default.get(name)
        wins[name] = a is not None and b is not None and (a > b if higher else a < b)
    return wins


def customers_backtest(
    orders: pd.DataFrame, *, cutoff: pd.Timestamp, random_state: int = 0
) -> dict:
    """The per-shop backtest: BG/NBD + Gamma-Gamma against the GBM (and the 90-day baseline,
    for reference) on the shop's own orders before `cutoff`.

    Backtest cut-off = the last purchase day + 1 day - BACKTEST_HOLDOUT_DAYS; each model is
    fitted on the orders before it and predicts the customers (those with an order before it)
    over the holdout [cut-off, last purchase day + 1 day). Returns `ran`; when it ran:
    `cutoff`, `holdout_end`, `customers`, `holdout_buyers`, `figures` per model (revenue MAE,
    Spearman, normalised Gini of predicted against actual net holdout spend; orders MAE in
    purchase days; ROC-AUC of buying in the first 30 days), `wins` (the GBM's, per rule metric)
    and `winner`; otherwise `reason`.
    """
    frame = orders_validate(orders)
    frame = frame[frame["ordered_at"] < cutoff]
    bought = frame.loc[frame["value"] >= 0, "ordered_at"].dt.floor("D")
    result: dict = {"ran": False, "holdout_days": BACKTEST_HOLDOUT_DAYS}
    span = int((bought.max() - bought.min()) / DAY) if len(bought) else 0
    if span < BACKTEST_MIN_SPAN_DAYS:
        result["reason"] = (
            f"The model choice needs orders spanning {BACKTEST_MIN_SPAN_DAYS} days "
            f"(this shop: {span}); BG/NBD + Gamma-Gamma is used."
        )
        return result
    end = bought.max() + DAY
    start = end - BACKTEST_HOLDOUT_DAYS * DAY
    summary, fit = customers_fit(frame, cutoff=start)
    result |= {"cutoff": start.date().isoformat(), "holdout_end": end.date().isoformat()}
    if fit.kind != MODEL_BGNBD_GG:
        result["reason"] = f"At the backtest's cut-off: {fit.reason}"
        return result
    actual = holdout_summarize(frame, start=start, end=end).reindex(summary.index, fill_value=0)
    soon = holdout_summarize(frame, start=start, end=start + 30 * DAY)
    bought_30 = (soon["orders"].reindex(summary.index, fill_value=0) > 0).astype(int)
    buyers = int((actual["orders"] > 0).sum())
    result |= {"customers": len(summary), "holdout_buyers": buyers}
    if buyers < BACKTEST_MIN_HOLDOUT_BUYERS or actual["revenue"].sum() <= 0:
        result["reason"] = (
            f"The holdout needs {BACKTEST_MIN_HOLDOUT_BUYERS} buying customers and a positive "
            f"net spend (this shop: {buyers}); BG/NBD + Gamma-Gamma is used."
        )
        return result
    try:
        with _gbm_threads():
            gbm = rfm_model_fit(
                frame, cutoff=start, random_state=random_state, max_rows=GBM_MAX_TRAINING_ROWS
            )
    except ValueError as exc:
        result["reason"] = f"The GBM could not be trained: {exc}; BG/NBD + Gamma-Gamma is used."
        return result
    btyd = customers_predict(summary, fit).rename(
        columns={
            "expected_orders_90": "expected_orders",
            "expected_revenue_90": "expected_revenue",
            "purchase_probability_30": "purchase_probability",
        }
    )
    with _gbm_threads():
        gbm_predicted = rfm_model_predict(gbm, rfm_features(frame, cutoff=start))
    candidates = {
        MODEL_BGNBD_GG: btyd,
        MODEL_RFM_GBM: gbm_predicted,
        "baseline": baseline_predict(frame, cutoff=start),
    }
    figures = {
        name: _scores(actual, predicted.reindex(summary.index), bought_30)
        for name, predicted in candidates.items()
    }
    wins = choice_wins(figures[MODEL_RFM_GBM], figures[MODEL_BGNBD_GG])
    result |= {
        "ran": True,
        "figures": figures,
        "wins": wins,
        "winner": MODEL_RFM_GBM if sum(wins.values()) >= 2 else MODEL_BGNBD_GG,
        "gbm_training_rows": gbm.training_rows,
    }
    return result


def customers_model_choose(
    orders: pd.DataFrame, fit: CustomerFit, *, cutoff: pd.Timestamp, random_state: int = 0
) -> CustomerFit:
    """`fit` (BG/NBD + Gamma-Gamma) with the backtest's figures, switched to the GBM when it
    wins the backtest (the GBM is then refitted on every order before `cutoff`)."""
    if fit.kind != MODEL_BGNBD_GG:
        return fit
    backtest = customers_backtest(orders, cutoff=cutoff, random_state=random_state)
    if backtest.get("winner") != MODEL_RFM_GBM:
        return replace(fit, backtest=backtest)
    frame = orders_validate(orders)
    try:
        with _gbm_threads():
            gbm = rfm_model_fit(
                frame[frame["ordered_at"] < cutoff],
                cutoff=cutoff,
                random_state=random_state,
                max_rows=GBM_MAX_TRAINING_ROWS,
            )
    except ValueError as exc:
        backtest["reason"] = f"The GBM won but could not be refitted: {exc}."
        return replace(fit, backtest=backtest)
    parameters = fit.parameters | {
        "gbm": {"training_rows": gbm.training_rows, "features": list(FEATURES)}
    }
    return replace(fit, kind=MODEL_RFM_GBM, gbm=gbm, backtest=backtest, parameters=parameters)


def customers_predict(
    summary: pd.DataFrame, fit: CustomerFit, orders: pd.DataFrame | None = None
) -> pd.DataFrame:
    """PREDICTION_COLUMNS per customer of `summary` (NaN, and band "", without a model).

    Revenue figures are net: Gamma-Gamma's expected order value times the shop's net share.
    `predicted_clv` = the customer's net revenue so far + the expected revenue of the next 365
    days. `next_order_days` counts from the start of the summary's last day.

    With the GBM (`fit.gbm`, `orders` needed for its features at the summary's cut-off): the
    90-day expected orders and revenue and the 30-day purchase probability are the GBM's, the
    figures it was backtested on; the 365-day ones are the GBM's 90-day figure times BG/NBD's
    ratio of 365-day to 90-day expected purchases for that customer (the GBM's level, BG/NBD's
    shape over the year: the GBM has no year-long training window); P(alive), the next order
    and churn risk stay BG/NBD's.
    """
    result = pd.DataFrame(np.nan, index=summary.index, columns=PREDICTION_COLUMNS)
    result["churn_band"] = ""
    if fit.bgnbd is None or fit.gamma_gamma is None or summary.empty:
        return result
    x, t_x, big_t = (summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    value = fit.net_share * gamma_gamma_expected_value(
        fit.gamma_gamma, x, summary["monetary"].to_numpy(dtype=float)
    )
    result["alive_probability"] = bgnbd_probability_alive(fit.bgnbd, x, t_x, big_t)
    for days in HORIZONS:
        purchases = bgnbd_expected_purchases(fit.bgnbd, days, x, t_x, big_t)
        result[f"expected_orders_{days}"] = purchases
        result[f"expected_revenue_{days}"] = purchases * value
    if fit.gbm is not None:
        if orders is None:
            raise ValueError("customers_predict: the GBM needs the orders")
        with _gbm_threads():
            gbm = rfm_model_predict(fit.gbm, rfm_features(orders, cutoff=fit.cutoff))
        gbm = gbm.reindex(summary.index)
        ratio = np.divide(
            result["expected_orders_365"].to_numpy(),
            result["expected_orders_90"].to_numpy(),
            out=np.full(len(result), 365 / 90),
            where=result["expected_orders_90"].to_numpy() > 0,
        )
        for name, column in (("orders", "expected_orders"), ("revenue", "expected_revenue")):
            level = gbm[column].to_numpy(dtype=float)
            result[f"expected_{name}_90"] = level
            result[f"expected_{name}_365"] = level * ratio
    result["predicted_clv"] = (
        summary["revenue"].to_numpy(dtype=float) + result["expected_revenue_365"].to_numpy()
    )
    result["purchase_probability_30"] = (
        gbm["purchase_probability"].to_numpy(dtype=float)
        if fit.gbm is not None
        else bgnbd_purchase_probability(fit.bgnbd, PURCHASE_HORIZON_DAYS, x, t_x, big_t)
    )
    result["next_order_days"] = next_order_days(fit.bgnbd, x, t_x, big_t)
    risk = 1 - bgnbd_purchase_probability(fit.bgnbd, CHURN_HORIZON_DAYS, x, t_x, big_t)
    result["churn_risk"] = risk
    result["churn_band"] = churn_bands(risk)
    return result
