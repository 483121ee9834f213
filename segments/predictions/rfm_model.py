"""A gradient-boosted alternative to BG/NBD on RFM features, and the simple baseline.

Both predict, for every customer with an order before the cut-off: expected purchase days and
expected net revenue in the next `horizon_days`, and a score for buying in the next
`purchase_days` (a probability for the GBM).

The GBM learns from the shop's own past: features at earlier origins (cut-off - horizon,
- 30 days more, ...) against what customers did in the `horizon_days` after each origin, so it
needs no labelled data beyond the order history, and never sees the period it predicts.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from segments.predictions.summary import DAY, holdout_summarize, orders_summarize, orders_validate

WINDOWS = (30, 90, 180, 365)
FEATURES = (
    "frequency",
    "recency",
    "T",
    "monetary",
    "revenue",
    "days_since_last",
    "mean_gap",
    *(f"orders_{w}d" for w in WINDOWS),
    *(f"revenue_{w}d" for w in WINDOWS),
)
PREDICTIONS = ["expected_orders", "expected_revenue", "purchase_probability"]


@dataclass(frozen=True)
class RfmModel:
    orders: HistGradientBoostingRegressor
    revenue: HistGradientBoostingRegressor
    purchase: HistGradientBoostingClassifier
    horizon_days: int
    purchase_days: int
    training_rows: int


def rfm_features(orders: pd.DataFrame, *, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Per-customer features at `cutoff` (days): the BG/NBD summary plus windowed activity."""
    frame = orders_validate(orders)
    summary = orders_summarize(frame, cutoff=cutoff, unit_days=1.0)
    features = summary[["frequency", "recency", "T", "monetary", "revenue"]].astype(float)
    features["days_since_last"] = features["T"] - features["recency"]
    # Mean days between purchases; a one-off buyer gets her age, the gap she has not closed yet.
    features["mean_gap"] = np.where(
        features["frequency"] > 0,
        features["recency"] / features["frequency"].clip(lower=1),
        features["T"],
    )
    for window in WINDOWS:
        recent = holdout_summarize(frame, start=cutoff - window * DAY, end=cutoff)
        recent = recent.reindex(features.index, fill_value=0)
        features[f"orders_{window}d"] = recent["orders"].astype(float)
        features[f"revenue_{window}d"] = recent["revenue"].astype(float)
    return features[list(FEATURES)]


def _training_rows(
    orders: pd.DataFrame, *, origin: pd.Timestamp, horizon_days: int, purchase_days: int
) -> pd.DataFrame:
    features = rfm_features(orders, cutoff=origin)
    future = holdout_summarize(orders, start=origin, end=origin + horizon_days * DAY)
    soon = holdout_summarize(orders, start=origin, end=origin + purchase_days * DAY)
    rows = features.copy()
    rows["y_orders"] = future["orders"].reindex(rows.index, fill_value=0).astype(float)
    # Net revenue can be negative (a refund of an earlier order); a Poisson loss needs y >= 0.
    rows["y_revenue"] = future["revenue"].reindex(rows.index, fill_value=0.0).clip(lower=0.0)
    rows["y_bought"] = (soon["orders"].reindex(rows.index, fill_value=0) > 0).astype(int)
    return rows


def rfm_model_fit(
    orders: pd.DataFrame,
    *,
    cutoff: pd.Timestamp,
    horizon_days: int = 90,
    purchase_days: int = 30,
    origin_count: int = 4,
    origin_step_days: int = 30,
    random_state: int = 0,
    max_rows: int | None = None,
) -> RfmModel:
    """Fit the three GBMs on origins cutoff - horizon - k * step (k < origin_count).

    Every label window ends on or before `cutoff`, so the fit uses only what was known then.
    `max_rows`: a uniform sample of the training rows (seeded by `random_state`) when there
    are more, to bound the fit's time on large shops.
    """
    frame = orders_validate(orders)
    origins = [cutoff - (horizon_days + k * origin_step_days) * DAY for k in range(origin_count)]
    rows = pd.concat(
        [
            _training_rows(
                frame, origin=origin, horizon_days=horizon_days, purchase_days=purchase_days
            )
            for origin in origins
        ]
    )
    if max_rows is not None and len(rows) > max_rows:
        rows = rows.sample(n=max_rows, random_state=random_state)
    if len(rows) < 50 or rows["y_bought"].nunique() < 2:
        raise ValueError("rfm_model: too little history to learn from")
    x = rows[list(FEATURES)].to_numpy()
    # Poisson loss: the targets are counts and non-negative amounts, and the model should
    # predict their mean (an expectation), not their median, which is 0 for most customers.
    settings = {"max_iter": 300, "learning_rate": 0.05, "early_stopping": True}
    settings |= {"random_state": random_state, "min_samples_leaf": 40}
    orders_model = HistGradientBoostingRegressor(loss="poisson", **settings)
    revenue_model = HistGradientBoostingRegressor(loss="poisson", **settings)
    purchase_model = HistGradientBoostingClassifier(**settings)
    orders_model.fit(x, rows["y_orders"].to_numpy())
    revenue_model.fit(x, rows["y_revenue"].to_numpy())
    purchase_model.fit(x, rows["y_bought"].to_numpy())
    return RfmModel(
        orders_model, revenue_model, purchase_model, horizon_days, purchase_days, len(rows)
    )


def rfm_model_predict(model: RfmModel, features: pd.DataFrame) -> pd.DataFrame:
    """Expected orders and revenue over the model's horizon, and the purchase probability."""
    x = features[list(FEATURES)].to_numpy()
    return pd.DataFrame(
        {
            "expected_orders": model.orders.predict(x),
            "expected_revenue": model.revenue.predict(x),
            "purchase_probability": model.purchase.predict_proba(x)[:, 1],
        },
        index=features.index,
    )


def baseline_predict(
    orders: pd.DataFrame, *, cutoff: pd.Timestamp, lookback_days: int = 90
) -> pd.DataFrame:
    """The naive forecast: the next `lookback_days` repeat the previous ones, per customer.

    Expected revenue = net spend in [cutoff - lookback, cutoff); expected orders = purchase days
    there; the purchase score ranks by that spend (it is a ranking, not a probability).
    Rows: every customer with an order before the cutoff.
    """
    frame = orders_validate(orders)
    customers = orders_summarize(frame, cutoff=cutoff).index
    recent = holdout_summarize(frame, start=cutoff - lookback_days * DAY, end=cutoff)
    recent = recent.reindex(customers, fill_value=0)
    return pd.DataFrame(
        {
            "expected_orders": recent["orders"].astype(float),
            "expected_revenue": recent["revenue"].astype(float),
            "purchase_probability": recent["revenue"].astype(float),
        },
        index=customers,
    )
