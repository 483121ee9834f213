"""Issue #15, finding 1: no event stops a shop's pipeline, and readiness names a stuck shop."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError
from prometheus_client import REGISTRY

from events import identity
from events.models import Event, PipelineJob, PipelineWatermark, RejectedEvent
from events.services import orders, pipeline
from events.services.ingest import events_insert, rejected_event_replay
from events.tests.factories import event_in

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 1, 6, tzinfo=UTC)
NOW = datetime(2100, 1, 1, tzinfo=UTC)


def insert(shop, *events, received_at: datetime = RECEIVED) -> None:
    events_insert(shop_id=shop.pk, events=list(events), received_at=received_at)


def unassigned(shop) -> list[str]:
    return sorted(
        Event.objects.filter(shop=shop, person__isnull=True).values_list("event_id", flat=True)
    )


@pytest.mark.django_db
def test_events_at_the_ends_of_the_calendar_are_processed_with_their_neighbours(shop, process_all):
    # Stored before ingestion bounded timestamps; the restart-point arithmetic overflowed.
    insert(
        shop,
        event_in("year-1", datetime(1, 1, 1, tzinfo=UTC)),
        event_in("year-9999", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
        event_in("now", T0),
    )
    process_all(shop)
    insert(shop, event_in("later", T0 + timedelta(minutes=5)))

    processed = process_all(shop)

    assert processed == 1
    assert unassigned(shop) == []


@pytest.fixture
def poison(monkeypatch):
    """An event the pipeline cannot process: identity extraction fails for anonymous_id "poison".

    Stands in for any bug a single stored event can trigger (the overflow above was one).
    """
    real = identity.event_identifiers

    def event_identifiers(**kwargs):
        if kwargs["anonymous_id"] == "poison":
            raise ValueError("cannot process this event")
        return real(**kwargs)

    monkeypatch.setattr(identity, "event_identifiers", event_identifiers)


@pytest.mark.django_db
def test_an_event_the_pipeline_cannot_process_is_quarantined_and_its_neighbours_processed(
    shop, process_all, poison, caplog
):
    insert(
        shop,
        event_in("a1", T0, anonymous_id="a"),
        event_in("p", T0, anonymous_id="poison", properties={"k": "v"}),
        event_in("b1", T0, anonymous_id="b"),
    )
    insert(shop, event_in("a2", T0 + timedelta(minutes=1), anonymous_id="a"))

    with caplog.at_level(logging.ERROR, logger="events.services.pipeline"):
        processed = process_all(shop, batch_size=3)

    assert processed == 3
    assert sorted(Event.objects.filter(shop=shop).values_list("event_id", flat=True)) == [
        "a1",
        "a2",
        "b1",
    ]
    assert unassigned(shop) == []
    kept = RejectedEvent.objects.get(shop=shop)
    assert kept.code == "pipeline_failed"
    assert kept.detail == "ValueError: cannot process this event"
    assert kept.payload["event_id"] == "p"
    assert kept.payload["anonymous_id"] == "poison"
    assert kept.payload["timestamp"] == "2026-01-05T12:00:00+00:00"
    assert kept.payload["properties"] == {"k": "v"}
    assert [r.getMessage() for r in caplog.records] == [
        f"shop {shop.pk}: event p quarantined: ValueError: cannot process this event"
    ]


@pytest.mark.django_db
def test_a_quarantined_event_replays_once_the_pipeline_can_process_it(
    shop, process_all, poison, monkeypatch
):
    insert(shop, event_in("p", T0, anonymous_id="poison"))
    process_all(shop)
    monkeypatch.undo()

    rejected_event_replay(rejected=RejectedEvent.objects.get(shop=shop), now=RECEIVED)
    process_all(shop)

    event = Event.objects.get(shop=shop)
    assert (event.event_id, event.occurred_at) == ("p", T0)
    assert event.person is not None


@pytest.mark.django_db
def test_readiness_answers_503_naming_a_shop_whose_backlog_is_too_old(client, shop, settings):
    settings.PIPELINE_STUCK_SECONDS = 600
    insert(shop, event_in("old", T0), received_at=datetime.now(tz=UTC) - timedelta(seconds=601))

    response = client.get("/health/ready/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    [stuck] = body["stuck_shops"]
    assert (stuck["shop_id"], stuck["domain"], stuck["error"]) == (shop.pk, shop.domain, "")
    assert stuck["lag_seconds"] >= 601


@pytest.mark.django_db
def test_readiness_answers_503_naming_a_shop_whose_last_batch_failed(
    client, shop, settings, monkeypatch
):
    def fail(**kwargs):
        raise DatabaseError("lost connection")

    monkeypatch.setattr(pipeline, "_batch_assign", fail)
    insert(shop, event_in("e", T0), received_at=datetime.now(tz=UTC))

    with pytest.raises(DatabaseError):
        pipeline.events_process(shop_id=shop.pk, now=NOW, batch_size=10)
    response = client.get("/health/ready/")

    assert response.status_code == 503
    [stuck] = response.json()["stuck_shops"]
    assert (stuck["shop_id"], stuck["error"]) == (shop.pk, "DatabaseError: lost connection")
    watermark = PipelineWatermark.objects.get(job=PipelineJob.EVENTS, shop=shop)
    assert watermark.failed_at == NOW


@pytest.mark.django_db
def test_a_successful_batch_clears_the_failure(client, shop, monkeypatch, process_all):
    watermark = PipelineWatermark.objects.create(
        job=PipelineJob.EVENTS, shop=shop, failed_at=NOW, error="DatabaseError: lost connection"
    )
    insert(shop, event_in("e", T0), received_at=datetime.now(tz=UTC))

    process_all(shop)

    watermark.refresh_from_db()
    assert (watermark.failed_at, watermark.error) == (None, "")
    assert client.get("/health/ready/").status_code == 200


@pytest.mark.django_db
def test_an_event_without_an_identifier_is_quarantined_not_left_unassigned(shop, process_all):
    # Validation rejects such events now; a row stored without one must not be retaken by every
    # batch as a straggler.
    insert(shop, event_in("junk", T0, anonymous_id="undefined"), event_in("ok", T0))

    processed = process_all(shop)

    assert processed == 1
    assert list(Event.objects.filter(shop=shop).values_list("event_id", flat=True)) == ["ok"]
    kept = RejectedEvent.objects.get(shop=shop)
    assert (kept.code, kept.detail) == (
        "pipeline_failed",
        "ValueError: the event has no identifier",
    )


def pipeline_counts() -> dict[str, float]:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    return {
        "processed": sample("clickserver_pipeline_batches_total", outcome="processed"),
        "failed": sample("clickserver_pipeline_batches_total", outcome="failed"),
        "events": sample("clickserver_pipeline_events_processed_total"),
        "quarantined": sample("clickserver_pipeline_events_quarantined_total"),
    }


@pytest.mark.django_db
def test_the_pipeline_counts_its_batches_and_quarantined_events(
    shop, poison, django_capture_on_commit_callbacks
):
    insert(
        shop,
        event_in("a1", T0, anonymous_id="a"),
        event_in("p", T0, anonymous_id="poison"),
        event_in("b1", T0, anonymous_id="b"),
    )
    before = pipeline_counts()

    with django_capture_on_commit_callbacks(execute=True):
        pipeline.events_process(shop_id=shop.pk, now=NOW, batch_size=10)

    after = pipeline_counts()
    assert {name: after[name] - before[name] for name in after} == {
        "processed": 1.0,
        "failed": 0.0,
        "events": 2.0,
        "quarantined": 1.0,
    }


@pytest.mark.django_db
def test_a_failed_batch_is_counted_and_no_quarantine_it_rolled_back(
    shop, poison, monkeypatch, django_capture_on_commit_callbacks
):
    real = orders.orders_record_from_purchases

    def fail_after_the_quarantine(**kwargs):
        if RejectedEvent.objects.filter(shop=shop).exists():
            raise DatabaseError("lost connection")
        return real(**kwargs)

    monkeypatch.setattr(pipeline, "orders_record_from_purchases", fail_after_the_quarantine)
    insert(shop, event_in("p", T0, anonymous_id="poison"), event_in("a1", T0, anonymous_id="a"))
    before = pipeline_counts()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(DatabaseError):
        pipeline.events_process(shop_id=shop.pk, now=NOW, batch_size=10)

    after = pipeline_counts()
    assert {name: after[name] - before[name] for name in after} == {
        "processed": 0.0,
        "failed": 1.0,
        "events": 0.0,
        "quarantined": 0.0,
    }
    assert RejectedEvent.objects.filter(shop=shop).count() == 0
