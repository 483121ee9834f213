"""The fast read paths (session paths, monthly products, visitor bitmaps, daily rollups) against
the raw log.

Each test builds a random shop across a month boundary and compares a selector with a direct
computation from the events or the daily rollups, the way the selectors worked before.
"""

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db.models import Max, Min, Sum

from analytics.funnel_levels import StepSpec, funnel_levels, funnel_summarize
from analytics.models import (
    CART_TYPES,
    ROLLUP_COUNTS,
    DailyRollup,
    DailySessionPaths,
    HourlyRollup,
    ProductDailyRollup,
    SessionPath,
)
from analytics.periods import Period
from analytics.selectors.carts import _recovery_list
from analytics.selectors.counts import user_count_get
from analytics.selectors.funnels import FunnelParams, funnel_compute
from analytics.selectors.kpis import kpis_get
from analytics.selectors.products import product_totals, top_products
from analytics.selectors.query import Filters, Query
from analytics.selectors.retention import retention_get
from analytics.selectors.trends import trends_get
from analytics.services.rollups import rollups_rebuild, rollups_refresh
from analytics.tests.factories import SessionEventFactory, SessionFactory
from clickserver.money import money_format
from events.models import Event, Person, Session
from events.tests.factories import PersonFactory

NOW = datetime(2026, 3, 1, tzinfo=UTC)
TYPES = ["page_view", "product_view", "add_to_cart", "checkout_started", "purchase"]
STEPS = (StepSpec("product_view"), StepSpec("add_to_cart"), StepSpec("purchase"))
PERIOD = Period(first=date(2026, 1, 20), last=date(2026, 2, 10), tz=ZoneInfo("UTC"))


def random_shop(shop, seed: int = 3) -> None:
    rng = random.Random(seed)
    people = [
        PersonFactory(shop=shop, user_id=f"u{i}" if i % 3 else "", first_seen_at=NOW)
        for i in range(12)
    ]
    base = datetime(2026, 1, 18, tzinfo=UTC)
    for _ in range(60):
        started = base + timedelta(minutes=rng.randrange(0, 26 * 24 * 60))
        session = SessionFactory(
            shop=shop,
            person=rng.choice(people),
            started_at=started,
            utm_source=rng.choice(["", "google", "mail"]),
            device=rng.choice(["desktop", "mobile"]),
        )
        at = started
        for _ in range(rng.randrange(1, 9)):
            SessionEventFactory(
                session=session,
                type=rng.choice(TYPES),
                occurred_at=at,
                product_id=f"p{rng.randrange(4)}",
                product_name=f"P{rng.randrange(4)}",
                product_price=Decimal(5),
                product_quantity=1,
            )
            # Ties in time, and sessions that run past the period's end.
            at += timedelta(minutes=rng.choice([0, 0, 7, 150]))


def query(shop, **filters) -> Query:
    return Query(shop=shop, period=PERIOD, filters=Filters(**filters))


def raw_funnel(shop, steps, *, strict: bool, **filters):
    """The session funnel from the raw events, as the selector computed it before."""
    sessions = set(
        Session.objects.filter(
            shop=shop, started_at__gte=PERIOD.start, started_at__lt=PERIOD.end, **filters
        ).values_list("id", flat=True)
    )
    units = defaultdict(list)
    for session_id, occurred_at, event_id, kind in Event.objects.filter(
        shop=shop, session_id__in=sessions, occurred_at__gte=PERIOD.start
    ).values_list("session_id", "occurred_at", "id", "type"):
        if strict or kind in {step.event_type for step in steps}:
            units[session_id].append((occurred_at.timestamp(), event_id, kind, {}))
    for events in units.values():
        events.sort()
    levels = funnel_levels(units.items(), steps, window=None, strict=strict)
    return funnel_summarize(levels.values(), steps)


