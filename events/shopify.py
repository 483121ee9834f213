"""Pure Shopify webhook logic: signatures and payload parsing. No database access here.

Shopify ids are 64-bit integers. JavaScript-based tooling silently rounds them to doubles, so
bodies are parsed with orjson (which keeps integers exact) and every id is kept as a string.
"""

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

# The cart attribute the snippet writes (see events/static/events/clickserver.js); Shopify copies
# cart attributes into the order's `note_attributes`.
ANONYMOUS_ID_ATTRIBUTE = "_clickserver_anonymous_id"

ORDER_TOPICS = frozenset({"orders/create", "orders/paid", "orders/updated", "orders/fulfilled"})
CHECKOUT_TOPICS = frozenset({"checkouts/create", "checkouts/update"})
CART_TOPICS = frozenset({"carts/create", "carts/update"})
CUSTOMER_TOPICS = frozenset({"customers/create", "customers/update"})
PRODUCT_TOPICS = frozenset({"products/create", "products/update"})
PRIVACY_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
TOPICS = (
    ORDER_TOPICS
    | CHECKOUT_TOPICS
    | CART_TOPICS
    | CUSTOMER_TOPICS
    | PRODUCT_TOPICS
    | PRIVACY_TOPICS
    | {"orders/cancelled", "refunds/create", "app/uninstalled"}
)


class PayloadInvalid(Exception):
    pass


def signature_compute(*, secret: str, body: bytes) -> str:
    """X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(app secret, raw body))."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signature_is_valid(*, secret: str, body: bytes, signature: str) -> bool:
    if not secret or not body or not signature:
        return False
    expected = signature_compute(secret=secret, body=body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


def payload_parse(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise PayloadInvalid(f"Malformed JSON: {error}") from None
    if not isinstance(payload, dict):
        raise PayloadInvalid("The webhook body must be a JSON object.")
    return payload


def _object(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, dict) else {}


def email_hash(email: Any) -> str:
    """The identity key for an email: SHA-256 of the trimmed, lower-cased address."""
    if not isinstance(email, str) or not email.strip():
        return ""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def id_text(value: Any) -> str:
    """A Shopify id as text; "" when absent. Never goes through float."""
    if value is None or isinstance(value, bool | float):
        return ""
    return str(value)


def money(value: Any) -> Decimal:
    if value is None or value == "" or isinstance(value, bool):
        return Decimal("0.00")
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise PayloadInvalid(f"{value!r} is not an amount.") from None


def timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PayloadInvalid(f"{value!r} is not an ISO 8601 time.") from None
    if parsed.tzinfo is None:
        raise PayloadInvalid(f"{value!r} has no time zone.")
    return parsed


def attribute(payload: dict[str, Any], name: str) -> str:
    """A cart/order attribute: `note_attributes` [{name, value}] or `attributes` {name: value}."""
    for key in ("note_attributes", "attributes"):
        attributes = payload.get(key)
        if isinstance(attributes, dict) and isinstance(attributes.get(name), str):
            return attributes[name]
        if isinstance(attributes, list):
            for item in attributes:
                if isinstance(item, dict) and item.get("name") == name:
                    return str(item.get("value") or "")
    return ""


def customer_id_of(topic: str, payload: dict[str, Any]) -> str:
    """The Shopify customer a payload is about (for erasing raw payloads on redaction)."""
    if topic in PRIVACY_TOPICS:
        # The request itself is the record of what was done; its payload is scrubbed instead.
        return ""
    if topic in CUSTOMER_TOPICS:
        return id_text(payload.get("id"))
    customer = payload.get("customer")
    return id_text(customer.get("id")) if isinstance(customer, dict) else ""


@dataclass(frozen=True, slots=True)
class LineIn:
    product_id: str
    sku: str
    name: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class OrderIn:
    order_id: str
    placed_at: datetime
    currency: str
    total: Decimal
    cancelled_at: datetime | None
    country: str
    cart_token: str
    checkout_token: str
    anonymous_id: str
    customer_id: str
    email_hash: str
    lines: list[LineIn] = field(default_factory=list)


def order_parse(payload: dict[str, Any]) -> OrderIn:
    order_id = id_text(payload.get("id"))
    placed_at = timestamp(payload.get("processed_at")) or timestamp(payload.get("created_at"))
    if not order_id or placed_at is None:
        raise PayloadInvalid("An order needs an id and a created_at.")
    customer = _object(payload, "customer")
    address = _object(payload, "billing_address") or _object(payload, "shipping_address")
    lines = [
        LineIn(
            product_id=id_text(item.get("product_id")),
            sku=str(item.get("sku") or "")[:128],
            name=str(item.get("name") or item.get("title") or "")[:512],
            quantity=int(item.get("quantity") or 0),
            unit_price=money(item.get("price")),
        )
        for item in payload.get("line_items") or []
        if isinstance(item, dict)
    ]
    return OrderIn(
        order_id=order_id,
        placed_at=placed_at,
        currency=str(payload.get("currency") or "")[:3].upper(),
        total=money(payload.get("total_price")),
        cancelled_at=timestamp(payload.get("cancelled_at")),
        country=str(address.get("country_code") or "")[:2].upper(),
        cart_token=str(payload.get("cart_token") or ""),
        checkout_token=str(payload.get("checkout_token") or ""),
        anonymous_id=attribute(payload, ANONYMOUS_ID_ATTRIBUTE),
        customer_id=id_text(customer.get("id")),
        email_hash=email_hash(payload.get("email") or customer.get("email")),
        lines=lines,
    )


@dataclass(frozen=True, slots=True)
class RefundLineIn:
    product_id: str
    sku: str
    name: str
    quantity: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class RefundIn:
    refund_id: str
    order_id: str
    amount: Decimal
    refunded_at: datetime
    lines: list[RefundLineIn] = field(default_factory=list)


def _quantity(value: Any) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PayloadInvalid(f"{value!r} is not a quantity.")
    try:
        return int(value)
    except ValueError:
        raise PayloadInvalid(f"{value!r} is not a quantity.") from None


def _refund_line_parse(item: dict[str, Any]) -> RefundLineIn:
    """One of `refund_line_items`: the units taken back and their subtotal in the shop's money
    (`subtotal_set.shop_money`, else `subtotal`), the product from the order's `line_item`."""
    line = _object(item, "line_item")
    shop_money = _object(_object(item, "subtotal_set"), "shop_money")
    return RefundLineIn(
        product_id=id_text(line.get("product_id")),
        sku=str(line.get("sku") or "")[:128],
        name=str(line.get("name") or line.get("title") or "")[:512],
        quantity=_quantity(item.get("quantity")),
        amount=money(shop_money.get("amount", item.get("subtotal"))),
    )


