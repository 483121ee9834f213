import base64
import gzip
from decimal import Decimal

import orjson
import pytest

from conftest import IngestClient
from events.models import Event, RejectedEvent

FIXTURE_DIRS = ["segment/analytics-go_fixtures", "rudderstack/analytics-go_fixtures"]
EXPECTED_TYPE = {
    "track": "Download",
    "page": "page_view",
    "screen": "screen_view",
    "identify": "identify",
    "alias": "alias",
    "group": "group",
}


def basic_auth(write_key: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}


@pytest.fixture
def segment_client(shop):
    return IngestClient("")


@pytest.mark.django_db
@pytest.mark.parametrize("sdk", FIXTURE_DIRS)
def test_every_sdk_fixture_is_accepted_and_stored(shared_data, shop, segment_client, sdk):
    for path in sorted((shared_data / "tracking" / sdk).glob("*.json")):
        Event.objects.all().delete()
        body = orjson.loads(path.read_bytes())
        messages = body["batch"]

        response = segment_client.post("/v1/batch", body, headers=basic_auth(shop.write_key))

        assert response.status_code == 200, path.name
        unique_ids = {m["messageId"] for m in messages}
        assert response.json() == {
            "success": True,
            "accepted": len(unique_ids),
            "duplicates": len(messages) - len(unique_ids),
            "rejected": [],
        }, path.name
        event = Event.objects.get(shop=shop)
        first = messages[0]
        assert event.event_id == first["messageId"]
        assert event.type == EXPECTED_TYPE[first["type"]], path.name
        assert event.user_id == first["userId"]
        if first["type"] == "track":
            assert event.properties == first["properties"]
        if first["type"] == "alias":
            assert event.properties == {"previous_id": first["previousId"]}
        if first["type"] in ("page", "screen"):
            assert event.properties["name"] == first["name"]


@pytest.mark.django_db
def test_single_message_endpoints_take_their_type_from_the_path(shop, segment_client):
    message = {
        "userId": "u1",
        "messageId": "m-1",
        "name": "Home",
        "properties": {"url": "https://s.example/"},
    }

    response = segment_client.post("/v1/page", message, headers=basic_auth(shop.write_key))

    assert response.status_code == 200
    event = Event.objects.get(shop=shop)
    assert (event.type, event.url, event.user_id) == ("page_view", "https://s.example/", "u1")


@pytest.mark.django_db
def test_segment_ecommerce_events_map_to_our_types(shop, segment_client):
    base = {"type": "track", "anonymousId": "anon-7", "timestamp": "2026-11-01T10:00:00Z"}
    batch = [
        {
            **base,
            "messageId": "1",
            "event": "Product Viewed",
            "properties": {"product_id": "p1", "price": 19.99, "category": "Mugs"},
        },
        {
            **base,
            "messageId": "2",
            "event": "Product Added",
            "properties": {"product_id": "p1", "quantity": 2},
        },
        {**base, "messageId": "3", "event": "Product Removed", "properties": {"product_id": "p1"}},
        {**base, "messageId": "4", "event": "Checkout Started", "properties": {"order_id": "o1"}},
        {
            **base,
            "messageId": "5",
            "event": "Order Completed",
            "properties": {"order_id": "o1", "revenue": 39.98, "currency": "usd"},
            "context": {
                "campaign": {"source": "newsletter", "medium": "email", "name": "nov"},
                "ip": "198.51.100.23",
            },
        },
    ]

    response = segment_client.post(
        "/v1/batch", {"batch": batch}, headers=basic_auth(shop.write_key)
    )

    assert response.json()["accepted"] == 5
    events = {e.event_id: e for e in Event.objects.filter(shop=shop)}
    assert [events[k].type for k in "12345"] == [
        "product_view",
        "add_to_cart",
        "remove_from_cart",
        "checkout_started",
        "purchase",
    ]
    assert (events["1"].product_id, events["1"].product_price, events["1"].product_category) == (
        "p1",
        Decimal("19.99"),
        "Mugs",
    )
    assert events["2"].product_quantity == 2
    purchase = events["5"]
    assert (purchase.order_id, purchase.revenue, purchase.currency) == (
        "o1",
        Decimal("39.98"),
        "USD",
    )
    assert (purchase.utm_source, purchase.utm_medium, purchase.utm_campaign) == (
        "newsletter",
        "email",
        "nov",
    )
    assert purchase.ip == "198.51.100.0"