@pytest.mark.django_db
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("filters", [{}, {"utm_source": "google"}])
def test_session_funnel_from_paths_matches_the_raw_log(shop, strict, filters):
    random_shop(shop)
    rollups_rebuild(shop_id=shop.pk, now=NOW)
    params = FunnelParams(steps=STEPS, strict=strict)

    funnel = funnel_compute(query=query(shop, **filters), params=params)

    expected = raw_funnel(shop, STEPS, strict=strict, **filters)
    assert funnel.steps == expected.steps
    assert funnel.median_seconds_to_convert == expected.median_seconds_to_convert


def raw_recovery(shop, limit: int) -> list[tuple]:
    """The recovery list from the raw log, as the selector computed it before."""
    carts = (
        Event.objects.filter(
            shop=shop,
            type__in=CART_TYPES,
            occurred_at__gte=PERIOD.start,
            occurred_at__lt=PERIOD.end,
            session__started_at__gte=PERIOD.start,
            session__started_at__lt=PERIOD.end,
        )
        .exclude(person__user_id="")
        .order_by("-occurred_at", "-id")
        .values_list("person_id", "person__user_id", "session_id", "occurred_at")
    )
    purchased = set(Event.objects.filter(type="purchase").values_list("session_id", flat=True))
    found: dict[int, tuple] = {}
    for row in carts:
        if row[2] not in purchased and row[0] not in found and len(found) < limit:
            found[row[0]] = row
    return list(found.values())


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [1, 3, 100])
def test_recovery_list_from_paths_matches_the_raw_log(shop, limit):
    random_shop(shop)
    rollups_rebuild(shop_id=shop.pk, now=NOW)

    rows = _recovery_list(query(shop), limit=limit)

    assert [(r.person_id, r.user_id, r.session_id, r.abandoned_at) for r in rows] == raw_recovery(
        shop, limit
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("first", "last"),
    [
        (date(2026, 1, 20), date(2026, 3, 3)),
        (date(2026, 1, 30), date(2026, 3, 1)),
        (date(2026, 1, 1), date(2026, 1, 31)),
        (date(2026, 1, 2), date(2026, 2, 27)),
        (date(2026, 1, 31), date(2026, 2, 1)),
    ],
)
def test_products_from_months_and_edge_days_match_the_daily_sums(shop, first, last):
    random_shop(shop)
    rollups_rebuild(shop_id=shop.pk, now=NOW)
    period = Period(first=first, last=last, tz=ZoneInfo("UTC"))

    totals = product_totals(Query(shop=shop, period=period))
    rows = top_products(totals, order_by="views", limit=1000)

    daily = (
        ProductDailyRollup.objects.filter(shop=shop, day__gte=period.first, day__lte=period.last)
        .values("product_id")
        .annotate(name=Max("product_name"), views=Sum("view_count"), revenue=Sum("revenue"))
    )
    assert sorted((r.product_id, r.product_name, r.views, r.revenue) for r in rows) == sorted(
        (d["product_id"], d["name"], d["views"], money_format(d["revenue"])) for d in daily
    )
    # Ranked by views, then product id.
    assert [r.product_id for r in rows] == [
        r.product_id for r in sorted(rows, key=lambda r: (-r.views, r.product_id))
    ]


def first_seen_at_first_event(shop) -> None:
    """Give each person the time of their first event as first_seen_at, so cohorts exist."""
    for person_id, first in (
        Event.objects.filter(shop=shop).values("person_id").annotate(first=Min("occurred_at"))
    ).values_list("person_id", "first"):
        Person.objects.filter(pk=person_id).update(first_seen_at=first)


