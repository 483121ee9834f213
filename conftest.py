"""Fixtures shared by every app's tests."""

import ipaddress
import json
import os
import shutil
import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from analytics.alerting import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_verify
from clickserver.celery import app
from clickserver.ratelimit import rate_limit_forget
from events.selectors import write_key_cache_clear
from events.services.ingest import process_schedule_forget
from events.services.pipeline import events_process
from events.shopify import signature_compute
from events.tests.factories import ShopFactory, UserFactory

SHARED_DATA = Path(
    os.environ.get("CLICKSERVER_SHARED_DATA", Path(__file__).parent.parent / "shared" / "data")
)


def services_available() -> bool:
    return (
        settings.DATABASES["default"]["ENGINE"].endswith("mysql")
        and bool(settings.REDIS_URL)
        and settings.CELERY_BROKER_URL.startswith("amqp")
    )


def pytest_collection_modifyitems(config, items):
    if services_available():
        return
    skip = pytest.mark.skip(reason="needs MariaDB, Redis and RabbitMQ (embedded backends in use)")
    for item in items:
        if "services" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fuzz_cases():
    """Cases each fuzz test ran (hypothesis examples, schemathesis calls): var/fuzz.json."""
    counts: Counter[str] = Counter()
    yield counts
    if counts:
        figures = {"cases": dict(sorted(counts.items())), "total": sum(counts.values())}
        path = Path(__file__).parent / "var" / "fuzz.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print("\nfuzz figures: " + json.dumps(figures))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set CLICKSERVER_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    """MD5 instead of production's PBKDF2 (1,000,000 iterations, 0.4 s a hash on the 2-core CI
    machine) for the passwords the tests set and check: UserFactory sets one for every `user`,
    hence every `shop`. What a test proves of a login (right or wrong password, throttling) does
    not depend on the algorithm; production settings are unchanged (the subprocess tests, gunicorn
    and the fault stack, hash with them)."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def _fresh_caches():
    cache.clear()
    write_key_cache_clear()
    rate_limit_forget()
    process_schedule_forget()
    yield
    write_key_cache_clear()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def shop(db, user):
    return ShopFactory(owner=user)


@pytest.fixture
def other_shop(db):
    return ShopFactory()


@pytest.fixture
def api_client(user):
    client = APIClient()
    client.force_authenticate(user=user)
    return client


class IngestClient:
    """Posts to the ingestion endpoints the way a storefront does."""

    def __init__(self, write_key: str) -> None:
        self.client = APIClient()
        self.write_key = write_key

    def post(self, path: str, body, *, headers: dict | None = None, **extra):
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {"X-Write-Key": self.write_key, **(headers or {})}
        return self.client.generic(
            "POST", path, data, content_type="application/json", headers=headers, **extra
        )


@pytest.fixture
def ingest_client(shop) -> IngestClient:
    return IngestClient(shop.write_key)


@pytest.fixture
def mysql_only():
    if connection.vendor != "mysql":
        pytest.skip("needs MariaDB")


@pytest.fixture
def process_all():
    """Run the pipeline over a shop's backlog the way a worker does, batch after batch."""
    # Far in the future so every inserted event counts as settled.
    now = datetime(2100, 1, 1, tzinfo=UTC)

    def run(shop, *, batch_size: int = 1000) -> int:
        processed = 0
        while True:
            result = events_process(shop_id=shop.pk, now=now, batch_size=batch_size)
            processed += result.processed
            if not result.has_more:
                return processed

    return run


@pytest.fixture
def celery_eager():
    """Run Celery tasks inline, so on-commit enqueues are processed within the test."""
    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    yield
    app.conf.update(task_always_eager=saved[0], task_eager_propagates=saved[1])


class ShopifyClient:
    """Posts webhooks the way Shopify does: raw body signed with the shop's secret."""

    def __init__(self, shop) -> None:
        self.client = APIClient()
        self.shop = shop

    def post(
        self,
        topic: str | None,
        body,
        *,
        webhook_id: str,
        path: str = "/webhooks/shopify/",
        secret: str | None = None,
        domain: str | None = None,
    ):
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {
            "X-Shopify-Shop-Domain": domain or self.shop.domain,
            "X-Shopify-Hmac-Sha256": signature_compute(
                secret=self.shop.webhook_secret if secret is None else secret, body=raw
            ),
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-API-Version": "2026-04",
        }
        if topic:
            headers["X-Shopify-Topic"] = topic
        return self.client.generic(
            "POST", path, raw, content_type="application/json", headers=headers
        )


