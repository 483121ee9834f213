"""gunicorn with deploy/gunicorn.conf.py serves ingestion, with either HTTP parser.

The production entry point: a real gunicorn process on a free port, talking to this test's
database. The C parser (gunicorn_h1c, from requirements.txt) is gunicorn's default when it is
installed; each case runs on it and on the pure-Python parser, so both stay correct. One server
per parser serves the module's tests (a start takes seconds); each test has its own shop and
write key, and its rows are flushed after it, as the server only reads what the test created.
"""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests
from django.db import connection

from events.models import Event, RejectedEvent

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    """The test database, which the server process must use instead of the configured one."""
    settings = connection.settings_dict
    return (
        f"mysql://{settings['USER']}:{settings['PASSWORD']}@{settings['HOST'] or '127.0.0.1'}:"
        f"{settings['PORT'] or 3306}/{settings['NAME']}"
    )


@pytest.fixture(scope="module", params=["fast", "python"])
def server(request, django_db_setup) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "clickserver.wsgi"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "1",
            "GUNICORN_THREADS": "2",
            # "fast" fails at start when gunicorn_h1c is missing instead of falling back.
            "GUNICORN_HTTP_PARSER": request.param,
            "GUNICORN_ACCESS_LOG": "",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited: {process.stderr.read().decode()[-2000:]}")
            try:
                # A busy machine can take seconds over a fresh worker's first request: wait on.
                requests.get(f"{base}/health/", timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):
                if time.monotonic() > deadline:
                    pytest.fail("gunicorn did not answer within 60 s")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()


def page_view(event_id: str) -> dict:
    return {"event_id": event_id, "type": "page_view", "anonymous_id": "anon-1"}


def test_single_and_batched_events_on_one_kept_alive_connection(server, shop):
    key = {"X-Write-Key": shop.write_key, "Content-Type": "application/json"}
    with requests.Session() as client:
        one = client.post(f"{server}/events/", data=orjson.dumps(page_view("one")), headers=key)
        batch = {"batch": [page_view(f"b-{i}") for i in range(100)]}
        many = client.post(f"{server}/events/", data=orjson.dumps(batch), headers=key)

    assert (one.status_code, one.json()) == (202, {"accepted": 1, "duplicates": 0, "rejected": []})
    assert (many.status_code, many.json()["accepted"]) == (202, 100)
    assert Event.objects.filter(shop=shop).count() == 101


def test_a_chunked_body_is_read_whole(server, shop):
    body = orjson.dumps({"batch": [page_view(f"c-{i}") for i in range(50)]})
    # A generator body makes requests send Transfer-Encoding: chunked, in 1 KiB pieces.
    pieces = (body[start : start + 1024] for start in range(0, len(body), 1024))

    response = requests.post(
        f"{server}/events/",
        data=pieces,
        headers={"X-Write-Key": shop.write_key, "Content-Type": "application/json"},
    )

    assert response.status_code == 202, response.json()
    assert response.json()["accepted"] == 50


def test_malformed_json_and_a_bad_event_get_clear_errors(server, shop):
    key = {"X-Write-Key": shop.write_key, "Content-Type": "application/json"}

    broken = requests.post(f"{server}/events/", data=b'{"event_id": ', headers=key)
    mixed = requests.post(
        f"{server}/events/",
        data=orjson.dumps({"batch": [page_view("good"), {"event_id": "bad", "type": ""}]}),
        headers=key,
    )

    assert broken.status_code == 400
    assert broken.json()["code"] == "malformed_json"
    assert mixed.status_code == 202
    assert mixed.json()["accepted"] == 1
    assert [item["index"] for item in mixed.json()["rejected"]] == [1]
    assert list(Event.objects.values_list("event_id", flat=True)) == ["good"]
    assert RejectedEvent.objects.filter(shop=shop).count() == 1


def test_an_unknown_write_key_is_refused(server):
    response = requests.post(
        f"{server}/events/",
        data=orjson.dumps(page_view("x")),
        headers={"X-Write-Key": "not-a-key", "Content-Type": "application/json"},
    )

    assert response.status_code == 401
    assert not Event.objects.exists()
