"""Detection wired to the product: rollups → detectors → stored anomalies, dedup, resolution,
bots tagged, the demo's injected anomalies found (inject → pipeline → rollups → detect)."""

from datetime import UTC, datetime, timedelta

import pytest

from analytics.models import Anomaly, AnomalyStatus, BotTag, DetectionSettings
from analytics.selectors.anomalies import shops_detection_due
from analytics.services.anomalies import anomaly_resolve
from analytics.services.detection import anomalies_detect
from analytics.services.rollups import rollups_refresh
from analytics.tests.rollup_history import hour_set, rollup_history_write
from events.services.ingest import events_ingest
from events.simulator import Simulator

# A Wednesday afternoon.
NOW = datetime(2026, 3, 4, 14, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)

pytestmark = pytest.mark.django_db


def test_the_demo_spike_whale_and_bot_become_anomalies(shop, process_all):
    """What the dashboard's "Generate anomalies" button sends, through the real pipeline."""
    rollup_history_write(shop, end=NOW.replace(hour=0, minute=0))
    journeys = Simulator(shop_domain=shop.domain, seed=7, timezone="UTC").anomalies(end=NOW)
    events = [event for journey in journeys for event in journey]
    result = events_ingest(shop=shop, events=events, received_at=NOW, sent_at=NOW)
    assert result.accepted == len(events)
    assert not result.rejected
    process_all(shop)
    assert rollups_refresh(shop_id=shop.pk, now=NOW).days == 1

    detected = anomalies_detect(shop_id=shop.pk, now=NOW)

    rows = Anomaly.objects.filter(shop=shop)
    spikes = rows.filter(metric="sessions_hourly", direction="spike")
    # 300 one-page visits over the last hour land in 13:00 and 14:00 (in progress).
    assert {row.window_start for row in spikes} >= {NOW.replace(minute=0) - HOUR}
    spike = spikes.get(window_start=NOW.replace(minute=0) - HOUR)
    assert spike.observed > 100
    assert spike.expected == 10
    assert spike.band_high < spike.observed
    assert spike.severity == "critical"
    assert spike.explanation.startswith("Sessions 13:00–14:00 on Wed 4 Mar 2026 were ")
    assert "the usual 10 for a Wednesday afternoon" in spike.explanation
    whale = rows.get(kind="order")
    assert whale.subject.startswith("#whale-")
    assert whale.observed == 9850.0
    assert whale.severity == "critical"
    assert "high_value" in whale.details["reasons"]
    bot = rows.get(metric="bot")
    tag = BotTag.objects.get(shop=shop)
    assert bot.subject == f"person:{tag.person_id}"
    assert {"bot_user_agent", "fast_pages", "hyperactive"} <= set(tag.reasons)
    assert tag.event_count >= 300
    assert len(tag.session_ids) >= 1
    assert set(detected.opened) == set(rows.values_list("id", flat=True))

    # Rerun: the same windows are the same rows (dedup), nothing new opens.
    again = anomalies_detect(shop_id=shop.pk, now=NOW + timedelta(minutes=1))
    assert again.opened == []
    assert Anomaly.objects.filter(shop=shop).count() == rows.count()


def test_a_spike_resolves_when_the_metric_returns(shop):
    spike_hour = datetime(2026, 3, 4, 10, tzinfo=UTC)
    rollup_history_write(shop, end=spike_hour + 3 * HOUR)
    hour_set(shop, spike_hour, session_count=80, pageview_count=30)
    hour_set(shop, spike_hour + HOUR, session_count=95, pageview_count=30)

    anomalies_detect(shop_id=shop.pk, now=spike_hour + HOUR + timedelta(minutes=5))
    first, current = Anomaly.objects.filter(shop=shop, metric="sessions_hourly").order_by("id")
    assert first.window_start == spike_hour
    assert first.status == AnomalyStatus.OPEN
    # 11:00 is in progress at 11:05 and already above the band: flagged at once, "so far".
    assert current.window_start == spike_hour + HOUR
    assert current.details["in_progress"]
    assert current.explanation.endswith("so far (not over yet).")
    anomalies_detect(shop_id=shop.pk, now=spike_hour + 2 * HOUR + timedelta(minutes=5))
    current.refresh_from_db()
    assert not current.details["in_progress"]
    assert current.status == AnomalyStatus.OPEN
    assert Anomaly.objects.filter(shop=shop, metric="sessions_hourly").count() == 2
    # 12:00 is back at 10 sessions: at 13:05 the newest complete hour is normal.
    anomalies_detect(shop_id=shop.pk, now=spike_hour + 3 * HOUR + timedelta(minutes=5))
    rows = Anomaly.objects.filter(shop=shop, metric="sessions_hourly")
    assert {row.status for row in rows} == {AnomalyStatus.RESOLVED}
    assert all(row.details["resolution"] == "the metric returned inside its band" for row in rows)
    # A resolved window is not reopened by re-judging it.
    anomalies_detect(shop_id=shop.pk, now=spike_hour + 3 * HOUR + timedelta(minutes=6))
    assert set(rows.values_list("status", flat=True)) == {AnomalyStatus.RESOLVED}


