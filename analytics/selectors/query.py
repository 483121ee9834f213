"""What every analytics read takes: the shop, the period and the session filters."""

from dataclasses import dataclass
from decimal import Decimal

from analytics.periods import Period
from events.models import Shop

BREAKDOWNS = ("utm_source", "device", "country")


@dataclass(frozen=True, slots=True)
class Filters:
    """Session attributes to restrict to; empty means no restriction."""

    utm_source: str = ""
    device: str = ""
    country: str = ""

    def as_lookup(self, prefix: str = "") -> dict[str, str]:
        return {prefix + name: getattr(self, name) for name in BREAKDOWNS if getattr(self, name)}

    @property
    def is_empty(self) -> bool:
        return not self.as_lookup()


@dataclass(frozen=True, slots=True)
class Query:
    shop: Shop
    period: Period
    filters: Filters = Filters()


def ratio(part: float | Decimal, whole: float | Decimal) -> float:
    """`part / whole` to six places; 0.0 when `whole` is 0."""
    return round(float(part) / float(whole), 6) if whole else 0.0