def refund_parse(payload: dict[str, Any]) -> RefundIn:
    """A refund's amount is what was paid back: its successful refund transactions. Its lines
    are the `refund_line_items` (what was taken back, by product), which may differ from the
    amount (shipping, adjustments, a partial refund of money)."""
    refund_id = id_text(payload.get("id"))
    refunded_at = timestamp(payload.get("processed_at")) or timestamp(payload.get("created_at"))
    if not refund_id or refunded_at is None:
        raise PayloadInvalid("A refund needs an id and a created_at.")
    amount = sum(
        (
            money(t.get("amount"))
            for t in payload.get("transactions") or []
            if isinstance(t, dict) and t.get("kind") == "refund" and t.get("status") == "success"
        ),
        Decimal("0.00"),
    )
    return RefundIn(
        refund_id=refund_id,
        order_id=id_text(payload.get("order_id")),
        amount=amount,
        refunded_at=refunded_at,
        lines=[
            _refund_line_parse(item)
            for item in payload.get("refund_line_items") or []
            if isinstance(item, dict)
        ],
    )


@dataclass(frozen=True, slots=True)
class CheckoutIn:
    kind: str
    token: str
    cart_token: str
    anonymous_id: str
    email_hash: str
    total: Decimal
    currency: str
    line_items: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


