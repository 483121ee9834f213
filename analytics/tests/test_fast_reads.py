"""The fast read paths (session paths, monthly products, SQL retention) against the raw log.

Each test builds a random shop across a month boundary and compares a selector with a direct
computation from the events or the daily rollups, the way the selectors worked before.
"""

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db.models import Max, Sum

from analytics import selectors
from analytics.funnels import StepSpec, funnel_levels, funnel_summarize
from analytics.models import ProductDailyRollup, SessionPath
from analytics.periods import Period
from analytics.services import CART_TYPES, rollups_rebuild, rollups_refresh
from analytics.tests.factories import SessionEventFactory, SessionFactory
from events.models import Event, Session
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


def query(shop, **filters) -> selectors.Query:
    return selectors.Query(shop=shop, period=PERIOD, filters=selectors.Filters(**filters))


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
    params = selectors.FunnelParams(steps=STEPS, strict=strict)

    funnel = selectors.funnel_compute(query=query(shop, **filters), params=params)

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

    rows = selectors._recovery_list(query(shop), limit=limit)

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

    rows = selectors._product_rows(selectors.Query(shop=shop, period=period))

    daily = (
        ProductDailyRollup.objects.filter(shop=shop, day__gte=period.first, day__lte=period.last)
        .values("product_id")
        .annotate(name=Max("product_name"), views=Sum("view_count"), revenue=Sum("revenue"))
    )
    assert sorted((r.product_id, r.product_name, r.views, r.revenue) for r in rows) == sorted(
        (d["product_id"], d["name"], d["views"], selectors._money(d["revenue"])) for d in daily
    )


@pytest.mark.django_db
def test_retention_in_sql_matches_python(shop):
    random_shop(shop)
    rollups_rebuild(shop_id=shop.pk, now=NOW)

    assert selectors.retention_get(query=query(shop)) == selectors._retention_python(query(shop))


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
    rollups_rebuild(shop_id=shop.pk, now=NOW)

    assert refreshed == list(SessionPath.objects.filter(shop=shop).order_by("pk").values())
    assert not SessionPath.objects.get(pk=session.pk).is_abandoned
