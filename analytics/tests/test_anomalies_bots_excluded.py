"""Tagged bots leave the analytics when the shop chooses (the default), with a count of what
was left out: a simulated bot's session is in the rollups before detection tags it, out after
the days it touched are recomputed, and back when the shop turns the exclusion off."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext

from analytics.models import BotTag, DailyRollup, DailyVisitors, DetectionSettings, SessionPath
from analytics.services.detection import anomalies_detect
from analytics.services.rollups import rollups_days_recompute, rollups_refresh
from events.models import Event, Session
from events.services.ingest import events_ingest
from events.simulator import Simulator

NOW = datetime(2026, 3, 4, 16, 0, tzinfo=UTC)
DAY = date(2026, 3, 4)
VIEWS = ("page_view", "product_view")

pytestmark = pytest.mark.django_db


def day_totals(shop) -> dict[str, int]:
    totals = DailyRollup.objects.filter(shop=shop, day=DAY, is_total=True).aggregate(
        sessions=Sum("session_count"),
        pageviews=Sum("pageview_count") + Sum("product_view_count"),
    )
    visitors = DailyVisitors.objects.get(shop=shop, day=DAY).visitor_count
    return {**totals, "visitors": visitors, "paths": SessionPath.objects.filter(shop=shop).count()}


@pytest.fixture
def bot_and_humans(shop, process_all):
    """Eight human visits in the afternoon and one simulated bot (400 fast pages, the
    simulator's bot user agent), through the real pipeline and rollups."""
    simulator = Simulator(shop_domain=shop.domain, seed=11, timezone="UTC")
    journeys = [
        simulator.journey(
            NOW - timedelta(hours=4, minutes=-25 * i), visitor=simulator.visitor_for(NOW)
        )
        for i in range(8)
    ]
    bot = simulator.journey(
        NOW - timedelta(minutes=50), bot=True, visitor=simulator.visitor_for(NOW)
    )
    journeys.append([e for e in bot if datetime.fromisoformat(e["timestamp"]) < NOW])
    events = [event for journey in journeys for event in journey]
    assert events_ingest(shop=shop, events=events, received_at=NOW, sent_at=NOW).accepted == len(
        events
    )
    process_all(shop)
    rollups_refresh(shop_id=shop.pk, now=NOW)
    return shop


def test_a_tagged_bot_leaves_the_rollups_and_is_counted(
    bot_and_humans, api_client, celery_eager, django_capture_on_commit_callbacks
):
    shop = bot_and_humans
    # Independent of the rollups: the sessions, page views and people in the log.
    all_sessions = Session.objects.filter(shop=shop).count()
    all_pageviews = Event.objects.filter(shop=shop, type__in=VIEWS).count()
    people = Event.objects.filter(shop=shop).values("person_id").distinct().count()
    before = day_totals(shop)
    assert before["sessions"] == all_sessions
    assert before["pageviews"] == all_pageviews
    assert before["visitors"] == people

    with django_capture_on_commit_callbacks(execute=True):
        result = anomalies_detect(shop_id=shop.pk, now=NOW)

    tag = BotTag.objects.get(shop=shop)
    assert result.bots_tagged == 1
    bot_sessions = Session.objects.filter(shop=shop, person_id=tag.person_id)
    bot_pageviews = Event.objects.filter(shop=shop, person_id=tag.person_id, type__in=VIEWS)
    assert bot_sessions.count() >= 1
    assert bot_pageviews.count() >= 300  # the simulator's bot views 400 pages
    after = day_totals(shop)
    assert after == {
        "sessions": all_sessions - bot_sessions.count(),
        "pageviews": all_pageviews - bot_pageviews.count(),
        "visitors": people - 1,
        "paths": before["paths"] - bot_sessions.count(),
    }
    assert not SessionPath.objects.filter(shop=shop, person_id=tag.person_id).exists()
    body = api_client.get(f"/analytics/anomalies/?shop={shop.domain}&kind=bot").json()
    assert body["bots"] == {
        "excluded_from_analytics": True,
        "people": 1,
        "sessions": bot_sessions.count(),
        "events": tag.event_count,
    }
    assert body["rows"][0]["details"]["excluded_from_analytics"] is True

    # The shop keeps its bots: the same days recomputed count them again.
    DetectionSettings.objects.create(shop=shop, exclude_bots=False)
    rollups_days_recompute(shop_id=shop.pk, days=[DAY], now=NOW)
    assert day_totals(shop) == before
    body = api_client.get(f"/analytics/anomalies/?shop={shop.domain}").json()
    assert body["bots"]["excluded_from_analytics"] is False
    assert body["bots"]["sessions"] == bot_sessions.count()


def test_the_exclusion_costs_one_query_per_batch_of_days(bot_and_humans):
    shop = bot_and_humans
    with CaptureQueriesContext(connection) as untagged:
        rollups_days_recompute(shop_id=shop.pk, days=[DAY], now=NOW)
    anomalies_detect(shop_id=shop.pk, now=NOW)
    assert BotTag.objects.filter(shop=shop).exists()
    with CaptureQueriesContext(connection) as tagged:
        rollups_days_recompute(shop_id=shop.pk, days=[DAY], now=NOW)

    # The tag list is read once either way; with a bot tagged, the rollups issue the same
    # number of queries (the exclusion rides on queries they make anyway).
    assert len(tagged.captured_queries) == len(untagged.captured_queries)
    assert sum("analytics_bottag" in q["sql"] for q in tagged.captured_queries) == 1
