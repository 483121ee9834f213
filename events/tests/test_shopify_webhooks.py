import hashlib
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from events import shopify
from events.models import (
    Checkout,
    ErasureRequest,
    Event,
    Order,
    OrderLine,
    Person,
    PersonIdentifier,
    PrivacyRequest,
    Product,
    Refund,
    Session,
    Shop,
    WebhookDelivery,
)
from events.services.ingest import events_ingest
from events.services.shopify import shopify_webhook_process, shopify_webhooks_sweep

NOW = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)
ORDER_ID = "820982911946154500"
CUSTOMER_ID = "115310627314723950"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def payloads(shared_data):
    folder = shared_data / "shopify" / "webhook_payloads_docs_2026-04"
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing")
    return folder


@pytest.fixture
def deliver(shopify_client, celery_eager, django_capture_on_commit_callbacks):
    """Post a signed webhook and run what it enqueued (the Celery task, eagerly)."""
    counter = iter(range(1, 10_000))

    def post(topic, body, *, webhook_id=None, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return shopify_client.post(
                topic, body, webhook_id=webhook_id or f"wh-{next(counter)}", **kwargs
            )

    return post


def load(payloads, name: str) -> bytes:
    return (payloads / f"{name}.json").read_bytes()


# --- signatures --------------------------------------------------------------------------------


def hmac_vectors(shared):
    path = shared / "shopify" / "hmac_test_vectors.json"
    return orjson.loads(path.read_bytes())["webhook_header_vectors"]


def test_signature_matches_shopify_test_vectors(shared_data):
    vectors = hmac_vectors(shared_data)

    computed = [
        shopify.signature_compute(secret=v["secret"], body=v["raw_body"].encode()) for v in vectors
    ]

    assert computed == [v["expected"] for v in vectors]
    assert len(vectors) == 3
    for v in vectors:
        body = v["raw_body"].encode()
        assert shopify.signature_is_valid(secret=v["secret"], body=body, signature=v["expected"])
        assert not shopify.signature_is_valid(secret="wrong", body=body, signature=v["expected"])
        assert not shopify.signature_is_valid(
            secret=v["secret"], body=body + b" ", signature=v["expected"]
        )


@pytest.mark.django_db
def test_forged_signature_is_401_and_stores_nothing(deliver, payloads):
    response = deliver("orders/create", load(payloads, "orders_create"), secret="not-the-secret")

    assert response.status_code == 401
    assert WebhookDelivery.objects.count() == 0
    assert Order.objects.count() == 0
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_missing_signature_is_401(shopify_client, shop):
    response = shopify_client.client.generic(
        "POST",
        "/webhooks/shopify/",
        b"{}",
        content_type="application/json",
        headers={
            "X-Shopify-Shop-Domain": shop.domain,
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": "w-1",
        },
    )

    assert response.status_code == 401
    assert WebhookDelivery.objects.count() == 0


@pytest.mark.django_db
def test_unknown_shop_domain_is_401(deliver, payloads):
    response = deliver(
        "orders/create", load(payloads, "orders_create"), domain="nobody.myshopify.com"
    )

    assert response.status_code == 401
    assert WebhookDelivery.objects.count() == 0


@pytest.mark.django_db
def test_signature_is_checked_against_the_named_shops_secret(deliver, payloads, other_shop):
    other_shop.webhook_secret = "other-secret"
    other_shop.save()

    response = deliver("orders/create", load(payloads, "orders_create"), domain=other_shop.domain)

    assert response.status_code == 401
    assert WebhookDelivery.objects.count() == 0


@pytest.mark.django_db
def test_repeated_delivery_is_processed_once(deliver, payloads, shop):
    body = load(payloads, "orders_create")

    first = deliver("orders/create", body, webhook_id="same-id")
    second = deliver("orders/create", body, webhook_id="same-id")

    assert (first.status_code, first.json()) == (200, {"status": "accepted"})
    assert (second.status_code, second.json()) == (200, {"status": "duplicate"})
    assert WebhookDelivery.objects.filter(shop=shop).count() == 1
    assert Order.objects.count() == 1
    assert OrderLine.objects.count() == 5
    assert Event.objects.filter(type="purchase").count() == 1


@pytest.mark.django_db
def test_malformed_json_is_400_and_stores_nothing(deliver):
    response = deliver("orders/create", b"{not json")

    assert response.status_code == 400
    assert WebhookDelivery.objects.count() == 0


@pytest.mark.django_db
def test_delivery_is_stored_and_left_for_the_worker(shopify_client, payloads, shop):
    # Without running on-commit callbacks nothing is processed inline: the API only stores.
    response = shopify_client.post(
        "orders/create", load(payloads, "orders_create"), webhook_id="w-1"
    )

    delivery = WebhookDelivery.objects.get()
    assert response.status_code == 200
    assert (delivery.topic, delivery.webhook_id, delivery.processed_at) == (
        "orders/create",
        "w-1",
        None,
    )
    assert delivery.customer_id == CUSTOMER_ID
    assert Order.objects.count() == 0

    shopify_webhook_process(delivery_id=delivery.pk, now=NOW)
    shopify_webhook_process(delivery_id=delivery.pk, now=NOW)

    delivery.refresh_from_db()
    assert delivery.processed_at == NOW
    assert Order.objects.count() == 1


@pytest.mark.django_db
def test_sweep_processes_deliveries_whose_task_was_lost(shopify_client, payloads, shop):
    shopify_client.post("orders/create", load(payloads, "orders_create"), webhook_id="lost")
    WebhookDelivery.objects.update(received_at=datetime(2026, 4, 2, 11, 58, tzinfo=UTC))

    swept = shopify_webhooks_sweep(now=NOW)
    swept_again = shopify_webhooks_sweep(now=NOW)

    assert (swept, swept_again) == (1, 0)
    assert Order.objects.get().order_id == ORDER_ID


# --- every documented payload ------------------------------------------------------------------


def test_every_documented_payload_has_a_handled_topic(payloads):
    topics = {p.stem.replace("_", "/", 1) for p in payloads.glob("*.json")}

    assert len(topics) == 13
    assert topics <= shopify.TOPICS


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name", ["orders_create", "orders_paid", "orders_updated", "orders_fulfilled"]
)
def test_order_payload_stores_order_lines_and_one_purchase(deliver, payloads, shop, name):
    response = deliver(name.replace("_", "/"), load(payloads, name))

    assert response.status_code == 200
    order = Order.objects.get(shop=shop)
    assert order.order_id == ORDER_ID
    assert order.source == Order.Source.SHOPIFY
    assert order.total == Decimal("404.95")
    assert order.currency == "USD"
    assert order.placed_at == datetime(2022, 1, 1, 0, 0, tzinfo=UTC)
    # The documented example carries cancelled_at, and we store what it says.
    assert order.is_cancelled is True
    assert order.properties == {
        "shopify_customer_id": CUSTOMER_ID,
        "email_hash": sha("jon@example.com"),
        "cart_token": "",
        "checkout_token": "",
    }
    lines = list(
        order.lines.order_by("id").values_list("product_id", "sku", "quantity", "unit_price")
    )
    assert lines == [
        ("788032119674292900", "SKU2006-001", 1, Decimal("89.99")),
        ("", "LENS-PROTECT-2YR", 1, Decimal("19.99")),
        ("", "CASE-LEATHER-PREM", 1, Decimal("24.99")),
        ("788032119674292900", "SKU2006-020", 1, Decimal("159.99")),
        ("788032119674292900", "SKU2006-035", 1, Decimal("119.99")),
    ]
    event = Event.objects.get(shop=shop)
    assert (event.event_id, event.type, event.order_id, event.revenue, event.currency) == (
        f"shopify-order-{ORDER_ID}",
        "purchase",
        ORDER_ID,
        Decimal("404.95"),
        "USD",
    )
    assert event.anonymous_id == f"shopify-customer-{CUSTOMER_ID}"
    assert event.user_id == ""
    assert event.occurred_at == datetime(2022, 1, 1, 0, 0, tzinfo=UTC)
    assert event.properties == {
        "source": "shopify",
        "shopify_customer_id": CUSTOMER_ID,
        "email_hash": sha("jon@example.com"),
    }
    assert WebhookDelivery.objects.get().processed_at is not None


