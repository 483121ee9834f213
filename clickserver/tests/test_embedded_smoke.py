"""The embedded defaults work with no servers: SQLite (WAL), local cache, filesystem broker."""

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]

INGEST = """
from django.utils import timezone
from events.models import Shop
from events.services.ingest import events_ingest
shop = Shop.objects.get(domain="embedded.example")
result = events_ingest(shop=shop, received_at=timezone.now(), events=[
    {"event_id": f"e-{i}", "type": "page_view", "anonymous_id": "a"} for i in range(5)])
print(result.accepted)
"""
WATERMARK = """
from events.models import Event, PipelineWatermark
w = PipelineWatermark.objects.filter(job="events").first()
print(w.position if w else 0, Event.objects.order_by("-id").values_list("id", flat=True).first())
"""


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_embedded_stack_ingests_and_a_worker_processes(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DATABASE_REPLICA_URL")
    }
    env.update(
        {
            "CLICKSERVER_VAR_DIR": str(tmp_path),
            "DJANGO_SECRET_KEY": "smoke",
            "PIPELINE_SETTLE_SECONDS": "0",
        }
    )
    manage(env, "migrate", "--noinput", "-v0")
    created = orjson.loads(
        manage(env, "create_shop", "--domain", "embedded.example", "--owner", "owner")
    )
    assert created["write_key"].startswith("wk_")
    assert (tmp_path / "clickserver.sqlite3").exists()

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "clickserver",
            "worker",
            "--pool",
            "solo",
            "-l",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert manage(env, "shell", "-v0", "-c", INGEST) == "5"
        deadline = time.monotonic() + 60
        position, last = "0", "None"
        while time.monotonic() < deadline:
            position, last = manage(env, "shell", "-v0", "-c", WATERMARK).split()
            if position == last:
                break
            time.sleep(1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    assert position == last != "None"
