"""Person traits as breakdowns: the age band from an `age` or a birth-date trait.

Identify calls (and any source that writes person traits) may send `age` (a number, or a
numeric string) or `birth_date` / `birthday` (an ISO date, `YYYY-MM-DD`, optionally with a time).
A stated `age` wins over a birth date (it is what the shop asked for); a birth date gives the
age in whole years on `today`. Ages outside 18-120 give no band: under-18s are not profiled
into age groups, and larger values are typos or placeholders (1900-01-01).
"""

from datetime import date
from typing import Any

AGE_BANDS = ("18-25", "26-35", "36-45", "46-55", "56-65", "66+")
_UPPER = (25, 35, 45, 55, 65)
MIN_AGE, MAX_AGE = 18, 120
BIRTH_DATE_TRAITS = ("birth_date", "birthday")


def _age_stated(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _age_from_birth_date(value: Any, today: date) -> int | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        born = date.fromisoformat(value[:10])
    except ValueError:
        return None
    if born > today:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def trait_age(traits: dict[str, Any] | None, *, today: date) -> float | None:
    """The person's age from their traits, or None when none was sent or it is unreadable."""
    if not isinstance(traits, dict):
        return None
    stated = _age_stated(traits.get("age"))
    if stated is not None:
        return stated
    for name in BIRTH_DATE_TRAITS:
        age = _age_from_birth_date(traits.get(name), today)
        if age is not None:
            return float(age)
    return None


def age_band(traits: dict[str, Any] | None, *, today: date) -> str:
    """One of AGE_BANDS, or "" (no age, or outside MIN_AGE-MAX_AGE). A stated age of 25.5
    counts as 25 (whole years)."""
    age = trait_age(traits, today=today)
    if age is None or age != age or not MIN_AGE <= age < MAX_AGE + 1:
        return ""
    years = int(age)
    for band, upper in zip(AGE_BANDS, _UPPER, strict=False):
        if years <= upper:
            return band
    return AGE_BANDS[-1]