def checkout_parse(payload: dict[str, Any], *, kind: str) -> CheckoutIn:
    token = str(payload.get("token") or payload.get("id") or "")
    created_at = timestamp(payload.get("created_at"))
    if not token or created_at is None:
        raise PayloadInvalid("A cart or checkout needs a token and a created_at.")
    items = [i for i in payload.get("line_items") or [] if isinstance(i, dict)]
    total = payload.get("total_price")
    if total is None:
        total = sum((money(i.get("line_price")) for i in items), Decimal("0.00"))
    customer = _object(payload, "customer")
    return CheckoutIn(
        kind=kind,
        token=token[:128],
        cart_token=str(payload.get("cart_token") or (token if kind == "cart" else ""))[:128],
        anonymous_id=attribute(payload, ANONYMOUS_ID_ATTRIBUTE)[:255],
        email_hash=email_hash(payload.get("email") or customer.get("email")),
        total=money(total),
        currency=str(payload.get("currency") or payload.get("presentment_currency") or "")[
            :3
        ].upper(),
        # Only what abandonment analysis needs; no addresses or names.
        line_items=[
            {
                "product_id": id_text(i.get("product_id")),
                "variant_id": id_text(i.get("variant_id")),
                "sku": str(i.get("sku") or ""),
                "title": str(i.get("title") or ""),
                "quantity": int(i.get("quantity") or 0),
                "price": str(money(i.get("price"))),
            }
            for i in items
        ],
        created_at=created_at,
        updated_at=timestamp(payload.get("updated_at")) or created_at,
        completed_at=timestamp(payload.get("completed_at")),
    )


@dataclass(frozen=True, slots=True)
class CustomerIn:
    customer_id: str
    email_hash: str
    updated_at: datetime | None
    # Traits the shop's analytics need; names, emails, phones and addresses stay out.
    traits: dict[str, Any]


def customer_parse(payload: dict[str, Any]) -> CustomerIn:
    customer_id = id_text(payload.get("id"))
    if not customer_id:
        raise PayloadInvalid("A customer needs an id.")
    address = _object(payload, "default_address")
    traits = {
        "state": payload.get("state") or "",
        "verified_email": bool(payload.get("verified_email")),
        "currency": payload.get("currency") or "",
        "country_code": address.get("country_code") or "",
        "created_at": payload.get("created_at") or "",
    }
    return CustomerIn(
        customer_id=customer_id,
        email_hash=email_hash(payload.get("email")),
        updated_at=timestamp(payload.get("updated_at")) or timestamp(payload.get("created_at")),
        traits=traits,
    )


@dataclass(frozen=True, slots=True)
class ProductIn:
    product_id: str
    title: str
    category: str
    vendor: str
    price: Decimal | None
    url: str
    image_url: str
    is_available: bool
    updated_at: datetime | None


def product_parse(payload: dict[str, Any], *, shop_domain: str) -> ProductIn:
    product_id = id_text(payload.get("id"))
    if not product_id:
        raise PayloadInvalid("A product needs an id.")
    variants = [v for v in payload.get("variants") or [] if isinstance(v, dict)]
    prices = [money(v.get("price")) for v in variants if v.get("price") not in (None, "")]
    image = _object(payload, "image")
    handle = str(payload.get("handle") or "")
    return ProductIn(
        product_id=product_id,
        title=str(payload.get("title") or "")[:512],
        category=str(payload.get("product_type") or payload.get("category") or "")[:255],
        vendor=str(payload.get("vendor") or "")[:255],
        price=min(prices) if prices else None,
        url=f"https://{shop_domain}/products/{handle}" if handle else "",
        image_url=str(image.get("src") or "")[:2048],
        is_available=payload.get("status", "active") == "active",
        updated_at=timestamp(payload.get("updated_at")),
    )


@dataclass(frozen=True, slots=True)
class PrivacySubject:
    customer_id: str
    email_hash: str
    order_ids: list[str]


def privacy_subject_parse(payload: dict[str, Any]) -> PrivacySubject:
    customer = _object(payload, "customer")
    orders = payload.get("orders_to_redact") or payload.get("orders_requested") or []
    return PrivacySubject(
        customer_id=id_text(customer.get("id")),
        email_hash=email_hash(customer.get("email")),
        order_ids=[id_text(o) for o in orders if id_text(o)],
    )


def pseudo_anonymous_id(*, customer_id: str, order_id: str = "") -> str:
    """An anonymous id for server-side events with no browser id: per customer, else per order.

    Events need an identity; the identity pipeline joins these to the browser's person through
    the shopify_customer_id / email_hash properties.
    """
    return f"shopify-customer-{customer_id}" if customer_id else f"shopify-order-{order_id}"
