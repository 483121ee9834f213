"""Ingestion keeps accepting while Redis is down: Redis holds only counters and debounce flags,
the events themselves are durable in the database before the 202."""

import logging
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from clickserver import ratelimit
from events import selectors
from events.models import Event


def page_view(event_id: str) -> dict:
    return {"event_id": event_id, "type": "page_view", "anonymous_id": "anon-1"}


@pytest.mark.django_db
def test_ingestion_answers_202_while_redis_is_down(ingest_client, shop, redis_down, caplog):
    caplog.set_level(logging.WARNING, logger="clickserver.ratelimit")

    responses = [ingest_client.post("/events/", page_view(f"e-{i}")) for i in range(3)]

    assert [r.status_code for r in responses] == [202, 202, 202]
    assert sorted(Event.objects.filter(shop=shop).values_list("event_id", flat=True)) == [
        "e-0",
        "e-1",
        "e-2",
    ]
    # One line per outage and process, not one per request.
    assert [r.getMessage() for r in caplog.records if r.name == "clickserver.ratelimit"] == [
        "rate limit fails open: Redis unavailable (Error 111 connecting to 127.0.0.1:1. "
        "Connection refused.); counting in this process only"
    ]


@pytest.mark.django_db
def test_events_ingested_while_redis_is_down_are_left_for_the_sweep(
    ingest_client, shop, redis_down, process_all
):
    ingest_client.post("/v1/track", {"messageId": "m-1", "anonymousId": "a-1", "event": "Hi"})

    backlog = selectors.shops_with_backlog(settled_before=datetime(2100, 1, 1, tzinfo=UTC))
    processed = process_all(shop)

    assert backlog == [shop.pk]
    assert processed == 1
    assert Event.objects.get(shop=shop).session_id is not None


def redis_unavailable_count() -> float:
    return REGISTRY.get_sample_value("clickserver_ratelimit_redis_unavailable_total") or 0.0


def test_every_count_that_fails_open_is_counted_in_the_metric(redis_down):
    before = redis_unavailable_count()

    # A limit this low sends every hit to Redis: the first finds it refusing connections, the
    # next two are answered from this process's count without trying it again.
    answers = [
        ratelimit.rate_limit_retry_after(key="metrics-test", limit=5, window_seconds=60)
        for _ in range(3)
    ]

    assert answers == [None, None, None]
    assert redis_unavailable_count() - before == 3.0
