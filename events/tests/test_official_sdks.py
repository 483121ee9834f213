"""The official Segment and RudderStack SDKs, unmodified, against a real clickserver on MariaDB.

Each SDK runs with its default settings (gzip, batching, retries) and only its host changed. The
server is Django's threaded WSGI server (what runserver runs) around clickserver.wsgi.application,
wrapped in a recorder that keeps what the server saw of every request: a retried batch shows as a
message id seen twice, or as an X-Retry-Count header (Rsa-Retry-Attempt from RudderStack's JS SDK).
"""

import gzip
import io
import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import rudderstack.analytics
import segment.analytics
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

from clickserver.wsgi import application
from events.models import Event
from events.segment import ECOMMERCE_TYPES, MESSAGE_TYPES
from events.tests import sdk_urls

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

NODE_SCRIPT = Path(__file__).parent / "sdk" / "node_sdks.js"
# Between a message's own timestamp and the skew-corrected occurred_at there is only the transit
# time of its request: SDKs send sentAt, and occurred_at = received_at - (sentAt - timestamp).
CLOCK_TOLERANCE = timedelta(seconds=3)


@dataclass
class SeenRequest:
    method: str
    path: str
    retry_count: str | None
    messages: list[dict]
    status: int = 0


@dataclass
class Recorder:
    """Wraps the WSGI application and notes every request it serves."""

    requests: list[SeenRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        seen = SeenRequest(
            method=environ["REQUEST_METHOD"],
            path=environ["PATH_INFO"],
            retry_count=environ.get("HTTP_X_RETRY_COUNT", environ.get("HTTP_RSA_RETRY_ATTEMPT")),
            messages=messages_in(body),
        )
        with self.lock:
            self.requests.append(seen)

        def recording_start_response(status, headers, exc_info=None):
            seen.status = int(status.split()[0])
            return start_response(status, headers, exc_info)

        return application(environ, recording_start_response)

    def posts(self) -> list[SeenRequest]:
        return [r for r in self.requests if r.method == "POST"]

    def messages(self) -> list[dict]:
        return [m for r in self.posts() for m in r.messages]


def messages_in(body: bytes) -> list[dict]:
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    if not body:
        return []
    payload = json.loads(body)
    return payload.get("batch", [payload])


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def server():
    recorder = Recorder()
    httpd = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler)
    httpd.set_app(recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield recorder
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def expected_type(message: dict) -> str:
    if message["type"] == "track":
        return ECOMMERCE_TYPES.get(message["event"], message["event"])
    return MESSAGE_TYPES[message["type"]]


def expected_properties(message: dict) -> dict:
    kind = message["type"]
    if kind == "identify":
        return {"traits": message.get("traits", message.get("context", {}).get("traits"))}
    if kind == "alias":
        return {"previous_id": message["previousId"]}
    properties = dict(message.get("properties") or {})
    if kind == "page" and message.get("name"):
        properties.setdefault("name", message["name"])
    return properties


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_sent_once_and_stored_as_sent(server, shop, *, sent: int) -> None:
    """Every message the SDK sent reached the server once, with 200, and is stored as sent."""
    posts = server.posts()
    messages = server.messages()
    ids = [m["messageId"] for m in messages]

    assert len(messages) == sent
    assert len(set(ids)) == len(ids), "a message was sent twice: the SDK retried"
    assert [(r.status, r.retry_count) for r in posts] == [(200, None)] * len(posts)
    stored = {e.event_id: e for e in Event.objects.filter(shop=shop)}
    assert sorted(stored) == sorted(ids)
    for message in messages:
        event = stored[message["messageId"]]
        assert (event.type, event.anonymous_id, event.user_id) == (
            expected_type(message),
            message.get("anonymousId") or "",
            message.get("userId") or "",
        ), message
        assert event.properties == expected_properties(message), message
        timestamp = parse_time(message.get("timestamp") or message["originalTimestamp"])
        assert abs(event.occurred_at - timestamp) < CLOCK_TOLERANCE, message


def python_calls(client) -> None:
    client.track(
        anonymous_id="anon-py",
        event="Product Viewed",
        properties={"product_id": "p-1", "price": 12.5},
    )
    client.identify(user_id="user-py", anonymous_id="anon-py", traits={"plan": "pro"})
    client.page(anonymous_id="anon-py", name="Home", properties={"url": "https://shop.example/"})
    client.alias(previous_id="anon-py", user_id="user-py")
    for index in range(25):
        client.track(user_id="user-py", event="Batch Item", properties={"index": index})


@pytest.mark.parametrize(
    "sdk_client",
    [segment.analytics.Client, rudderstack.analytics.Client],
    ids=["segment", "rudder"],
)
def test_python_sdk_delivers_every_message_once(server, shop, sdk_client):
    errors = []
    client = sdk_client(shop.write_key, host=server.url, on_error=lambda e, b: errors.append(e))

    python_calls(client)
    client.flush()
    client.shutdown()

    assert errors == []
    assert_sent_once_and_stored_as_sent(server, shop, sent=29)
    assert len(server.posts()) < 29, "the SDK batches"


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_node_sdk_delivers_every_message_once(server, shop, sdk):
    node = shutil.which("node")
    if node is None or not (NODE_SCRIPT.parents[3] / "node_modules" / "@segment").is_dir():
        pytest.skip("needs node and the SDKs from package.json (make install-dev)")

    run = subprocess.run(
        [node, str(NODE_SCRIPT), sdk, server.url, shop.write_key],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == {"errors": []}
    assert_sent_once_and_stored_as_sent(server, shop, sent=29)
    assert len(server.posts()) < 29, "the SDK batches"


BROWSER_CALLS = """async () => {
    const contexts = [
        await analytics.track('Product Viewed', {product_id: 'p-1', price: 12.5}),
        await analytics.identify('user-web', {plan: 'pro'}),
        await analytics.page('Catalog', {category: 'mugs'}),
        await analytics.alias('user-web-account'),
    ];
    for (let index = 0; index < 5; index++) {
        contexts.push(await analytics.track('Batch Item', {index}));
    }
    return contexts.map((ctx) => ctx.failedDelivery() ? String(ctx.failedDelivery().reason) : null);
}"""


@pytest.mark.browser
@pytest.mark.urls("events.tests.sdk_urls")
def test_analytics_js_takes_its_settings_from_here_and_delivers_every_message_once(
    browser, server, shop
):
    if not sdk_urls.BUNDLE_DIR.is_dir():
        pytest.skip("needs @segment/analytics-next from package.json (make install-dev)")
    context = browser.new_context()
    page = context.new_page()

    page.goto(f"{server.url}/shop/{shop.write_key}/")
    page.wait_for_function("() => window.analytics && window.analytics.initialized === true")
    failures = page.evaluate(BROWSER_CALLS)
    # The snippet's own analytics.page() was queued before the bundle loaded.
    deadline = time.monotonic() + 10
    while Event.objects.filter(shop=shop).count() < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    context.close()

    assert failures == [None] * 9
    assert_sent_once_and_stored_as_sent(server, shop, sent=10)
    assert sorted({(r.method, r.path, r.status) for r in server.requests if r.method == "GET"}) == [
        ("GET", f"/analytics.js/v1/{shop.write_key}/analytics.min.js", 200),
        ("GET", f"/shop/{shop.write_key}/", 200),
        ("GET", f"/v1/projects/{shop.write_key}/settings", 200),
    ]
    assert {r.path for r in server.posts()} == {"/v1/t", "/v1/i", "/v1/p", "/v1/a"}


RUDDER_CALLS = """async () => {
    // ready() fires once the SDK has its source config; without one it never does.
    await Promise.race([
        new Promise((resolve) => rudderanalytics.ready(resolve)),
        new Promise((resolve, reject) => setTimeout(() => reject(new Error('not ready')), 10000)),
    ]);
    rudderanalytics.track('Product Viewed', {product_id: 'p-1', price: 12.5});
    rudderanalytics.identify('user-web', {plan: 'pro'});
    rudderanalytics.page('Catalog', {category: 'mugs'});
    rudderanalytics.alias('user-web-account');
    for (let index = 0; index < 5; index++) {
        rudderanalytics.track('Batch Item', {index});
    }
}"""


@pytest.mark.browser
@pytest.mark.urls("events.tests.sdk_urls")
def test_rudderstack_js_takes_its_source_config_from_here_and_delivers_every_message_once(
    browser, server, shop
):
    if not sdk_urls.RUDDER_BUNDLE.is_file():
        pytest.skip("needs @rudderstack/analytics-js from package.json (make install-dev)")
    # The shop's page and the SDK's files come from another origin than clickserver (localhost
    # against 127.0.0.1), so the source config and every event pass a real CORS preflight.
    # Requests are recorded, not routed: Playwright answers preflights itself once it routes.
    shop_origin = "http://localhost:" + server.url.rsplit(":", 1)[1]
    context = browser.new_context()
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    query = urlencode({"sdk": shop_origin, "clickserver": server.url})
    page.goto(f"{shop_origin}/rudder-shop/{shop.write_key}/?{query}")
    page.wait_for_function("() => !Array.isArray(window.rudderanalytics)")
    page.evaluate(RUDDER_CALLS)
    # The page's own rudderanalytics.page() was buffered before the SDK loaded.
    deadline = time.monotonic() + 10
    while Event.objects.filter(shop=shop).count() < 10 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    page.wait_for_timeout(1500)  # past the SDK's first retry delay (1 s), had it retried
    context.close()

    hosts = {urlsplit(url).hostname for url in requested}
    assert hosts == {"localhost", "127.0.0.1"}, requested
    assert_sent_once_and_stored_as_sent(server, shop, sent=10)
    assert sorted({(r.method, r.path, r.status) for r in server.requests if r.method == "GET"}) == [
        ("GET", f"/rudder-shop/{shop.write_key}/", 200),
        ("GET", "/sourceConfig/", 200),
        ("GET", "/v3/modern/rsa.bundled.mjs", 200),
        ("GET", "/v3/modern/rsa.min.js", 200),
    ]
    posted = {"/v1/page", "/v1/track", "/v1/identify", "/v1/alias"}
    assert {r.path for r in server.posts()} == posted
    preflights = {(r.path, r.status) for r in server.requests if r.method == "OPTIONS"}
    assert preflights == {(path, 200) for path in ["/sourceConfig/", *posted]}
