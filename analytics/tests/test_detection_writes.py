"""Detection stores its findings in chunks (analytics/services/anomalies.py `anomalies_store`,
analytics/services/detection.py `bot_tags_upsert`): across chunk edges, new rows are inserted with
their ids, active rows refreshed, resolved rows left closed, and a person's tags merged."""

from datetime import timedelta

import pytest

from analytics.models import Anomaly, AnomalyStatus, BotTag
from analytics.services import anomalies, detection
from analytics.services.anomalies import AnomalyIn, anomalies_store
from analytics.services.detection import BotTagIn, bot_tags_upsert
from analytics.tests.test_anomalies_detection import HOUR, NOW, stored_in

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(anomalies, "STORE_CHUNK", 2)
    monkeypatch.setattr(detection, "TAG_CHUNK", 2)


def bot(person: int, *, count: int = 10) -> AnomalyIn:
    return stored_in(
        kind="bot",
        metric="bot_activity",
        subject=f"person:{person}",
        observed=float(count),
        direction="spike",
        severity="warning",
    )


def test_findings_across_chunks_open_refresh_and_keep_resolved_rows_closed(shop):
    first = anomalies_store(shop_id=shop.pk, found=[bot(p) for p in range(5)], now=NOW)
    assert sorted(first.opened) == sorted(Anomaly.objects.values_list("pk", flat=True))
    assert len(first.opened) == 5
    Anomaly.objects.filter(subject="person:1").update(status=AnomalyStatus.RESOLVED)

    later = NOW + HOUR
    found = [bot(p, count=20) for p in range(7)] + [bot(3, count=30)]
    again = anomalies_store(shop_id=shop.pk, found=found, now=later)

    assert len(again.opened) == 2  # persons 5 and 6
    assert again.updated == 4  # 0, 2, 3, 4: the resolved row stays as it was
    rows = {row.subject: row for row in Anomaly.objects.all()}
    assert rows["person:1"].observed == 10.0
    assert rows["person:1"].status == AnomalyStatus.RESOLVED
    assert rows["person:3"].observed == 30.0  # the last figures of a repeated finding
    assert rows["person:0"].observed == 20.0
    assert rows["person:0"].updated_at == later
    assert again.escalated == []


def test_a_worse_finding_is_escalated_once_across_chunks(shop):
    anomalies_store(shop_id=shop.pk, found=[bot(p) for p in range(3)], now=NOW)
    critical = [
        stored_in(
            kind="bot",
            metric="bot_activity",
            subject=f"person:{p}",
            direction="spike",
            severity="critical" if p == 2 else "warning",
        )
        for p in range(3)
    ]
    result = anomalies_store(shop_id=shop.pk, found=critical, now=NOW)
    assert result.escalated == [Anomaly.objects.get(subject="person:2").pk]


def tag(person: int, *, reasons, sessions, count, first_hours, last_hours) -> BotTagIn:
    return BotTagIn(
        person_id=person,
        reasons=reasons,
        session_ids=sessions,
        event_count=count,
        first_at=NOW + timedelta(hours=first_hours),
        last_at=NOW + timedelta(hours=last_hours),
    )


def test_bot_tags_are_created_and_merged_across_chunks(shop):
    created = bot_tags_upsert(
        shop_id=shop.pk,
        tags=[
            tag(p, reasons=["rate"], sessions=[p], count=5, first_hours=0, last_hours=1)
            for p in range(3)
        ],
        now=NOW,
    )
    assert created == 3

    later = NOW + timedelta(hours=2)
    created = bot_tags_upsert(
        shop_id=shop.pk,
        tags=[
            tag(1, reasons=["user_agent"], sessions=[10], count=3, first_hours=-1, last_hours=0),
            tag(4, reasons=["rate"], sessions=[4], count=9, first_hours=0, last_hours=2),
            tag(4, reasons=["headless"], sessions=[40], count=2, first_hours=-2, last_hours=1),
            tag(2, reasons=["rate"], sessions=[2], count=8, first_hours=0, last_hours=3),
        ],
        now=later,
    )

    assert created == 1
    rows = {row.person_id: row for row in BotTag.objects.filter(shop=shop)}
    assert sorted(rows) == [0, 1, 2, 4]
    assert rows[1].reasons == ["rate", "user_agent"]
    assert rows[1].session_ids == [1, 10]
    assert rows[1].event_count == 5
    assert rows[1].first_at == NOW - timedelta(hours=1)
    assert rows[1].last_at == NOW + timedelta(hours=1)
    assert rows[1].tagged_at == later
    assert rows[4].reasons == ["headless", "rate"]
    assert rows[4].session_ids == [4, 40]
    assert rows[4].event_count == 9
    assert rows[4].first_at == NOW - timedelta(hours=2)
    assert rows[2].event_count == 8
    assert rows[2].last_at == NOW + timedelta(hours=3)
    assert rows[0].tagged_at == NOW  # not in the second run: untouched
