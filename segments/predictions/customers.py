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

Churn risk = P(no order in the next CHURN_HORIZON_DAYS | history): bands low < CHURN_MEDIUM <=
medium < CHURN_HIGH <= high. The expected next order is the day by which the customer has an
even chance of having ordered again (closed form in `next_order_days`), none when that chance
never reaches one half (P(alive) <= 0.5) or only after NEXT_ORDER_MAX_DAYS.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

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
from segments.predictions.summary import orders_net_share, orders_summarize, orders_validate

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
MODEL_NONE = "none"
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


def customers_predict(summary: pd.DataFrame, fit: CustomerFit) -> pd.DataFrame:
    """PREDICTION_COLUMNS per customer of `summary` (NaN, and band "", without a model).

    Revenue figures are net: Gamma-Gamma's expected order value times the shop's net share.
    `predicted_clv` = the customer's net revenue so far + the expected revenue of the next 365
    days. `next_order_days` counts from the start of the summary's last day.
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
        orders = bgnbd_expected_purchases(fit.bgnbd, days, x, t_x, big_t)
        result[f"expected_orders_{days}"] = orders
        result[f"expected_revenue_{days}"] = orders * value
    result["predicted_clv"] = (
        summary["revenue"].to_numpy(dtype=float) + result["expected_revenue_365"].to_numpy()
    )
    result["purchase_probability_30"] = bgnbd_purchase_probability(
        fit.bgnbd, PURCHASE_HORIZON_DAYS, x, t_x, big_t
    )
    result["next_order_days"] = next_order_days(fit.bgnbd, x, t_x, big_t)
    risk = 1 - bgnbd_purchase_probability(fit.bgnbd, CHURN_HORIZON_DAYS, x, t_x, big_t)
    result["churn_risk"] = risk
    result["churn_band"] = churn_bands(risk)
    return result