@pytest.fixture
def shopify_client(shop) -> ShopifyClient:
    return ShopifyClient(shop)


CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# As root and with no network: no sandbox, and none of Chromium's background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (its own browser download is not used)."""
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between page actions are still synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


# Nothing listens on port 1: every connection is refused at once, as when Redis is down.
REDIS_DOWN_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def redis_down(settings):
    """Point the cache and the rate limiter at a Redis that refuses connections."""
    settings.REDIS_URL = REDIS_DOWN_URL
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_DOWN_URL,
            "KEY_PREFIX": "redis-down",
            "OPTIONS": settings.CACHES["default"].get("OPTIONS", {}),
        }
    }
    rate_limit_forget()
    yield
    rate_limit_forget()


class Inbox:
    """aiosmtpd handler: keeps every message the server accepts; answers each DATA with the
    queued `refusals` first (e.g. "451 ..." or "554 ..."), as a failing server would, and a
    recipient in `unknown` with its reply at RCPT (e.g. "550 5.1.1 no such user")."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.refusals: list[str] = []
        self.unknown: dict[str, str] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.unknown:
            return self.unknown[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.refusals:
            return self.refusals.pop(0)
        self.messages.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A local port nobody listens on: a connection to it is refused."""
    return free_port()


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server (aiosmtpd) on a free local port, and Django's SMTP backend aimed at it."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield inbox
    controller.stop()


class Receiver:
    """A webhook receiver: answers with the queued status codes (then 200), a short body naming
    the status, and verifies each request's signature with `secret` as a real receiver would."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.secret = ""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {
                        "body": body,
                        "headers": dict(self.headers),
                        "verified": signature_verify(
                            secret=receiver.secret,
                            timestamp=self.headers[TIMESTAMP_HEADER],
                            signature=self.headers[SIGNATURE_HEADER],
                            body=body,
                            now=time.time(),
                        ),
                    }
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                answer = f"status {status}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    """The receiver listens on 127.0.0.1, which webhooks may reach only with the setting that a
    self-hosted install uses for an internal receiver (clickserver/webhook_guard.py)."""
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    server = Receiver()
    yield server
    server.close()


class Resolver:
    """A stand-in for DNS: `answers[name]` is the list of addresses the name's successive
    look-ups return (the last one repeats); a name not listed does not resolve. IP literals
    resolve as they do. `lookups` counts the look-ups of each listed name."""

    def __init__(self, real) -> None:
        self.answers: dict[str, list[str]] = {}
        self.lookups: dict[str, int] = {}
        self.real = real

    def getaddrinfo(self, host, port, *args, **kwargs):
        if host in self.answers:
            self.lookups[host] = self.lookups.get(host, 0) + 1
            queue = self.answers[host]
            address = queue.pop(0) if len(queue) > 1 else queue[0]
            return self.real(address, port, *args, **kwargs)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return self.real(host, port, *args, **kwargs)


@pytest.fixture
def dns(monkeypatch) -> Resolver:
    """Host names resolve only as the test says (no network: webhook_guard resolves names)."""
    resolver = Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", resolver.getaddrinfo)
    return resolver


def live_server_requests_wait(live_server, *, timeout: float = 30.0) -> None:
    """Wait for the requests the live server is still handling before a test's database is
    flushed: a page's last beacon (sent as its browser context closes) runs ingestion and, with
    eager Celery, the pipeline and its follow-ups in the request; a flush under it deadlocks.

    The server thread's ThreadingMixIn keeps its request threads (`_threads`); join them, after
    a moment for a beacon sent by the closing context to be accepted."""
    time.sleep(0.3)
    httpd = getattr(live_server.thread, "httpd", None)
    deadline = time.monotonic() + timeout
    for thread in list(getattr(httpd, "_threads", None) or []):
        thread.join(max(0.0, deadline - time.monotonic()))


@pytest.fixture(autouse=True)
def live_server_quiet_before_flush(request):
    """Every test that uses the live server waits for its in-flight requests before its
    database is flushed (`live_server_requests_wait`). Set up after pytest-django's own
    live-server fixtures (which bring the transactional database), so torn down before them."""
    if "live_server" not in request.fixturenames:
        yield
        return
    live_server = request.getfixturevalue("live_server")
    yield
    live_server_requests_wait(live_server)
