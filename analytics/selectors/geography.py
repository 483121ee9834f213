"""Sessions and conversion per country of a period."""

from dataclasses import dataclass
from datetime import date

from django.db.models import Sum

from analytics.selectors.query import Query, ratio
from analytics.selectors.rollups import daily_rollups


@dataclass(frozen=True, slots=True)
class CountryRow:
    country: str
    sessions: int
    converted_sessions: int
    conversion: float


@dataclass(frozen=True, slots=True)
class Geography:
    rows: list[CountryRow]
    start: date
    end: date


def geography_get(*, query: Query) -> Geography:
    rows = (
        daily_rollups(query, by_dimension=True)
        .values("country")
        .annotate(n=Sum("session_count"), converted=Sum("converted_session_count"))
        .order_by("-n", "country")
    )
    return Geography(
        rows=[
            CountryRow(
                country=row["country"],
                sessions=row["n"],
                converted_sessions=row["converted"],
                conversion=ratio(row["converted"], row["n"]),
            )
            for row in rows
        ],
        start=query.period.first,
        end=query.period.last,
    )
