import base64
import gzip
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.db import connection
from django.test import RequestFactory, override_settings
from django.utils import timezone

from clickserver.errors import ApplicationError
from events.models import Event, RejectedEvent
from events.payloads import payload_decode


def page_view(event_id: str = "e-1", **extra) -> dict:
    return {
        "event_id": event_id,
        "type": "page_view",
        "anonymous_id": "anon-1",
        "url": "https://shop.example.com/p/1?utm_source=news&utm_medium=email",
        **extra,
    }


@pytest.mark.django_db
def test_single_event_is_stored_with_its_fields(ingest_client, shop):
    body = {
        "event_id": "0b8f6c1e-1111-4d2b-9a57-000000000001",
        "type": "product_view",
        "anonymous_id": "anon-42",
        "timestamp": "2026-11-20T10:00:00Z",
        "url": "https://shop.example.com/products/mug?utm_source=google&utm_campaign=winter",
        "referrer": "https://google.com/",
        "title": "Mug",
        "product": {"id": "sku-1", "name": "Mug", "category": "Kitchen", "price": "12.50"},
        "properties": {"color": "blue"},
        "context": {"user_agent": "Mozilla/5.0 Test"},
    }

    response = ingest_client.post("/events/", body, REMOTE_ADDR="203.0.113.77")

    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    event = Event.objects.get(shop=shop)
    assert event.type == "product_view"
    assert event.anonymous_id == "anon-42"
    assert event.occurred_at == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert event.product_id == "sku-1"
    assert event.product_price == Decimal("12.50")
    assert event.utm_source == "google"
    assert event.utm_campaign == "winter"
    assert event.user_agent == "Mozilla/5.0 Test"
    assert event.ip == "203.0.113.0"
    assert event.properties == {"color": "blue"}


@pytest.mark.django_db
def test_values_that_need_escaping_are_stored_exactly(ingest_client, shop):
    tricky = 'it\'s a \\ "quoted" 100% ; DROP TABLE x; -- \x00 naïve ☕ 🛒'
    batch = [
        page_view("e-1", title=tricky, product={"id": "sku-1", "quantity": 1, "price": 1}),
        page_view("e-2", title=tricky, product={"id": "sku-1", "quantity": 2, "price": "1.5"}),
        page_view("e-3", title="", properties={"note": tricky, "n": 1, "flag": True}),
    ]

    response = ingest_client.post("/events/", {"batch": batch})

    assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    stored = {e.event_id: e for e in Event.objects.filter(shop=shop)}
    assert stored["e-1"].title == stored["e-2"].title == tricky
    assert (stored["e-1"].product_quantity, stored["e-1"].product_price) == (1, Decimal("1.00"))
    assert (stored["e-2"].product_quantity, stored["e-2"].product_price) == (2, Decimal("1.50"))
    assert stored["e-3"].title == ""
    assert stored["e-3"].properties == {"note": tricky, "n": 1, "flag": True}
    assert stored["e-3"].url == page_view("x")["url"]


@pytest.mark.django_db
def test_batch_corrects_client_clock_skew(ingest_client, shop):
    # The client clock runs one hour fast: it stamps the event 10 s before sending.
    client_now = timezone.now() + timedelta(hours=1)
    body = {
        "batch": [page_view(timestamp=(client_now - timedelta(seconds=10)).isoformat())],
        "sent_at": client_now.isoformat(),
    }

    response = ingest_client.post("/events/", body)

    assert response.status_code == 202
    event = Event.objects.get(shop=shop)
    assert event.received_at - event.occurred_at == timedelta(seconds=10)


@pytest.mark.django_db
def test_event_far_in_the_future_takes_received_at(ingest_client, shop):
    future = timezone.now() + timedelta(hours=30)

    ingest_client.post("/events/", page_view(timestamp=future.isoformat()))

    event = Event.objects.get(shop=shop)
    assert event.occurred_at == event.received_at


