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


def value_keys(revenue: dict[int, Decimal]) -> dict[int, str]:
    """Value band per person with revenue > 0, by the share of customers earning them less.

    A person's percentile is the share of customers with strictly lower revenue, so equal revenue
    always lands in the same band: VIP >= 95 %, high [67, 95), medium [33, 67), low < 33 %.
    """
    positive = {pid: amount for pid, amount in revenue.items() if amount > 0}
    ordered = sorted(positive.values())
    n = len(ordered)
    bands: dict[int, str] = {}
    for person_id, amount in positive.items():
        percentile = 100 * bisect_left(ordered, amount) / n
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
