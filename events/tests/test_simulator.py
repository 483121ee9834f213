from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from events import selectors
from events.simulator import HOUR_WEIGHTS, Simulator
from events.tests.factories import PersonFactory
from notifications.tests.factories import SessionFactory

END = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def history() -> list[list[dict]]:
    simulator = Simulator(shop_domain="tea.example.com", seed=3, timezone="America/New_York")
    return list(simulator.history(visitors=3000, days=60, end=END))


def test_a_share_of_visits_are_people_coming_back_across_weeks_and_some_buy_again(history):
    visits = Counter(journey[0]["anonymous_id"] for journey in history)
    first_seen: dict[str, datetime] = {}
    gaps = []
    for journey in history:
        at = datetime.fromisoformat(journey[0]["timestamp"])
        person = journey[0]["anonymous_id"]
        if person in first_seen:
            gaps.append(at - first_seen[person])
        first_seen.setdefault(person, at)
    buyers = Counter(j[0]["anonymous_id"] for j in history if j[-1]["type"] == "purchase")

    assert 0.2 < 1 - len(visits) / len(history) < 0.45
    assert sorted(gaps)[len(gaps) // 2] > timedelta(days=5)
    assert sum(1 for count in buyers.values() if count > 1) >= 20


def test_traffic_peaks_in_the_afternoon_and_evening_of_the_shops_timezone(history):
    hours = Counter(
        datetime.fromisoformat(j[0]["timestamp"]).astimezone(NEW_YORK).hour for j in history
    )
    starts = [datetime.fromisoformat(j[0]["timestamp"]) for j in history]

    busiest = {hour for hour, _ in hours.most_common(6)}
    assert busiest <= set(range(13, 23))
    assert max(HOUR_WEIGHTS) == HOUR_WEIGHTS[20]
    assert hours[20] > 10 * hours[3]
    assert starts == sorted(starts)
    assert END - timedelta(days=60) <= starts[0]
    assert starts[-1] < END


def test_products_have_readable_distinct_names(history):
    simulator = Simulator(shop_domain="tea.example.com", seed=3)
    names = [product.name for product in simulator.products]

    assert len(set(names)) == len(names) == 48
    assert all("no." not in name and ", " in name for name in names)
    landings = Counter(j[0]["type"] for j in history)
    assert landings["product_view"] > 0.15 * len(history)


def test_the_hourly_share_averages_one_over_a_week():
    simulator = Simulator(shop_domain="tea.example.com", timezone="America/New_York")
    # A week without a daylight-saving change, so every local hour of every weekday comes once.
    week = [datetime(2026, 1, 5, 5, tzinfo=UTC) + timedelta(hours=h) for h in range(24 * 7)]

    assert sum(simulator.hourly_share(at) for at in week) / len(week) == pytest.approx(1.0)


@pytest.mark.django_db
def test_shop_traffic_is_the_rate_and_returning_share_since_the_first_session(shop):
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    person = PersonFactory(shop=shop)
    for days_ago in (10, 4, 1):
        SessionFactory(shop=shop, person=person, started_at=now - timedelta(days=days_ago))
    SessionFactory(shop=shop, started_at=now - timedelta(days=2))

    traffic = selectors.shop_traffic_get(shop=shop, now=now)

    assert traffic.visits_per_second == pytest.approx(4 / (10 * 86400))
    assert traffic.returning_share == 0.5
