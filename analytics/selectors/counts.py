"""Session, visitor and visit-conversion counts of a period."""

from dataclasses import dataclass
from datetime import date

from django.db.models import Count

from analytics.bitmaps import ids_union
from analytics.selectors.query import Query, ratio
from analytics.selectors.rollups import daily_visitors, rollup_totals
from clickserver.db_routers import analytics_db
from events.models import Session


@dataclass(frozen=True, slots=True)
class SessionCount:
    session_count: int
    bounce_count: int
    pageview_count: int
    start: date
    end: date


def session_count_get(*, query: Query) -> SessionCount:
    totals = rollup_totals(query)
    return SessionCount(
        session_count=totals["session_count"],
        bounce_count=totals["bounce_count"],
        pageview_count=totals["pageview_count"],
        start=query.period.first,
        end=query.period.last,
    )


@dataclass(frozen=True, slots=True)
class UserCount:
    user_count: int
    start: date
    end: date


def _visitor_count(query: Query) -> int:
    if query.filters.is_empty:
        return len(ids_union(daily_visitors(query).values()))
    # Visitors by source/device/country: distinct persons of the matching sessions in the period.
    return (
        Session.objects.using(analytics_db())
        .filter(
            shop_id=query.shop.pk,
            started_at__gte=query.period.start,
            started_at__lt=query.period.end,
            **query.filters.as_lookup(),
        )
        .aggregate(n=Count("person_id", distinct=True))["n"]
    )


def user_count_get(*, query: Query) -> UserCount:
    return UserCount(
        user_count=_visitor_count(query), start=query.period.first, end=query.period.last
    )


@dataclass(frozen=True, slots=True)
class VisitConversion:
    sessions: int
    converted_sessions: int
    rate: float
    start: date
    end: date


def visit_conversion_get(*, query: Query) -> VisitConversion:
    totals = rollup_totals(query)
    return VisitConversion(
        sessions=totals["session_count"],
        converted_sessions=totals["converted_session_count"],
        rate=ratio(totals["converted_session_count"], totals["session_count"]),
        start=query.period.first,
        end=query.period.last,
    )
