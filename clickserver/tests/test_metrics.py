"""GET /metrics: Prometheus text for a bearer token or a staff session, 404 for anyone else."""

import os
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clickserver import metrics
from events.services.ingest import events_insert
from events.tests.factories import UserFactory, event_in

TOKEN = "a-metrics-token-of-at-least-32-characters"
T0 = datetime(2026, 1, 5, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_metrics_is_not_found_without_a_configured_token(client, settings):
    settings.METRICS_TOKEN = ""

    response = client.get("/metrics", headers={"Authorization": "Bearer "})

    assert response.status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization", ["", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}"]
)
def test_metrics_is_not_found_without_the_right_token(client, settings, authorization):
    settings.METRICS_TOKEN = TOKEN

    response = client.get("/metrics", headers={"Authorization": authorization})

    assert response.status_code == 404


@pytest.mark.django_db
def test_metrics_answers_the_token_in_the_prometheus_text_format(client, settings, shop):
    settings.METRICS_TOKEN = TOKEN

    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Security-Policy" not in response
    types = {
        line.split()[2]
        for line in response.content.decode().splitlines()
        if line.startswith("# TYPE clickserver_")
    }
    assert types == {
        "clickserver_ingest_requests_total",
        "clickserver_ingest_events_total",
        "clickserver_ingest_rejected_events_total",
        "clickserver_ratelimit_redis_unavailable_total",
        "clickserver_pipeline_batches_total",
        "clickserver_pipeline_events_processed_total",
        "clickserver_pipeline_events_quarantined_total",
        "clickserver_pipeline_backlog_events",
        "clickserver_pipeline_backlog_lag_seconds",
        "clickserver_pipeline_stuck_shops",
        "clickserver_http_requests_total",
        "clickserver_http_request_duration_seconds",
        "clickserver_celery_tasks_total",
        "clickserver_celery_task_duration_seconds",
        "clickserver_cache_lookups_total",
        "clickserver_process_cpu_seconds",
        "clickserver_process_resident_memory_bytes",
    } | (
        {"clickserver_celery_queue_messages", "clickserver_celery_queue_consumers"}
        if settings.CELERY_BROKER_URL.startswith("amqp")
        else set()
    )
    assert "clickserver_pipeline_backlog_events 0.0" in response.content.decode()


@pytest.mark.django_db
def test_metrics_answers_a_staff_session_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    staff = UserFactory(is_staff=True)
    staff.save()  # the factory sets the password after its save; the session checks its hash
    client.force_login(staff)

    response = client.get("/metrics")

    assert response.status_code == 200


@pytest.mark.django_db
def test_metrics_is_not_found_for_a_user_who_is_not_staff(client, settings, user):
    settings.METRICS_TOKEN = TOKEN
    user.save()  # the factory sets the password after its save; the session checks its hash
    client.force_login(user)

    response = client.get("/metrics")

    assert response.status_code == 404


@pytest.mark.django_db
def test_metrics_reports_the_pipeline_backlog(client, settings, shop):
    settings.METRICS_TOKEN = TOKEN
    events_insert(
        shop_id=shop.pk,
        events=[event_in("b-1", T0), event_in("b-2", T0)],
        received_at=datetime(2026, 1, 6, tzinfo=UTC),
    )

    body = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).content.decode()

    assert "clickserver_pipeline_backlog_events 2.0" in body
    assert "clickserver_pipeline_stuck_shops 1.0" in body


# Run in a fresh interpreter: prometheus_client picks its value store when first imported.
MULTIPROCESS_SCRIPT = """
import os, runpy, sys
sys.path.insert(0, sys.argv[1])
from clickserver import metrics
child_exit = runpy.run_path(os.path.join(sys.argv[1], "deploy/gunicorn.conf.py"))["child_exit"]

for hits in (2, 3):
    pid = os.fork()
    if pid == 0:
        metrics.RATELIMIT_REDIS_UNAVAILABLE.inc(hits)
        metrics.EVENTS_ACCEPTED.inc(10 * hits)
        os._exit(0)
    os.waitpid(pid, 0)

    class Worker:
        pass

    worker = Worker()
    worker.pid = pid
    child_exit(None, worker)
sys.stdout.write(metrics.metrics_render().decode())
"""


def test_multiprocess_mode_sums_the_counters_of_every_worker_process(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    result = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_SCRIPT, str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    lines = result.stdout.splitlines()
    assert "clickserver_ratelimit_redis_unavailable_total 5.0" in lines
    assert 'clickserver_ingest_events_total{outcome="accepted"} 50.0' in lines
    # This process's own process_* metrics would describe one arbitrary worker.
    assert [line for line in lines if line.startswith("process_")] == []


def test_the_worker_serves_its_metrics_for_the_token_only():
    server = metrics.metrics_serve(bind="127.0.0.1:0", token=TOKEN)
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"

    def get(authorization: str) -> tuple[int, str]:
        request = urllib.request.Request(url, headers={"Authorization": authorization})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    try:
        refused = [get(""), get(f"Bearer {TOKEN}x"), get("Bearer ")]
        status, body = get(f"Bearer {TOKEN}")
    finally:
        server.shutdown()
        server.server_close()

    assert [code for code, _ in refused] == [404, 404, 404]
    assert status == 200
    assert "# TYPE clickserver_pipeline_batches_total counter" in body.splitlines()