@pytest.mark.django_db
def test_bad_event_is_rejected_alone_and_kept(ingest_client, shop):
    body = {"batch": [page_view("e-1"), {"type": "page_view"}, page_view("e-3"), "junk"]}

    response = ingest_client.post("/events/", body)

    assert response.status_code == 202
    assert response.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [
            {
                "index": 1,
                "code": "missing_identity",
                "detail": "anonymous_id or user_id is required.",
            },
            {"index": 3, "code": "not_object", "detail": "Each event must be a JSON object."},
        ],
    }
    assert set(Event.objects.values_list("event_id", flat=True)) == {"e-1", "e-3"}
    assert list(RejectedEvent.objects.order_by("id").values_list("code", "payload")) == [
        ("missing_identity", {"type": "page_view"}),
        ("not_object", "junk"),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"anonymous_id": "a"}, "missing_field"),
        ({"type": "x" * 65, "anonymous_id": "a"}, "too_long"),
        ({"type": "page_view", "anonymous_id": "a" * 256}, "too_long"),
        ({"type": "page_view", "anonymous_id": "a", "url": "u" * 2049}, "too_long"),
        ({"type": "page_view", "anonymous_id": "a", "event_id": "e" * 65}, "too_long"),
        ({"type": "page_view", "anonymous_id": "a", "timestamp": "yesterday"}, "invalid_timestamp"),
        ({"type": "page_view", "anonymous_id": "a", "properties": []}, "invalid_type"),
        (
            {"type": "page_view", "anonymous_id": "a", "properties": {"x": "y" * 33000}},
            "properties_too_large",
        ),
        ({"type": "purchase", "user_id": "u", "order": {"revenue": "lots"}}, "invalid_number"),
        ({"type": "page_view", "anonymous_id": "null"}, "missing_identity"),
        ({"type": "page_view", "anonymous_id": "a", "context": {"ip": "999.1.1.1"}}, "invalid_ip"),
    ],
)
def test_each_field_limit_is_enforced(ingest_client, event, code):
    response = ingest_client.post("/events/", event)

    assert response.status_code == 202
    assert response.json()["rejected"][0]["code"] == code
    assert not Event.objects.exists()
    assert RejectedEvent.objects.get().code == code


@pytest.mark.django_db
def test_malformed_json_is_400_and_stores_nothing(ingest_client):
    response = ingest_client.post("/events/", b'{"type": "page_view",')

    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"
    assert not Event.objects.exists()
    assert not RejectedEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "wk_unknown"])
def test_unknown_or_missing_write_key_is_401(shop, key):
    from conftest import IngestClient

    response = IngestClient(key).post("/events/", page_view())

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_write_key_by_basic_auth_and_in_body(shop):
    from conftest import IngestClient

    client = IngestClient("")
    basic = "Basic " + base64.b64encode(f"{shop.write_key}:".encode()).decode()

    by_basic = client.post("/events/", page_view("e-1"), headers={"Authorization": basic})
    in_body = client.post("/events/", {**page_view("e-2"), "write_key": shop.write_key})

    assert (by_basic.status_code, in_body.status_code) == (202, 202)
    assert Event.objects.filter(shop=shop).count() == 2


@pytest.mark.django_db
def test_500_events_are_accepted_and_501_are_413(ingest_client, shop):
    full = {"batch": [page_view(f"e-{i}") for i in range(500)]}
    over = {"batch": [page_view(f"f-{i}") for i in range(501)]}

    ok = ingest_client.post("/events/", full)
    too_many = ingest_client.post("/events/", over)

    assert ok.status_code == 202
    assert ok.json()["accepted"] == 500
    assert too_many.status_code == 413
    assert too_many.json()["code"] == "too_many_events"
    assert Event.objects.filter(shop=shop).count() == 500


