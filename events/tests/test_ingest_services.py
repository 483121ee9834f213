"""Ingestion on the real services: concurrency on MariaDB, the hand-off to Celery via RabbitMQ."""

import threading
import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import connection
from django.test import Client

from clickserver.celery import app
from events.models import Event, PipelineJob, PipelineWatermark

pytestmark = pytest.mark.services


def batch(prefix: str, n: int) -> dict:
    return {
        "batch": [
            {"event_id": f"{prefix}-{i}", "type": "page_view", "anonymous_id": "a"}
            for i in range(n)
        ]
    }


@pytest.mark.django_db(transaction=True)
def test_identical_batches_on_two_workers_at_once_store_each_event_once(shop):
    barrier = threading.Barrier(2)
    results = []

    def send():
        client = Client()
        barrier.wait()
        response = client.post(
            "/events/",
            batch("same", 300),
            content_type="application/json",
            headers={"X-Write-Key": shop.write_key},
        )
        results.append(response.json())
        connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Event.objects.filter(shop=shop).count() == 300
    assert sum(r["accepted"] for r in results) == 300
    assert sum(r["duplicates"] for r in results) == 300


@pytest.fixture
def rabbitmq_worker():
    # Both queues (the default one and the live one): messages earlier tests left there, for
    # shops that no longer exist, would keep this solo worker busy past the test's deadline.
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            bound = queue(conn.default_channel)
            bound.declare()
            bound.purge()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as worker:
        yield worker


@pytest.mark.django_db(transaction=True)
def test_a_committed_batch_reaches_a_worker_through_rabbitmq(shop, ingest_client, rabbitmq_worker):
    assert app.conf.broker_url.startswith("amqp://")

    response = ingest_client.post("/events/", batch("rmq", 25))

    assert response.status_code == 202
    last_id = Event.objects.filter(shop=shop).order_by("-id").values_list("id", flat=True).first()
    deadline = time.monotonic() + 30
    position = 0
    while time.monotonic() < deadline:
        watermark = PipelineWatermark.objects.filter(job=PipelineJob.EVENTS, shop=shop).first()
        position = watermark.position if watermark else 0
        if position == last_id:
            break
        time.sleep(0.2)
    assert position == last_id