@pytest.mark.django_db
def test_rudderstack_webhook_bodies_without_an_id_are_rejected_and_kept(
    shared_data, shop, segment_client
):
    cases = sorted(
        (shared_data / "tracking/rudderstack/rudder-transformer_webhook_testcases_segment").glob(
            "*.json"
        )
    )
    assert cases

    for path in cases:
        body = orjson.loads(orjson.loads(path.read_bytes())["input"]["request"]["body"])
        response = segment_client.post("/v1/track", body, headers=basic_auth(shop.write_key))
        assert response.status_code == 200
        assert response.json()["rejected"][0]["code"] in ("missing_field", "missing_identity")

    assert not Event.objects.exists()
    assert RejectedEvent.objects.filter(shop=shop, format="segment").count() == len(cases)


@pytest.mark.django_db
def test_success_is_200_with_segments_body_and_our_counts(shop, segment_client):
    message = {"type": "track", "event": "Signed Up", "anonymousId": "a-1", "messageId": "m-1"}

    first = segment_client.post("/v1/track", message, headers=basic_auth(shop.write_key))
    again = segment_client.post("/v1/track", message, headers=basic_auth(shop.write_key))

    assert (first.status_code, first.json()) == (
        200,
        {"success": True, "accepted": 1, "duplicates": 0, "rejected": []},
    )
    assert (again.status_code, again.json()) == (
        200,
        {"success": True, "accepted": 0, "duplicates": 1, "rejected": []},
    )


@pytest.mark.django_db
def test_a_server_sdks_user_agent_is_not_taken_for_the_shoppers(
    shop, segment_client, ingest_client
):
    """analytics-ruby's requests name the library, which the crawler list knows as an HTTP
    client: taken for the shopper's, every person it tracks was tagged a bot. A browser SDK's
    `context.userAgent` is kept; our own format still falls back to the request's."""
    server = {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m1"}
    browser = {
        "type": "page",
        "anonymousId": "a1",
        "messageId": "m2",
        "context": {"userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"},
    }
    headers = {**basic_auth(shop.write_key), "User-Agent": "analytics-ruby/2.4.0"}

    segment_client.post("/v1/batch", {"batch": [server, browser]}, headers=headers)
    ingest_client.post(
        "/events/",
        {"type": "page_view", "anonymous_id": "a2", "event_id": "e1"},
        headers={"User-Agent": "curl/8.5.0"},
    )

    agents = dict(Event.objects.values_list("event_id", "user_agent"))
    assert agents == {
        "m1": "",
        "m2": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
        "e1": "curl/8.5.0",
    }


@pytest.mark.django_db
def test_our_own_format_keeps_its_202(ingest_client):
    event = {"event_id": "e-1", "type": "page_view", "anonymous_id": "a-1"}

    response = ingest_client.post("/events/", event)

    assert (response.status_code, response.json()) == (
        202,
        {"accepted": 1, "duplicates": 0, "rejected": []},
    )


@pytest.mark.django_db
def test_errors_carry_the_code_and_message_the_sdks_read(shop, segment_client):
    unknown = segment_client.post("/v1/batch", {"batch": [{"type": "track"}]})
    malformed = segment_client.post("/v1/batch", b'{"batch": [', headers=basic_auth(shop.write_key))

    assert (unknown.status_code, unknown.json()) == (
        401,
        {
            "code": "not_authenticated",
            "detail": "Unknown or missing write key.",
            "message": "Unknown or missing write key.",
            "fields": {},
        },
    )
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "malformed_json"
    assert malformed.json()["message"] == malformed.json()["detail"]
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_a_gzipped_batch_with_the_write_key_in_the_body_is_accepted(shop, segment_client):
    body = {
        "writeKey": shop.write_key,
        "sentAt": "2026-11-01T10:00:05Z",
        "batch": [
            {
                "type": "identify",
                "userId": "u-1",
                "traits": {"plan": "pro"},
                "messageId": "m-1",
                "timestamp": "2026-11-01T10:00:00Z",
            }
        ],
    }

    response = segment_client.post(
        "/v1/batch", gzip.compress(orjson.dumps(body)), headers={"Content-Encoding": "gzip"}
    )

    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    event = Event.objects.get(shop=shop)
    assert (event.type, event.user_id, event.properties) == (
        "identify",
        "u-1",
        {"traits": {"plan": "pro"}},
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "expected_type"),
    [
        ("/v1/t", "Signed Up"),
        ("/v1/i", "identify"),
        ("/v1/p", "page_view"),
        ("/v1/s", "screen_view"),
        ("/v1/g", "group"),
        ("/v1/a", "alias"),
        ("/v1/b", "Signed Up"),
    ],
)
def test_analytics_js_short_paths_take_their_type(shop, segment_client, path, expected_type):
    message = {"type": "track", "event": "Signed Up", "userId": "u-1", "messageId": "m-1"}
    body = {"batch": [message]} if path == "/v1/b" else message

    response = segment_client.post(path, body, headers=basic_auth(shop.write_key))

    assert response.status_code == 200
    assert Event.objects.get(shop=shop).type == expected_type


