"""/metrics for monitoring clickserver itself: the IP allow-list, requests by route, ingestion,
Celery tasks, cache lookups, queue depth and process CPU and memory (docs/operations.md)."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from kombu import Connection, Exchange, Queue
from prometheus_client import REGISTRY

from analytics.tasks import report_deliver_task, rollups_refresh_task
from clickserver.cache import cached

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a-metrics-token-of-at-least-32-characters"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("allowed", "address", "status"),
    [
        (["10.0.0.0/8"], "10.1.2.3", 200),
        (["10.0.0.0/8"], "192.168.1.1", 404),
        (["127.0.0.1", "::1"], "127.0.0.1", 200),
        ([], "127.0.0.1", 404),
    ],
)
def test_metrics_answers_an_allowed_address_without_a_token(
    client, settings, allowed, address, status
):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = allowed

    response = client.get("/metrics", REMOTE_ADDR=address)

    assert response.status_code == status


@pytest.mark.django_db
def test_an_ingest_request_moves_the_route_and_ingestion_counters(client, settings, shop):
    settings.METRICS_TOKEN = TOKEN
    labels = {"route": "events-ingest", "method": "POST", "status_class": "2xx"}
    unmatched = {"route": "unmatched", "method": "GET", "status_class": "4xx"}
    unmatched_before = value("clickserver_http_requests_total", **unmatched)
    before = (
        value("clickserver_http_requests_total", **labels),
        value(
            "clickserver_http_request_duration_seconds_count", route="events-ingest", method="POST"
        ),
        value("clickserver_ingest_events_total", outcome="accepted"),
        value("clickserver_ingest_events_total", outcome="rejected"),
    )
    batch = {
        "batch": [
            {"event_id": str(uuid.uuid4()), "type": "page_view", "anonymous_id": "a1"},
            {"event_id": str(uuid.uuid4()), "type": "page_view", "anonymous_id": "a1"},
            {"event_id": str(uuid.uuid4()), "type": "page_view"},
        ]
    }

    posted = client.post(
        "/events/", batch, content_type="application/json", headers={"X-Write-Key": shop.write_key}
    )
    scrape = client.get("/metrics", headers=AUTH).content.decode()

    after = (
        value("clickserver_http_requests_total", **labels),
        value(
            "clickserver_http_request_duration_seconds_count", route="events-ingest", method="POST"
        ),
        value("clickserver_ingest_events_total", outcome="accepted"),
        value("clickserver_ingest_events_total", outcome="rejected"),
    )
    assert posted.status_code == 202
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 2, 1]
    line = 'clickserver_http_requests_total{method="POST",route="events-ingest",status_class="2xx"}'
    assert f"{line} {after[0]}" in scrape
    # Neither the ingest request nor the scrape counted as an unknown path (the counter is
    # process-wide: other tests may have moved it before).
    assert value("clickserver_http_requests_total", **unmatched) == unmatched_before


@pytest.mark.django_db
def test_an_unknown_path_counts_as_unmatched_not_by_its_path(client):
    before = value(
        "clickserver_http_requests_total", route="unmatched", method="GET", status_class="4xx"
    )

    client.get("/no/such/path/12345/")

    after = value(
        "clickserver_http_requests_total", route="unmatched", method="GET", status_class="4xx"
    )
    assert after - before == 1
    assert not any(
        "12345" in s.labels.get("route", "") for m in REGISTRY.collect() for s in m.samples
    )


@pytest.mark.django_db
def test_task_runs_move_the_success_failure_and_duration_metrics(shop):
    ok, failing = "analytics.tasks.rollups_refresh_task", "analytics.tasks.report_deliver_task"
    before = (
        value("clickserver_celery_tasks_total", task=ok, outcome="success"),
        value("clickserver_celery_task_duration_seconds_count", task=ok),
        value("clickserver_celery_tasks_total", task=failing, outcome="failure"),
    )

    rollups_refresh_task.apply(args=(shop.pk,))
    report_deliver_task.apply(args=(shop.pk + 10_000, "daily", "2026-01-05"), throw=False)

    after = (
        value("clickserver_celery_tasks_total", task=ok, outcome="success"),
        value("clickserver_celery_task_duration_seconds_count", task=ok),
        value("clickserver_celery_tasks_total", task=failing, outcome="failure"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]


@pytest.mark.django_db
def test_cache_lookups_count_misses_and_hits(client, settings):
    settings.METRICS_TOKEN = TOKEN
    key = f"test:metrics:{uuid.uuid4()}"
    before = [value("clickserver_cache_lookups_total", result=r) for r in ("miss", "hit", "local")]

    cached(key, lambda: 1, timeout=60)
    cached(key, lambda: 1, timeout=60)
    cached(key, lambda: 1, timeout=60, local=True)
    cached(key, lambda: 1, timeout=60, local=True)

    after = [value("clickserver_cache_lookups_total", result=r) for r in ("miss", "hit", "local")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 2, 1]


@pytest.mark.django_db
def test_the_scrape_reports_process_cpu_and_memory(client, settings):
    settings.METRICS_TOKEN = TOKEN

    text = client.get("/metrics", headers=AUTH).content.decode()

    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("clickserver_process_")
    )
    assert float(samples["clickserver_process_resident_memory_bytes"]) > 10_000_000
    assert float(samples["clickserver_process_cpu_seconds"]) > 0


@pytest.mark.services
@pytest.mark.django_db
def test_the_scrape_reports_the_rabbitmq_queue_depth(client, settings):
    settings.METRICS_TOKEN = TOKEN
    name = f"metrics-test-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = name
    settings.CELERY_LIVE_QUEUE = f"{name}.live"
    queues = [Queue(n, Exchange(n), routing_key=n) for n in (name, f"{name}.live")]
    with Connection(settings.CELERY_BROKER_URL) as conn:
        producer = conn.Producer()
        for queue, count in zip(queues, (3, 1), strict=True):
            for i in range(count):
                producer.publish(
                    {"n": i}, exchange=queue.exchange, routing_key=queue.name, declare=[queue]
                )
        try:
            text = client.get("/metrics", headers=AUTH).content.decode()
            queues[1](conn.default_channel).delete()
            without_live = client.get("/metrics", headers=AUTH).content.decode()
        finally:
            queues[0](conn.default_channel).delete()

    assert f'clickserver_celery_queue_messages{{queue="{name}"}} 3.0' in text
    assert f'clickserver_celery_queue_consumers{{queue="{name}"}} 0.0' in text
    assert f'clickserver_celery_queue_messages{{queue="{name}.live"}} 1.0' in text
    # A queue the broker does not know (yet) is left out; the other is still reported.
    assert f'clickserver_celery_queue_messages{{queue="{name}"}} 3.0' in without_live
    assert f'queue="{name}.live"' not in without_live


@pytest.mark.django_db
def test_every_metric_the_example_rules_use_is_exported(client, settings, shop):
    settings.METRICS_TOKEN = TOKEN
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "clickserver-rules.yml").read_text())
    client.post(
        "/events/",
        {
            "batch": [
                {"type": "page_view", "anonymous_id": "a1", "event_id": str(uuid.uuid4())},
                {"type": "page_view", "event_id": str(uuid.uuid4())},
            ]
        },  # rejected: no identity
        content_type="application/json",
        headers={"X-Write-Key": shop.write_key},
    )
    rollups_refresh_task.apply(args=(shop.pk,))

    text = client.get("/metrics", headers=AUTH).content.decode()

    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"clickserver_[a-z_]+", rule["expr"])
    }
    queue = {"clickserver_celery_queue_messages", "clickserver_celery_queue_consumers"}
    missing = used - exported - (set() if settings.CELERY_BROKER_URL.startswith("amqp") else queue)
    assert len(used) == 15
    assert missing == set()


PROCESS_SCRIPT = """
import multiprocessing, sys
sys.path.insert(0, sys.argv[1])
from clickserver import metrics
from prometheus_client import multiprocess

def child():
    metrics.process_sample(force=True)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    pids = []
    for _ in range(2):
        process = ctx.Process(target=child)
        process.start()
        process.join()
        pids.append(process.pid)
    multiprocess.mark_process_dead(pids[0])  # as gunicorn's child_exit / Celery's shutdown do
    sys.stdout.write(" ".join(map(str, pids)) + "\\n" + metrics.metrics_render().decode())
"""


def test_multiprocess_mode_keeps_cpu_and_memory_per_live_process(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_DEBUG": "1"}

    result = subprocess.run(
        [sys.executable, "-c", PROCESS_SCRIPT, str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    (dead, live), *lines = [
        result.stdout.split("\n", 1)[0].split(),
        *result.stdout.splitlines()[1:],
    ]
    samples = dict(line.rsplit(" ", 1) for line in lines if line.startswith("clickserver_process_"))
    memory = f'clickserver_process_resident_memory_bytes{{pid="{live}"}}'
    cpu = f'clickserver_process_cpu_seconds{{pid="{live}"}}'
    assert float(samples[memory]) > 1_000_000
    assert float(samples[cpu]) > 0
    # The exited process's gauges are gone (the parent's own, never sampled, may read 0).
    assert not [name for name in samples if f'pid="{dead}"' in name]