@pytest.mark.django_db
def test_order_topics_together_make_one_order_and_one_purchase(deliver, payloads, shop):
    for name in ["orders_create", "orders_paid", "orders_updated", "orders_fulfilled"]:
        deliver(name.replace("_", "/"), load(payloads, name))

    assert Order.objects.count() == 1
    assert OrderLine.objects.count() == 5
    assert Event.objects.filter(type="purchase").count() == 1


@pytest.mark.django_db
def test_orders_cancelled_marks_the_order_without_a_purchase(deliver, payloads, shop):
    deliver("orders/cancelled", load(payloads, "orders_cancelled"))

    order = Order.objects.get(shop=shop)
    assert order.is_cancelled is True
    assert order.cancelled_at == datetime(2022, 1, 1, 0, 0, tzinfo=UTC)
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_refund_sets_the_orders_refunded_amount(deliver, payloads, shop):
    deliver("orders/create", load(payloads, "orders_create"))

    deliver("refunds/create", load(payloads, "refunds_create"))

    refund = Refund.objects.get(shop=shop)
    assert refund.refund_id == "890088186047892400"
    assert refund.amount == Decimal("85.00")  # the two successful refund transactions
    assert refund.order.order_id == ORDER_ID
    assert Order.objects.get().refunded_amount == Decimal("85.00")


