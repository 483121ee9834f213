"""Weekly cohorts of new visitors and their return, from the daily visitor bitmaps."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from analytics.bitmaps import ids_union
from analytics.selectors.query import Query, ratio
from analytics.selectors.rollups import daily_visitor_sets


@dataclass(frozen=True, slots=True)
class CohortRow:
    cohort_week: date
    size: int
    # active[i]: cohort members with a session i weeks after their first week.
    active: list[int]
    retention: list[float]


@dataclass(frozen=True, slots=True)
class Retention:
    rows: list[CohortRow]
    start: date
    end: date


def retention_get(*, query: Query) -> Retention:
    """Weekly cohorts of new visitors and how many of them came back i weeks later.

    A cohort is the people first seen in a week (Monday first) of the period; `active[i]` counts
    those of them with an event in the period i weeks after the cohort's week.
    """
    period = query.period
    weeks_new: dict[date, list[Any]] = defaultdict(list)
    weeks_active: dict[date, list[Any]] = defaultdict(list)
    daily, new = daily_visitor_sets(query)
    for day, bitmap in daily.items():
        week = day - timedelta(days=day.weekday())
        weeks_active[week].append(bitmap)
        if day in new:
            weeks_new[week].append(new[day])
    active_by_week = {week: ids_union(bitmaps) for week, bitmaps in weeks_active.items()}
    last_week = period.last - timedelta(days=period.last.weekday())
    rows = []
    for week, bitmaps in sorted(weeks_new.items()):
        cohort = ids_union(bitmaps)
        if not cohort:
            continue
        active = []
        later = week
        while later <= last_week:
            active.append(
                cohort.intersection_cardinality(active_by_week[later])
                if later in active_by_week
                else 0
            )
            later += timedelta(days=7)
        while active and not active[-1]:
            active.pop()
        rows.append(
            CohortRow(
                cohort_week=week,
                size=active[0],
                active=active,
                retention=[ratio(n, active[0]) for n in active],
            )
        )
    return Retention(rows=rows, start=period.first, end=period.last)