@pytest.mark.django_db
def test_settings_point_analytics_js_at_this_server(shop, client):
    response = client.get(f"/v1/projects/{shop.write_key}/settings", HTTP_HOST="testserver")
    unknown = client.get("/v1/projects/not-a-key/settings")

    assert response.status_code == 200
    body = response.json()
    assert body["integrations"] == {
        "Segment.io": {
            "apiKey": shop.write_key,
            "apiHost": "testserver/v1",
            "protocol": "http",
            "unbundledIntegrations": [],
            "addBundledMetadata": True,
            "maybeBundledConfigIds": {},
        }
    }
    assert (body["remotePlugins"], body["metrics"]) == ([], {"sampleRate": 0})
    assert unknown.status_code == 404


@pytest.mark.django_db
def test_source_config_names_the_shop_for_rudderstack_js_by_basic_auth(shop, client):
    by_header = client.get(
        f"/sourceConfig/?p=npm&v=3.34.1&writeKey={shop.write_key}",
        headers=basic_auth(shop.write_key),
    )

    assert by_header.status_code == 200
    assert by_header.json() == {
        "isHosted": False,
        "source": {
            "id": f"clickserver-{shop.pk}",
            "name": shop.name or shop.domain,
            "writeKey": shop.write_key,
            "enabled": True,
            "workspaceId": f"clickserver-{shop.pk}",
            "deleted": False,
            "sourceDefinitionName": "Javascript",
            "config": {
                "statsCollection": {"errors": {"enabled": False}, "metrics": {"enabled": False}}
            },
            "destinations": [],
        },
    }
    assert by_header["Vary"] == "Authorization, origin"


@pytest.mark.django_db
def test_source_config_refuses_an_unknown_missing_or_url_only_write_key(shop, client):
    unknown = client.get("/sourceConfig/", headers=basic_auth("not-a-key"))
    missing = client.get("/sourceConfig/")
    # A key in the URL lands in access logs: it is not read, here as on every endpoint.
    in_url_only = client.get(f"/sourceConfig/?writeKey={shop.write_key}")

    for response in (unknown, missing, in_url_only):
        assert response.status_code == 401
        assert response.json() == {
            "code": "not_authenticated",
            "detail": "Unknown or missing write key.",
            "fields": {},
        }


@pytest.mark.django_db
def test_source_config_and_rudderstack_headers_pass_a_cross_origin_preflight(shop, client):
    preflight = client.options(
        "/sourceConfig/",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    event_preflight = client.options(
        "/v1/track",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "anonymousid,authorization,content-type,sentat,"
            "rsa-retry-attempt,rsa-since-last-attempt,rsa-since-first-attempt,rsa-retry-reason",
        },
    )

    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "*"
    assert event_preflight.status_code == 200
    allowed = set(event_preflight["Access-Control-Allow-Headers"].split(", "))
    assert {"anonymousid", "sentat", "rsa-retry-attempt", "rsa-retry-reason"} <= allowed
