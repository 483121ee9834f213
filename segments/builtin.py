"""Pure definitions of the built-in segments (see docs/segments.md); no database access here."""

import itertools
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from statistics import median

INTENT_WINDOW_DAYS = 30
MEDIUM_MIN_PRODUCT_VIEWS = 3
MEDIUM_MIN_SESSIONS = 2
CHURN_MIN_DAYS = 30

INTENT_KEYS = ("intent_converted", "intent_high", "intent_medium", "intent_low")
VALUE_KEYS = ("value_vip", "value_high", "value_medium", "value_low")
CHURN_KEY = "churn_risk"
PREDICTED_KEYS = ("predicted_vip", "predicted_at_risk")
# Top share of customers by expected net revenue in the next 365 days.
PREDICTED_VIP_PERCENTILE = 95
NAMES = {
    "intent_converted": "Converted",
    "intent_high": "High intent",
    "intent_medium": "Medium intent",
    "intent_low": "Low intent",
    "value_vip": "VIP customers",
    "value_high": "High value",
    "value_medium": "Medium value",
    "value_low": "Low value",
    CHURN_KEY: "Churn risk",
    "predicted_vip": "Predicted VIP",
    "predicted_at_risk": "At risk: high value, high churn risk",
}


@dataclass(frozen=True, slots=True)
class IntentActivity:
    person_id: int
    purchases: int
    carts_or_checkouts: int
    product_views: int
    sessions: int


def intent_key(activity: IntentActivity) -> str:
    if activity.purchases:
        return "intent_converted"
    if activity.carts_or_checkouts:
        return "intent_high"
    if (
        activity.product_views >= MEDIUM_MIN_PRODUCT_VIEWS
        or activity.sessions >= MEDIUM_MIN_SESSIONS
    ):
        return "intent_medium"
    return "intent_low"


def _percentiles(values: dict[int, Decimal]) -> dict[int, float]:
    """Per key with a value > 0: the share (in %) of positive values strictly below its own."""
    positive = {key: value for key, value in values.items() if value > 0}
    ordered = sorted(positive.values())
    return {
        key: 100 * bisect_left(ordered, value) / len(ordered) for key, value in positive.items()
    }


def value_keys(revenue: dict[int, Decimal]) -> dict[int, str]:
    """Value band per person with revenue > 0, by the share of customers earning them less.

    A person's percentile is the share of customers with strictly lower revenue, so equal revenue
    always lands in the same band: VIP >= 95 %, high [67, 95), medium [33, 67), low < 33 %.
    """
    bands: dict[int, str] = {}
    for person_id, percentile in _percentiles(revenue).items():
        if percentile >= 95:
            bands[person_id] = "value_vip"
        elif percentile >= 67:
            bands[person_id] = "value_high"
        elif percentile >= 33:
            bands[person_id] = "value_medium"
        else:
            bands[person_id] = "value_low"
    return bands


def churn_days(purchases: Iterable[datetime]) -> float:
    """N = max(30, 2 x the median gap in days between consecutive purchases)."""
    times = sorted(purchases)
    gaps = [(b - a).total_seconds() / 86400 for a, b in itertools.pairwise(times)]
    return max(float(CHURN_MIN_DAYS), 2 * median(gaps)) if gaps else float(CHURN_MIN_DAYS)


def is_churn_risk(*, purchases: list[datetime], last_active_at: datetime, now: datetime) -> bool:
    """A customer whose last session (or order) is older than their own N-day horizon."""
    return bool(purchases) and last_active_at < now - timedelta(days=churn_days(purchases))


@dataclass(frozen=True, slots=True)
class CustomerOutlook:
    """What the predicted segments read from a customer's stored prediction."""

    person_id: int
    revenue: Decimal
    expected_revenue_365: Decimal | None
    churn_band: str


def predicted_members(customers: Iterable[CustomerOutlook]) -> dict[str, set[int]]:
    """The predicted segments (docs/segments.md), over customers with a prediction:

    - predicted_vip: the top 5 % by expected net revenue in the next 365 days (the percentile
      rule of the value bands, so equal predictions land together);
    - predicted_at_risk: high value so far (the VIP or high value band, >= 67th percentile of
      net revenue) and a high churn risk band.
    A shop without a model (too little history) has no predictions, so both are empty.
    """
    rows = [c for c in customers if c.expected_revenue_365 is not None]
    expected = {c.person_id: c.expected_revenue_365 or Decimal(0) for c in rows}
    value = value_keys({c.person_id: c.revenue for c in rows})
    return {
        "predicted_vip": {
            pid
            for pid, percentile in _percentiles(expected).items()
            if percentile >= PREDICTED_VIP_PERCENTILE
        },
        "predicted_at_risk": {
            c.person_id
            for c in rows
            if c.churn_band == "high" and value.get(c.person_id) in ("value_vip", "value_high")
        },
    }