@pytest.mark.django_db
def test_refund_line_items_become_refund_lines_once(deliver, payloads, shop):
    deliver("refunds/create", load(payloads, "refunds_create"))
    deliver("refunds/create", load(payloads, "refunds_create"))  # redelivered (a new webhook id)

    refund = Refund.objects.get(shop=shop)
    lines = list(
        refund.lines.order_by("id").values_list("product_id", "sku", "name", "quantity", "amount")
    )
    assert lines == [
        ("788032119674292900", "SKU2006-001", "Aviator sunglasses", 1, Decimal("89.99")),
        ("", "LENS-PROTECT-2YR", "Lens Protection Plan (2 Year)", 1, Decimal("19.99")),
        ("", "CASE-LEATHER-PREM", "Premium Leather Case", 1, Decimal("24.99")),
        ("788032119674292900", "SKU2006-020", "Mid-century lounger", 1, Decimal("159.99")),
        ("788032119674292900", "SKU2006-035", "Coffee table", 1, Decimal("119.99")),
    ]
    # The lines say what was taken back; the amount stays the money paid back.
    assert refund.amount == Decimal("85.00")


def test_refund_line_amount_prefers_the_shop_money_and_refuses_a_bad_quantity():
    payload = {
        "id": 1,
        "order_id": 2,
        "created_at": "2024-01-01T00:00:00Z",
        "refund_line_items": [
            {
                "quantity": "3",
                "subtotal": 30,
                "subtotal_set": {"shop_money": {"amount": "27.50"}},
                "line_item": {"product_id": 9, "title": "Mug"},
            },
            {"quantity": 1, "subtotal": "4.00", "line_item": {"product_id": 8, "sku": "T"}},
            "not a line",
        ],
    }

    refund = shopify.refund_parse(payload)

    assert refund.lines == [
        shopify.RefundLineIn("9", "", "Mug", 3, Decimal("27.50")),
        shopify.RefundLineIn("8", "T", "", 1, Decimal("4.00")),
    ]
    for quantity in ("two", 1.5, True, [1]):
        payload["refund_line_items"] = [{"quantity": quantity, "line_item": {}}]
        with pytest.raises(shopify.PayloadInvalid, match="is not a quantity"):
            shopify.refund_parse(payload)


@pytest.mark.django_db
def test_a_refund_with_a_bad_line_is_recorded_as_an_error_and_stores_nothing(
    deliver, payloads, shop
):
    body = orjson.loads(load(payloads, "refunds_create"))
    body["refund_line_items"][1]["quantity"] = "many"

    deliver("refunds/create", orjson.dumps(body))

    assert Refund.objects.filter(shop=shop).count() == 0
    assert "is not a quantity" in WebhookDelivery.objects.get(topic="refunds/create").error


@pytest.mark.django_db
def test_refund_before_its_order_is_linked_when_the_order_arrives(deliver, payloads, shop):
    deliver("refunds/create", load(payloads, "refunds_create"))
    assert Refund.objects.get().order is None

    deliver("orders/create", load(payloads, "orders_create"))

    assert Refund.objects.get().order.order_id == ORDER_ID
    assert Order.objects.get().refunded_amount == Decimal("85.00")


@pytest.mark.django_db
@pytest.mark.parametrize("topic", ["checkouts/create", "checkouts/update"])
def test_checkout_payload_stores_a_checkout(deliver, payloads, shop, topic):
    deliver(topic, load(payloads, topic.replace("/", "_")))

    checkout = Checkout.objects.get(shop=shop)
    assert (checkout.kind, checkout.token, checkout.cart_token) == (
        "checkout",
        "123123123",
        "eeafa272cebfd4b22385bc4b645e762c",
    )
    assert checkout.total == Decimal("421.88")
    assert checkout.currency == "USD"
    assert checkout.email_hash == sha("example@email.com")
    assert checkout.completed_at is None
    assert checkout.created_at == datetime(2022, 1, 1, 0, 0, tzinfo=UTC)
    assert checkout.line_items[0]["product_id"] == "632910392"
    assert "email" not in str(checkout.line_items)


