"""A shop's detection settings: validated as one (every problem at once, nothing saved on a
400), written by the API and the admin, and when `exclude_bots` or `exclude_shared_networks`
flips, the days of the people concerned are recomputed so that the rollups follow the choice."""

import math
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from analytics.models import BotTag, DetectionSettings
from analytics.selectors.bots import network_people_get
from analytics.services.detection import bot_days_recompute_schedule
from clickserver.errors import ApplicationError
from events.models import Shop

# Robust z thresholds: below 1 a third of all buckets would be "anomalies"; above 100 nothing is.
THRESHOLD_RANGE = (1.0, 100.0)
MIN_HISTORY_RANGE = (1, 52)  # earlier same-slot values: at most a year of weeks
MAX_HIGH_VALUE = Decimal("999999999999.99")  # the column's 14 digits, 2 decimals
MAX_HOLIDAYS = 366
THRESHOLDS = ("hourly_threshold", "daily_threshold", "order_threshold")
SETTINGS_FIELDS = (
    *THRESHOLDS,
    "min_history",
    "high_value_order",
    "holidays",
    "exclude_bots",
    "exclude_shared_networks",
)
FLAGS = ("exclude_bots", "exclude_shared_networks")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def detection_settings_clean(data: Any) -> dict[str, Any]:
    """The fields `data` sets, cleaned; unknown fields, wrong types and out-of-range values
    raise one `ApplicationError` naming each field."""
    if not isinstance(data, dict):
        raise ApplicationError("Expected a JSON object.")
    unknown = sorted(set(data) - set(SETTINGS_FIELDS))
    errors: dict[str, list[str]] = {name: ["Unknown field."] for name in unknown}
    clean: dict[str, Any] = {}
    low, high = THRESHOLD_RANGE
    for name in THRESHOLDS:
        if name not in data:
            continue
        value = _number(data[name])
        if value is None:
            errors[name] = ["Expected a number."]
        elif not low <= value <= high:
            errors[name] = [f"Must be between {low:g} and {high:g} (a robust z)."]
        else:
            clean[name] = value
    if "min_history" in data:
        value = data["min_history"]
        low_n, high_n = MIN_HISTORY_RANGE
        if isinstance(value, bool) or not isinstance(value, int):
            errors["min_history"] = ["Expected a whole number."]
        elif not low_n <= value <= high_n:
            errors["min_history"] = [f"Must be between {low_n} and {high_n}."]
        else:
            clean["min_history"] = value
    if "high_value_order" in data:
        value = data["high_value_order"]
        if value is None:
            clean["high_value_order"] = None  # the high-value alert is off
        else:
            amount = None
            if _number(value) is not None or isinstance(value, str):
                try:
                    amount = Decimal(str(value).strip())
                except InvalidOperation:
                    amount = None
            if amount is None or not amount.is_finite():
                errors["high_value_order"] = ["Expected an amount in the shop currency, or null."]
            elif not 0 <= amount <= MAX_HIGH_VALUE:
                errors["high_value_order"] = [f"Must be between 0 and {MAX_HIGH_VALUE}."]
            else:
                clean["high_value_order"] = amount.quantize(Decimal("0.01"))
    if "holidays" in data:
        value = data["holidays"]
        if not isinstance(value, list) or len(value) > MAX_HOLIDAYS:
            errors["holidays"] = [f"Expected a list of at most {MAX_HOLIDAYS} ISO dates."]
        else:
            days, bad = set(), []
            for item in value:
                try:
                    days.add(date.fromisoformat(item).isoformat())
                except (TypeError, ValueError):
                    bad.append(str(item))
            if bad:
                errors["holidays"] = [f"Not an ISO date (YYYY-MM-DD): {', '.join(bad[:5])}."]
            clean["holidays"] = sorted(days)
    for name in FLAGS:
        if name in data:
            if not isinstance(data[name], bool):
                errors[name] = ["Expected true or false."]
            clean[name] = data[name]
    if errors:
        raise ApplicationError("Invalid detection settings.", fields=errors)
    return clean


def detection_settings_update(*, shop: Shop, data: Any) -> DetectionSettings:
    """Apply a partial update (the defaults stand for a shop without a row). When the bot or
    the shared-network exclusion changes, the days of the people it concerns (every tagged
    person, everyone seen on a shared network) are recomputed after the commit."""
    clean = detection_settings_clean(data)
    with transaction.atomic():
        row, _ = DetectionSettings.objects.select_for_update().get_or_create(shop=shop)
        flipped = {name for name in FLAGS if name in clean and clean[name] != getattr(row, name)}
        for name, value in clean.items():
            setattr(row, name, value)
        row.save()
        people: set[int] = set()
        if "exclude_bots" in flipped:
            people.update(BotTag.objects.filter(shop=shop).values_list("person_id", flat=True))
        if "exclude_shared_networks" in flipped:
            people.update(network_people_get(shop_id=shop.pk))
        if people:
            bot_days_recompute_schedule(shop=shop, person_ids=sorted(people))
    return row