def test_a_drop_waits_for_its_hour_to_end(shop, user):
    hour = datetime(2026, 3, 4, 10, tzinfo=UTC)
    rollup_history_write(shop, end=hour)
    # 10:00 has no row: 0 sessions so far, at 10:30 nobody can tell it is a drop.
    anomalies_detect(shop_id=shop.pk, now=hour + timedelta(minutes=30))
    assert not Anomaly.objects.filter(shop=shop, metric="sessions_hourly").exists()
    anomalies_detect(shop_id=shop.pk, now=hour + HOUR + timedelta(minutes=1))
    drop = Anomaly.objects.get(shop=shop, metric="sessions_hourly", window_start=hour)
    assert drop.direction == "drop"
    assert drop.observed == 0
    assert drop.expected == 10
    # Resolved by a member: re-judging the window leaves it resolved.
    anomaly_resolve(anomaly=drop, user=user, now=hour + HOUR + timedelta(minutes=2))
    anomalies_detect(shop_id=shop.pk, now=hour + HOUR + timedelta(minutes=3))
    drop.refresh_from_db()
    assert drop.status == AnomalyStatus.RESOLVED
    assert drop.resolved_by == user


def test_a_marked_holiday_and_too_little_history_stay_silent(shop):
    hour = datetime(2026, 3, 4, 10, tzinfo=UTC)
    rollup_history_write(shop, end=hour, weeks=3)
    hour_set(shop, hour - HOUR, session_count=200)
    anomalies_detect(shop_id=shop.pk, now=hour + timedelta(minutes=5))
    # Three earlier Wednesdays, but none of their errors has 3 before it: below the minimum.
    assert not Anomaly.objects.filter(shop=shop, metric="sessions_hourly").exists()

    DetectionSettings.objects.create(shop=shop, min_history=2, holidays=["2026-03-04"])
    anomalies_detect(shop_id=shop.pk, now=hour + timedelta(minutes=6))
    assert not Anomaly.objects.filter(shop=shop, metric="sessions_hourly").exists()
    DetectionSettings.objects.filter(shop=shop).update(holidays=[])
    anomalies_detect(shop_id=shop.pk, now=hour + timedelta(minutes=7))
    assert Anomaly.objects.filter(
        shop=shop, metric="sessions_hourly", window_start=hour - HOUR
    ).exists()


def test_high_value_threshold_is_the_shops(shop):
    from analytics.tests.factories import OrderFactory

    rollup_history_write(shop, end=NOW.replace(minute=0))
    DetectionSettings.objects.create(shop=shop, high_value_order=500)
    OrderFactory(shop=shop, order_id="small", placed_at=NOW - HOUR, total=120)
    OrderFactory(shop=shop, order_id="big", placed_at=NOW - HOUR, total=650)
    anomalies_detect(shop_id=shop.pk, now=NOW)
    flagged = set(Anomaly.objects.filter(shop=shop, kind="order").values_list("subject", flat=True))
    assert flagged == {"big"}
    big = Anomaly.objects.get(shop=shop, subject="big")
    assert big.explanation.startswith("Order big on Wed 4 Mar 2026 13:30 was ")
    assert big.window_start == NOW - HOUR
    # The watermark: the same orders are not judged twice.
    assert anomalies_detect(shop_id=shop.pk, now=NOW + HOUR).orders_judged == 0