def raw_retention(shop) -> dict[date, list[int]]:
    """Weekly cohorts from the raw events: {cohort Monday: [active in week 0, 1, …]}."""
    first_day = {p.pk: p.first_seen_at.date() for p in Person.objects.filter(shop=shop)}
    active: dict[date, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for person_id, occurred_at in Event.objects.filter(
        shop=shop, occurred_at__gte=PERIOD.start, occurred_at__lt=PERIOD.end
    ).values_list("person_id", "occurred_at"):
        first = first_day[person_id]
        if not PERIOD.first <= first <= PERIOD.last:
            continue
        week = first - timedelta(days=first.weekday())
        active[week][(occurred_at.date() - week).days // 7].add(person_id)
    return {
        week: [len(weeks.get(i, ())) for i in range(max(weeks) + 1)]
        for week, weeks in active.items()
    }


@pytest.mark.django_db
def test_retention_from_bitmaps_matches_the_raw_log(shop):
    random_shop(shop)
    first_seen_at_first_event(shop)
    rollups_rebuild(shop_id=shop.pk, now=NOW)

    retention = retention_get(query=query(shop))

    expected = raw_retention(shop)
    assert len(expected) >= 2
    assert {row.cohort_week: row.active for row in retention.rows} == expected
    assert all(row.size == row.active[0] for row in retention.rows)


@pytest.mark.django_db
def test_visitor_counts_from_bitmaps_match_the_raw_log(shop):
    random_shop(shop)
    first_seen_at_first_event(shop)
    rollups_rebuild(shop_id=shop.pk, now=NOW)
    events = Event.objects.filter(
        shop=shop, occurred_at__gte=PERIOD.start, occurred_at__lt=PERIOD.end
    )

    kpis = kpis_get(query=query(shop))
    trends = trends_get(query=query(shop), interval="week")

    people = set(events.values_list("person_id", flat=True))
    new = set(
        Person.objects.filter(
            pk__in=people, first_seen_at__gte=PERIOD.start, first_seen_at__lt=PERIOD.end
        ).values_list("pk", flat=True)
    )
    assert (kpis.visitors, kpis.new_visitors) == (len(people), len(new))
    assert user_count_get(query=query(shop)).user_count == len(people)
    by_week: dict[str, set[int]] = defaultdict(set)
    for person_id, occurred_at in events.values_list("person_id", "occurred_at"):
        monday = occurred_at.date() - timedelta(days=occurred_at.weekday())
        by_week[monday.isoformat()].add(person_id)
    assert {row.bucket: row.visitors for row in trends.rows} == {
        week: len(persons) for week, persons in by_week.items()
    }


@pytest.mark.django_db
def test_daily_rollups_are_the_sums_of_their_hours(shop):
    random_shop(shop)
    rollups_rebuild(shop_id=shop.pk, now=NOW)

    hourly: dict[tuple, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for row in HourlyRollup.objects.filter(shop=shop).values():
        key = (
            row["hour"].date(),
            row["is_total"],
            row["utm_source"],
            row["device"],
            row["country"],
        )
        for name in ROLLUP_COUNTS:
            hourly[key][name] += row[name]
    daily = {
        (row["day"], row["is_total"], row["utm_source"], row["device"], row["country"]): {
            name: row[name] for name in ROLLUP_COUNTS
        }
        for row in DailyRollup.objects.filter(shop=shop).values()
    }
    assert daily == {key: dict(values) for key, values in hourly.items()}
    assert sum(values["session_count"] for key, values in daily.items() if key[1]) == (
        Session.objects.filter(shop=shop).count()
    )


def day_paths(shop) -> dict[date, tuple[int, int, bytes]]:
    rows = DailySessionPaths.objects.filter(shop=shop)
    return {
        day: (sessions, events, bytes(data))
        for day, sessions, events, data in rows.values_list(
            "day", "session_count", "event_count", "data"
        )
    }


@pytest.mark.django_db
def test_refresh_keeps_paths_equal_to_a_rebuild(shop):
    random_shop(shop)
    rollups_refresh(shop_id=shop.pk, now=NOW)
    session = Session.objects.filter(shop=shop).order_by("started_at")[5]
    late = session.started_at - timedelta(minutes=5)
    SessionEventFactory(session=session, type="purchase", occurred_at=late)
    Session.objects.filter(pk=session.pk).update(started_at=late)

    rollups_refresh(shop_id=shop.pk, now=NOW)
    refreshed = list(SessionPath.objects.filter(shop=shop).order_by("pk").values())
    refreshed_days = day_paths(shop)
    rollups_rebuild(shop_id=shop.pk, now=NOW)

    assert refreshed == list(SessionPath.objects.filter(shop=shop).order_by("pk").values())
    assert refreshed_days == day_paths(shop)
    assert not SessionPath.objects.get(pk=session.pk).is_abandoned
