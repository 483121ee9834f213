"""A network shared by many sessions (an office, a mobile carrier) is reported by default and
left in the analytics; when the shop chooses, the people seen on it leave the rollups like
tagged bots, with a count of what was excluded, and come back when it changes its mind."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db.models import Sum
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from analytics.models import Anomaly, BotTag, DailyRollup, DailyVisitors, NetworkTag
from analytics.services.detection import anomalies_detect
from analytics.services.rollups import rollups_refresh
from events.models import Event, Session
from events.services.ingest import events_ingest

NOW = datetime(2026, 3, 4, 16, 0, tzinfo=UTC)
DAY = date(2026, 3, 4)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
OFFICE = 60  # people behind one office address: above the 50 sessions a network may have
ELSEWHERE = 5

pytestmark = pytest.mark.django_db


def visit(person: str, ip: str, start: datetime) -> list[dict]:
    """Three page views a person reads (40 and 90 seconds apart): nothing bot-like."""
    return [
        {
            "event_id": f"{person}-{i}",
            "type": "page_view",
            "anonymous_id": person,
            "url": f"https://shop.example/page/{i}",
            "timestamp": (start + timedelta(seconds=offset)).isoformat(),
            "context": {"ip": ip, "user_agent": CHROME},
        }
        for i, offset in enumerate((0, 40, 130))
    ]


def day_totals(shop) -> dict[str, int]:
    totals = DailyRollup.objects.filter(shop=shop, day=DAY, is_total=True).aggregate(
        sessions=Sum("session_count"), pageviews=Sum("pageview_count")
    )
    return {**totals, "visitors": DailyVisitors.objects.get(shop=shop, day=DAY).visitor_count}


@pytest.fixture
def office(shop, process_all):
    """Sixty people on one office network (203.0.113.x, anonymised to one address) and five
    on networks of their own, through the real pipeline and rollups."""
    events = []
    for n in range(OFFICE):
        start = NOW - timedelta(hours=3, minutes=-2 * n)
        events += visit(f"office-{n}", f"203.0.113.{n + 1}", start)
    for n in range(ELSEWHERE):
        events += visit(f"home-{n}", f"198.51.{n}.7", NOW - timedelta(hours=2, minutes=-7 * n))
    assert events_ingest(shop=shop, events=events, received_at=NOW, sent_at=NOW).accepted == len(
        events
    )
    process_all(shop)
    rollups_refresh(shop_id=shop.pk, now=NOW)
    return shop


@pytest.fixture
def owner_client(shop, user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_a_shared_network_is_reported_not_excluded_by_default_then_excluded_on_request(
    office, owner_client, celery_eager, django_capture_on_commit_callbacks
):
    shop = office
    networks = set(Event.objects.filter(shop=shop).values_list("ip", flat=True))
    assert len(networks) == 1 + ELSEWHERE  # the office's addresses anonymise to one
    office_people = set(
        Event.objects.filter(shop=shop, anonymous_id__startswith="office-").values_list(
            "person_id", flat=True
        )
    )
    office_sessions = Session.objects.filter(shop=shop, person_id__in=office_people).count()
    assert (len(office_people), office_sessions) == (OFFICE, OFFICE)
    all_sessions = Session.objects.filter(shop=shop).count()
    before = day_totals(shop)
    assert before == {
        "sessions": all_sessions,
        "pageviews": 3 * (OFFICE + ELSEWHERE),
        "visitors": OFFICE + ELSEWHERE,
    }

    with django_capture_on_commit_callbacks(execute=True):
        anomalies_detect(shop_id=shop.pk, now=NOW)

    # Reported: one anomaly naming the network and its people; no one tagged as a bot.
    anomaly = Anomaly.objects.get(shop=shop, metric="shared_network")
    assert anomaly.subject == "network:203.0.113.0"
    assert anomaly.details["excluded_from_analytics"] is False
    assert anomaly.details["person_count"] == OFFICE
    assert not BotTag.objects.filter(shop=shop).exists()
    tag = NetworkTag.objects.get(shop=shop)
    assert (tag.network, sorted(tag.person_ids)) == ("203.0.113.0", sorted(office_people))
    # Not excluded: the rollups are as they were.
    assert day_totals(shop) == before
    body = owner_client.get(f"/analytics/anomalies/?shop={shop.domain}").json()
    assert body["shared_networks"] == {
        "excluded_from_analytics": False,
        "networks": 1,
        "people": OFFICE,
        "sessions": OFFICE,
        "events": 3 * OFFICE,
    }
    assert body["bots"]["people"] == 0

    # The shop chooses to leave shared networks out: the office's days are recomputed.
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.patch(
            f"/analytics/detection_settings/?shop={shop.domain}",
            {"exclude_shared_networks": True},
            format="json",
        )
    assert response.status_code == 200
    assert day_totals(shop) == {
        "sessions": all_sessions - OFFICE,
        "pageviews": 3 * ELSEWHERE,
        "visitors": ELSEWHERE,
    }
    body = owner_client.get(f"/analytics/anomalies/?shop={shop.domain}").json()
    assert body["shared_networks"]["excluded_from_analytics"] is True
    assert body["shared_networks"]["sessions"] == OFFICE

    # And back in when it changes its mind.
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.patch(
            f"/analytics/detection_settings/?shop={shop.domain}",
            {"exclude_shared_networks": False},
            format="json",
        )
    assert day_totals(shop) == before


def test_a_shop_that_excludes_shared_networks_loses_them_as_detection_finds_them(
    office, owner_client, celery_eager, django_capture_on_commit_callbacks
):
    shop = office
    before = day_totals(shop)
    owner_client.patch(
        f"/analytics/detection_settings/?shop={shop.domain}",
        {"exclude_shared_networks": True},
        format="json",
    )
    assert day_totals(shop) == before  # nothing found yet, nothing excluded

    with django_capture_on_commit_callbacks(execute=True):
        anomalies_detect(shop_id=shop.pk, now=NOW)

    anomaly = Anomaly.objects.get(shop=shop, metric="shared_network")
    assert anomaly.details["excluded_from_analytics"] is True
    assert day_totals(shop) == {
        "sessions": before["sessions"] - OFFICE,
        "pageviews": 3 * ELSEWHERE,
        "visitors": ELSEWHERE,
    }
    # Bots stay a choice of their own: no one here is a bot.
    assert not BotTag.objects.filter(shop=shop).exists()