def test_an_orders_time_is_told_in_the_shops_timezone(shop):
    from analytics.tests.factories import OrderFactory

    shop.timezone = "America/New_York"
    shop.save(update_fields=["timezone"])
    rollup_history_write(shop, end=NOW.replace(minute=0))
    DetectionSettings.objects.create(shop=shop, high_value_order=500)
    OrderFactory(shop=shop, order_id="big", placed_at=NOW - HOUR, total=650)

    anomalies_detect(shop_id=shop.pk, now=NOW)

    big = Anomaly.objects.get(shop=shop, subject="big")
    # 13:30 UTC is 08:30 in New York (EST, UTC-5, in early March).
    assert big.explanation.startswith("Order big on Wed 4 Mar 2026 08:30 was ")
    assert big.window_start == NOW - HOUR


def test_the_sweep_picks_shops_whose_rollups_moved_or_not_detected_this_hour(shop, other_shop):
    anomalies_detect(shop_id=shop.pk, now=NOW)
    anomalies_detect(shop_id=other_shop.pk, now=NOW)
    assert shops_detection_due(now=NOW) == []
    rollups_refresh(shop_id=shop.pk, now=NOW)  # moves the analytics watermark
    assert shops_detection_due(now=NOW) == [shop.pk]
    assert set(shops_detection_due(now=NOW + HOUR)) == {shop.pk, other_shop.pk}


def test_a_rollup_refresh_that_changes_a_day_schedules_detection(
    shop, process_all, celery_eager, settings
):
    """The hook: rollups_refresh_task → anomalies_detect_schedule → anomalies_detect_task
    (eager here; a worker runs it DETECT_DEBOUNCE_SECONDS later)."""
    from django.core.cache import cache
    from django.utils import timezone

    from analytics.models import DetectionState
    from analytics.tasks import rollups_refresh_task

    now = timezone.now()
    events_ingest(
        shop=shop,
        events=[{"type": "page_view", "anonymous_id": "a1", "timestamp": now.isoformat()}],
        received_at=now,
        sent_at=now,
    )
    process_all(shop)
    cache.delete(f"analytics:detect-scheduled:{shop.pk}")
    assert rollups_refresh_task.apply(args=[shop.pk]).get() == 1
    state = DetectionState.objects.get(shop=shop)
    assert state.detected_at is not None
    assert state.rollups_at is not None
    # Nothing new: no day changed, no detection scheduled.
    DetectionState.objects.filter(shop=shop).update(detected_at=None)
    cache.delete(f"analytics:detect-scheduled:{shop.pk}")
    assert rollups_refresh_task.apply(args=[shop.pk]).get() == 0
    assert DetectionState.objects.get(shop=shop).detected_at is None


def test_a_conversion_rate_reads_as_a_percentage(shop):
    hour = datetime(2026, 3, 4, 10, tzinfo=UTC)
    rollup_history_write(shop, end=hour + 2 * HOUR)  # 1 of 10 sessions converts, every hour
    hour_set(shop, hour, session_count=10, converted_session_count=0, pageview_count=30)
    anomalies_detect(shop_id=shop.pk, now=hour + HOUR + timedelta(minutes=5))
    row = Anomaly.objects.get(shop=shop, metric="conversion_rate_hourly", window_start=hour)
    assert row.explanation == (
        "Visit conversion 10:00–11:00 on Wed 4 Mar 2026 was 0.0 %, against the usual 10.0 % "
        "for a Wednesday morning."
    )
    assert row.direction == "drop"


def stored_in(**fields):
    """An AnomalyIn for storage tests."""
    from analytics.services.anomalies import AnomalyIn

    defaults = {
        "kind": "traffic",
        "metric": "sessions_hourly",
        "window_start": NOW.replace(minute=0),
        "window_end": NOW.replace(minute=0) + HOUR,
        "observed": 3.0,
        "expected": 10.0,
        "band_low": 5.0,
        "band_high": 15.0,
        "score": -5.0,
        "direction": "drop",
        "severity": "warning",
        "detector": "hour_of_week_mad",
        "explanation": "Sessions were 3.",
    }
    return AnomalyIn(**{**defaults, **fields})