@pytest.mark.django_db
@pytest.mark.parametrize("topic", ["carts/create", "carts/update"])
def test_cart_payload_stores_a_cart(deliver, payloads, shop, topic):
    deliver(topic, load(payloads, topic.replace("/", "_")))

    cart = Checkout.objects.get(shop=shop)
    assert (cart.kind, cart.token, cart.cart_token) == ("cart", "exampleCartId", "exampleCartId")
    assert cart.total == Decimal("59.97")
    assert cart.line_items == [
        {
            "product_id": "788032119674292900",
            "variant_id": "704912205188288500",
            "sku": "example-shirt-s",
            "title": "Example T-Shirt - Small",
            "quantity": 3,
            "price": "19.99",
        }
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("topic", ["customers/create", "customers/update"])
def test_customer_payload_emits_an_identify_event_without_raw_pii(deliver, payloads, shop, topic):
    deliver(topic, load(payloads, topic.replace("/", "_")))

    event = Event.objects.get(shop=shop)
    assert event.type == "identify"
    assert event.event_id == "shopify-customer-706405506930370000-1640995200"
    assert event.anonymous_id == "shopify-customer-706405506930370000"
    assert event.properties == {
        "source": "shopify",
        "shopify_customer_id": "706405506930370000",
        "email_hash": sha("bob@biller.com"),
        "traits": {
            "state": "disabled",
            "verified_email": True,
            "currency": "USD",
            "country_code": "CA",
            "created_at": "2021-12-31T19:00:00-05:00",
        },
    }
    stored = orjson.dumps(event.properties).decode()
    for pii in ("Bob", "Biller", "bob@biller.com", "555-555-5555", "O'Connor"):
        assert pii not in stored


@pytest.mark.django_db
def test_app_uninstalled_deactivates_the_shop(deliver, payloads, shop):
    deliver("app/uninstalled", load(payloads, "app_uninstalled"))

    shop.refresh_from_db()
    assert shop.is_active is False
    assert shop.uninstalled_at is not None


@pytest.mark.django_db
def test_products_are_upserted_into_the_catalogue(deliver, shop):
    product = {
        "id": 9007199254740993,
        "title": "Aviator sunglasses",
        "handle": "aviator",
        "product_type": "Eyewear",
        "vendor": "Acme",
        "status": "active",
        "updated_at": "2026-04-01T10:00:00-04:00",
        "variants": [{"id": 1, "price": "119.99"}, {"id": 2, "price": "89.99"}],
        "image": {"src": "https://cdn.example.com/aviator.jpg"},
    }

    deliver("products/create", product)
    deliver("products/update", {**product, "title": "Aviators", "status": "archived"})

    row = Product.objects.get(shop=shop)
    assert row.product_id == "9007199254740993"
    assert (row.title, row.category, row.vendor, row.price) == (
        "Aviators",
        "Eyewear",
        "Acme",
        Decimal("89.99"),
    )
    assert row.url == f"https://{shop.domain}/products/aviator"
    assert row.is_available is False


@pytest.mark.django_db
def test_seed_purchase_endpoint_takes_orders_without_a_topic(deliver, payloads, shop):
    response = deliver(
        None, load(payloads, "orders_create"), path="/events/shopify_webhook_purchase/"
    )

    assert response.status_code == 200
    assert WebhookDelivery.objects.get().topic == "orders/create"
    assert Order.objects.get().order_id == ORDER_ID


# --- 64-bit ids, joining to the browser ----------------------------------------------------------

BIG_ORDER = (
    b'{"id": 9223372036854775807, "created_at": "2026-04-01T10:00:00Z", "currency": "EUR",'
    b' "total_price": "10.00", "email": " Ann@Example.COM ",'
    b' "customer": {"id": 9007199254740993, "email": "ann@example.com"},'
    b' "line_items": [{"product_id": 9007199254740995, "sku": "X", "quantity": 2,'
    b' "price": "5.00", "name": "X"}]}'
)


@pytest.mark.django_db
def test_big_int_ids_keep_every_digit(deliver, shop):
    deliver("orders/create", BIG_ORDER)

    order = Order.objects.get(shop=shop)
    assert order.order_id == "9223372036854775807"
    assert order.properties["shopify_customer_id"] == "9007199254740993"
    assert order.properties["email_hash"] == sha("ann@example.com")
    assert order.lines.get().product_id == "9007199254740995"
    assert WebhookDelivery.objects.get().payload["id"] == 9223372036854775807
    assert Event.objects.get().order_id == "9223372036854775807"


@pytest.mark.django_db
def test_order_cart_attribute_gives_the_purchase_the_browsers_anonymous_id(deliver, shop):
    order = orjson.loads(BIG_ORDER)
    order["note_attributes"] = [{"name": "_clickserver_anonymous_id", "value": "browser-aid"}]

    deliver("orders/create", order)

    assert Event.objects.get(type="purchase").anonymous_id == "browser-aid"
    assert Order.objects.get().anonymous_id == "browser-aid"


@pytest.mark.django_db
def test_order_joins_the_browser_through_the_checkouts_cart_token(deliver, payloads, shop):
    checkout = orjson.loads(load(payloads, "checkouts_create"))
    checkout["note_attributes"] = [{"name": "_clickserver_anonymous_id", "value": "browser-aid"}]
    deliver("checkouts/create", checkout)
    order = orjson.loads(BIG_ORDER)
    order["cart_token"] = "eeafa272cebfd4b22385bc4b645e762c"
    order["checkout_token"] = "123123123"

    deliver("orders/create", order)

    assert Event.objects.get(type="purchase").anonymous_id == "browser-aid"
    assert Checkout.objects.get().completed_at == datetime(2026, 4, 1, 10, 0, tzinfo=UTC)


# --- GDPR ----------------------------------------------------------------------------------------


def seed_customer(shop, *, customer_id: str, email: str, anonymous_id: str) -> Person:
    person = Person.objects.create(shop=shop, first_seen_at=NOW, last_seen_at=NOW)
    PersonIdentifier.objects.create(
        shop=shop, person=person, kind="shopify_customer", value=customer_id
    )
    PersonIdentifier.objects.create(shop=shop, person=person, kind="email_hash", value=sha(email))
    PersonIdentifier.objects.create(
        shop=shop, person=person, kind="anonymous_id", value=anonymous_id
    )
    session = Session.objects.create(shop=shop, person=person, started_at=NOW, ended_at=NOW)
    events_ingest(
        shop=shop,
        events=[
            {"event_id": f"{anonymous_id}-1", "type": "page_view", "anonymous_id": anonymous_id},
            {"event_id": f"{anonymous_id}-2", "type": "add_to_cart", "anonymous_id": anonymous_id},
        ],
        received_at=NOW,
    )
    Event.objects.filter(anonymous_id=anonymous_id).update(person=person, session=session)
    return person


def customer_order(*, order_id: int, customer_id: int, email: str, aid: str) -> dict:
    return {
        "id": order_id,
        "created_at": "2026-04-01T10:00:00Z",
        "currency": "USD",
        "total_price": "20.00",
        "email": email,
        "customer": {"id": customer_id, "email": email},
        "note_attributes": [{"name": "_clickserver_anonymous_id", "value": aid}],
        "line_items": [{"product_id": 1, "quantity": 1, "price": "20.00", "name": "Mug"}],
    }


@pytest.fixture
def two_customers(deliver, shop):
    seed_customer(shop, customer_id="191167", email="john@example.com", anonymous_id="aid-john")
    seed_customer(shop, customer_id="555", email="mary@example.com", anonymous_id="aid-mary")
    deliver(
        "orders/create",
        customer_order(
            order_id=299938, customer_id=191167, email="john@example.com", aid="aid-john"
        ),
    )
    deliver(
        "orders/create",
        customer_order(order_id=700001, customer_id=555, email="mary@example.com", aid="aid-mary"),
    )
    cart = {
        "token": "cart-john",
        "created_at": "2026-04-01T09:00:00Z",
        "line_items": [],
        "attributes": {"_clickserver_anonymous_id": "aid-john"},
    }
    deliver("carts/create", cart)


GDPR_CUSTOMER = {"id": 191167, "email": "john@example.com", "phone": "555-625-1199"}


@pytest.mark.django_db
def test_customers_data_request_exports_the_customers_data(deliver, shop, two_customers):
    deliver(
        "refunds/create",
        {
            "id": 41,
            "order_id": 299938,
            "created_at": "2026-04-02T10:00:00Z",
            "transactions": [{"kind": "refund", "status": "success", "amount": "20.00"}],
            "refund_line_items": [
                {"quantity": 1, "subtotal": "20.00", "line_item": {"product_id": 1, "name": "Mug"}}
            ],
        },
    )
    deliver(
        "customers/data_request",
        {
            "shop_id": 954889,
            "shop_domain": shop.domain,
            "orders_requested": [299938],
            "customer": GDPR_CUSTOMER,
            "data_request": {"id": 9999},
        },
    )

    request = PrivacyRequest.objects.get(kind="customers/data_request")
    export = request.export
    assert request.shopify_customer_id == "191167"
    assert request.completed_at is not None
    assert [o["order_id"] for o in export["orders"]] == ["299938"]
    assert export["orders"][0]["lines"][0]["name"] == "Mug"
    [refund] = export["orders"][0]["refunds"]
    assert (refund["refund_id"], refund["amount"]) == ("41", "20.00")  # JSON: decimals as text
    assert [(li["product_id"], li["name"], li["quantity"]) for li in refund["lines"]] == [
        ("1", "Mug", 1)
    ]
    assert sorted(e["event_id"] for e in export["events"]) == [
        "aid-john-1",
        "aid-john-2",
        "shopify-order-299938",
    ]
    assert {(i["kind"], i["value"]) for i in export["identifiers"]} == {
        ("shopify_customer", "191167"),
        ("email_hash", sha("john@example.com")),
        ("anonymous_id", "aid-john"),
    }
    assert [c["token"] for c in export["checkouts"]] == ["cart-john"]
    assert len(export["persons"]) == 1
    johns_sessions = Session.objects.filter(person_id=export["persons"][0]["id"])
    assert {s["id"] for s in export["sessions"]} == set(johns_sessions.values_list("id", flat=True))
    assert johns_sessions.exists()


@pytest.mark.django_db
def test_customers_redact_erases_only_that_customer(deliver, shop, two_customers):
    deliver(
        "customers/redact",
        {
            "shop_id": 954889,
            "shop_domain": shop.domain,
            "customer": GDPR_CUSTOMER,
            "orders_to_redact": [299938],
        },
    )

    assert not Event.objects.filter(anonymous_id="aid-john").exists()
    assert not Order.objects.filter(order_id="299938").exists()
    assert not Checkout.objects.filter(token="cart-john").exists()
    assert not PersonIdentifier.objects.filter(value__in=["191167", "aid-john"]).exists()
    assert Person.objects.count() == 1
    assert Session.objects.exists()
    assert not Session.objects.exclude(person=Person.objects.get()).exists()
    assert not WebhookDelivery.objects.filter(customer_id="191167").exists()
    # The other customer is untouched.
    assert Event.objects.filter(anonymous_id="aid-mary").count() == 3
    assert Order.objects.filter(order_id="700001").exists()
    assert WebhookDelivery.objects.get(topic="customers/redact").payload == {
        "customer_id": "191167"
    }
    request = ErasureRequest.objects.get(shop=shop)
    assert request.kind == "shopify_customer"
    assert (request.counts["events"], request.counts["orders"], request.counts["persons"]) == (
        3,
        1,
        1,
    )
    assert request.completed_at is not None
    assert not PrivacyRequest.objects.filter(shop=shop).exists()


@pytest.mark.django_db
def test_shop_redact_erases_all_the_shops_data(deliver, shop, other_shop, two_customers):
    events_ingest(
        shop=other_shop,
        events=[{"event_id": "x", "type": "page_view", "anonymous_id": "a"}],
        received_at=NOW,
    )

    deliver("shop/redact", {"shop_id": 954889, "shop_domain": shop.domain})

    for model in (Event, Order, Checkout, Person, PersonIdentifier, Session, Refund, Product):
        assert not model.objects.filter(shop=shop).exists(), model
    assert list(WebhookDelivery.objects.filter(shop=shop).values_list("topic", flat=True)) == [
        "shop/redact"
    ]
    assert Shop.objects.get(pk=shop.pk).is_active is False
    assert not PrivacyRequest.objects.filter(shop=shop).exists()
    request = ErasureRequest.objects.get(shop=shop)
    assert (request.kind, request.days, request.counts["events"]) == ("shop", None, 6)
    assert request.completed_at is not None
    assert Event.objects.filter(shop=other_shop).count() == 1