@pytest.mark.django_db
def test_body_over_512_kb_is_413(ingest_client):
    body = {"batch": [page_view(f"e-{i}", title="t" * 500) for i in range(500)] * 3}
    raw = orjson.dumps(body)
    assert len(raw) > 512 * 1024

    response = ingest_client.post("/events/", raw)

    assert response.status_code == 413
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_gzip_body_is_accepted(ingest_client, shop):
    raw = gzip.compress(orjson.dumps({"batch": [page_view("e-1"), page_view("e-2")]}))

    response = ingest_client.post("/events/", raw, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 202
    assert response.json()["accepted"] == 2


@pytest.mark.django_db
@override_settings(INGEST_MAX_DECOMPRESSED_BYTES=64 * 1024)
def test_gzip_bomb_is_413(ingest_client):
    bomb = gzip.compress(b'{"type": "page_view", "pad": "' + b"a" * 10_000_000 + b'"}')
    assert len(bomb) < 512 * 1024

    response = ingest_client.post("/events/", bomb, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert not RejectedEvent.objects.exists()


@pytest.mark.django_db
def test_corrupt_gzip_is_400(ingest_client):
    response = ingest_client.post(
        "/events/", b"\x1f\x8bnot really gzip", headers={"Content-Encoding": "gzip"}
    )

    assert response.status_code == 400
    assert response.json()["code"] == "malformed_gzip"


@pytest.mark.django_db
@override_settings(INGEST_RATE_LIMIT_REQUESTS=2, INGEST_RATE_LIMIT_WINDOW_SECONDS=60)
def test_rate_limit_is_429_with_retry_after(ingest_client, shop):
    responses = [ingest_client.post("/events/", page_view(f"e-{i}")) for i in range(3)]

    assert [r.status_code for r in responses] == [202, 202, 429]
    assert 1 <= int(responses[2]["Retry-After"]) <= 60
    assert responses[2].json()["code"] == "rate_limited"
    assert Event.objects.filter(shop=shop).count() == 2


@pytest.mark.django_db
def test_same_event_id_is_stored_once(ingest_client, shop):
    first = ingest_client.post("/events/", {"batch": [page_view("dup"), page_view("dup")]})
    again = ingest_client.post("/events/", page_view("dup"))

    assert first.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert Event.objects.filter(shop=shop).count() == 1


@pytest.mark.django_db
def test_same_event_id_in_two_shops_is_two_events(ingest_client, shop, other_shop):
    from conftest import IngestClient

    ingest_client.post("/events/", page_view("shared-id"))
    IngestClient(other_shop.write_key).post("/events/", page_view("shared-id"))

    assert Event.objects.filter(event_id="shared-id").count() == 2


@pytest.mark.django_db
def test_purchase_and_add_cart_shortcuts_force_the_type(ingest_client, shop):
    purchase = {
        "event_id": "p-1",
        "user_id": "cust-9",
        "order": {"id": "1001", "revenue": 59.9, "currency": "eur"},
    }
    cart = {"event_id": "c-1", "anonymous_id": "a", "product": {"id": "sku-1", "quantity": 2}}

    ingest_client.post("/events/purchase/", purchase)
    ingest_client.post("/events/add_cart/", cart)

    stored = {e.event_id: e for e in Event.objects.filter(shop=shop)}
    assert stored["p-1"].type == "purchase"
    assert (stored["p-1"].order_id, stored["p-1"].revenue) == ("1001", Decimal("59.90"))
    assert stored["p-1"].currency == "EUR"
    assert stored["c-1"].type == "add_to_cart"
    assert stored["c-1"].product_quantity == 2


@pytest.mark.django_db
def test_ip_is_kept_when_the_shop_turns_anonymisation_off(ingest_client, shop):
    shop.is_ip_anonymized = False
    shop.save()

    ingest_client.post("/events/", page_view(), REMOTE_ADDR="2001:db8:1234:5678::9")

    assert Event.objects.get().ip == "2001:db8:1234:5678::9"


@pytest.mark.django_db
def test_ipv6_is_anonymised_to_48_bits(ingest_client):
    ingest_client.post("/events/", page_view(), REMOTE_ADDR="2001:db8:1234:5678::9")

    assert Event.objects.get().ip == "2001:db8:1234::"


@pytest.mark.django_db
def test_cors_preflight_allows_storefront_origins(client):
    response = client.options(
        "/events/",
        headers={
            "Origin": "https://any-storefront.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-write-key",
        },
    )

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "x-write-key" in response["Access-Control-Allow-Headers"]


@pytest.mark.django_db(transaction=True)
def test_database_down_is_503_and_nothing_is_acknowledged(ingest_client, shop):
    ingest_client.post("/events/", page_view("warm-up"))  # caches the write key
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(
        {"HOST": "127.0.0.1", "PORT": "1", "NAME": str(saved["NAME"]) + "-unreachable"}
    )
    try:
        response = ingest_client.post("/events/", page_view("lost"))
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert not Event.objects.filter(event_id="lost").exists()


class ChunkedInput(io.BytesIO):
    """A server's decoded chunked body: `read(n)` hands out at most 1,000 bytes at a time."""

    def read(self, size: int = -1) -> bytes:
        return super().read(1000 if size < 0 else min(size, 1000))


def chunked_request(body: bytes):
    request = RequestFactory().post("/events/", b"", content_type="application/json")
    request.META.pop("CONTENT_LENGTH", None)
    request.META["wsgi.input"] = ChunkedInput(body)
    request.META["wsgi.input_terminated"] = True
    return request


@override_settings(INGEST_MAX_BODY_BYTES=5000)
def test_a_chunked_body_without_a_length_is_read_to_its_end():
    events = [page_view(f"c-{i}") for i in range(30)]
    body = orjson.dumps({"batch": events})
    assert 1000 < len(body) <= 5000

    assert payload_decode(chunked_request(body)) == {"batch": events}


@override_settings(INGEST_MAX_BODY_BYTES=5000)
def test_a_chunked_body_over_the_limit_is_413_after_reading_one_byte_past_it():
    stream = ChunkedInput(b"x" * 50_000)
    request = chunked_request(b"")
    request.META["wsgi.input"] = stream

    with pytest.raises(ApplicationError) as raised:
        payload_decode(request)

    assert (raised.value.status, raised.value.code) == (413, "payload_too_large")
    assert stream.tell() == 5001