def test_shopify_orders_without_a_tracked_purchase_are_a_health_anomaly(shop):
    from analytics.tests.factories import OrderFactory
    from events.models import Order
    from events.tests.factories import EventFactory

    shop.timezone = "Europe/Berlin"
    shop.save()
    SHOPIFY = Order.Source.SHOPIFY

    def purchase(order_id: str, at: datetime) -> None:
        EventFactory(shop=shop, type="purchase", order_id=order_id, occurred_at=at)

    # Yesterday (3 March in Berlin): ten Shopify orders, all tracked by the snippet.
    for i in range(10):
        at = datetime(2026, 3, 3, 9 + i, tzinfo=UTC)
        OrderFactory(shop=shop, order_id=f"y{i}", placed_at=at, source=SHOPIFY)
        purchase(f"y{i}", at + timedelta(seconds=20))
    # Today: six Shopify orders by 13:00 UTC, two of them tracked; 23:30 UTC on the 3rd is
    # already the 4th in Berlin. An API order and one placed 5 minutes ago are not judged.
    for i, at in enumerate(
        [datetime(2026, 3, 3, 23, 30, tzinfo=UTC)]
        + [datetime(2026, 3, 4, h, tzinfo=UTC) for h in (8, 9, 10, 11, 13)]
    ):
        OrderFactory(shop=shop, order_id=f"t{i}", placed_at=at, source=SHOPIFY)
    purchase("t1", datetime(2026, 3, 4, 8, 1, tzinfo=UTC))
    purchase("t3", datetime(2026, 3, 4, 10, 0, 30, tzinfo=UTC))
    OrderFactory(shop=shop, order_id="api-1", placed_at=NOW - HOUR, source=Order.Source.API)
    OrderFactory(shop=shop, order_id="late", placed_at=NOW - timedelta(minutes=5), source=SHOPIFY)

    anomalies_detect(shop_id=shop.pk, now=NOW)

    row = Anomaly.objects.get(shop=shop, metric="untracked_orders")
    assert (row.kind, row.severity, row.status) == ("health", "critical", "open")
    # The Berlin day from its midnight to 10 minutes ago (15:30 local).
    assert row.window_start == datetime(2026, 3, 3, 23, tzinfo=UTC)
    assert row.window_end == NOW - timedelta(minutes=10)
    assert (row.observed, row.expected) == (4.0, 0.0)
    assert row.details["examples"] == ["t0", "t2", "t4", "t5"]
    assert row.explanation.startswith(
        "4 of 6 Shopify orders (67 %) from 4 Mar 00:00 to 4 Mar 15:20 have no tracked purchase "
        "(e.g. t0, t2, t4, …)"
    )

    # The snippet is fixed and the missing purchases arrive: the next run resolves it.
    for order_id in ("t0", "t2", "t4", "t5", "late"):
        purchase(order_id, NOW)
    anomalies_detect(shop_id=shop.pk, now=NOW + timedelta(minutes=1))
    row.refresh_from_db()
    assert row.status == AnomalyStatus.RESOLVED
    assert row.details["resolution"] == "the metric returned inside its band"


def test_a_detection_waits_for_the_running_one_of_its_shop(shop, other_shop, celery_eager):
    """Two runs of one shop never overlap: the second asks for a later run and returns; another
    shop's run is not held back; the mark goes when the run ends."""
    from django.core.cache import cache

    from analytics.models import DetectionState
    from analytics.tasks import anomalies_detect_task

    cache.delete_many(
        [
            f"analytics:detect-{k}:{s.pk}"
            for k in ("running", "scheduled")
            for s in (shop, other_shop)
        ]
    )
    cache.add(f"analytics:detect-running:{shop.pk}", 1, 60)  # a run of the shop is going
    cache.add(f"analytics:detect-scheduled:{shop.pk}", 1, 60)  # (its follow-up is asked for)

    assert anomalies_detect_task.apply(args=[shop.pk]).get() == 0
    assert not DetectionState.objects.filter(shop=shop, detected_at__isnull=False).exists()
    anomalies_detect_task.apply(args=[other_shop.pk]).get()
    assert DetectionState.objects.get(shop=other_shop).detected_at is not None

    cache.delete(f"analytics:detect-running:{shop.pk}")
    anomalies_detect_task.apply(args=[shop.pk]).get()
    assert DetectionState.objects.get(shop=shop).detected_at is not None
    assert cache.add(f"analytics:detect-running:{shop.pk}", 1, 1)  # released after the run
