"""Lean, typed validation of one incoming event (STYLE.md principle 6).

A DRF serializer costs ~150 µs an event; these plain functions over orjson-parsed dicts cost a few.
`event_validate` turns one raw dict into an `EventIn` or raises `EventInvalid(code, detail)`; the
caller stores the rejection and carries on with the event's neighbours.
"""

import functools
import ipaddress
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

MAX_EVENT_ID = 64
MAX_TYPE = 64
MAX_ID = 255
MAX_URL = 2048
MAX_TITLE = 512
MAX_SHORT = 255
MAX_PRODUCT_ID = 128
MAX_USER_AGENT = 512
MAX_PROPERTIES_BYTES = 32 * 1024
# MariaDB's JSON columns take documents at most 31 levels deep (json_valid() fails at 32, and the
# column's CHECK constraint with it); properties are stored as one document, themselves level 1.
MAX_JSON_DEPTH = 31
MAX_FUTURE = timedelta(hours=23)
# Nothing a shop tracks happened before this; older times are broken clocks or placeholders such
# as 0001-01-01, whose arithmetic (session timeouts, restart points) would leave the calendar.
MIN_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)
# Ids that SDKs and templates emit when they have no real id; they must never join two people.
JUNK_IDS = frozenset(
    {"", "null", "none", "nil", "undefined", "0", "-1", "anonymous", "guest", "unknown", "nan"}
)
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
TEXT_TYPES = (str, int, float)
MAX_AMOUNT = Decimal("1e12")
CENT = Decimal("0.01")
REFUND_TYPE = "refund"
# A refund event names at most this many products (its refund lines).
MAX_REFUND_PRODUCTS = 100


class InvalidJsonEvent:
    """An event whose JSON held a value JSON cannot carry (NaN, 1e309, a lone surrogate).

    The body parser puts one in the event's place so that only this event is rejected; `raw` is
    what the tolerant parser read, kept with the rejection.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw


class EventInvalid(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(slots=True)
class EventIn:
    event_id: str
    type: str
    occurred_at: datetime
    anonymous_id: str = ""
    user_id: str = ""
    url: str = ""
    referrer: str = ""
    title: str = ""
    product_id: str = ""
    product_name: str = ""
    product_category: str = ""
    product_price: Decimal | None = None
    product_quantity: int | None = None
    order_id: str = ""
    revenue: Decimal | None = None
    currency: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_term: str = ""
    utm_content: str = ""
    user_agent: str = ""
    ip: str | None = None
    country: str = ""
    properties: dict[str, Any] = field(default_factory=dict)


def clean_id(value: Any) -> str:
    """A usable identifier or "" for junk such as "null", "undefined", "0" or "guest"."""
    if value is None or isinstance(value, bool):
        return ""
    text = str(value).strip()
    return "" if text.lower() in JUNK_IDS else text


def _text(raw: dict, key: str, limit: int, *, name: str | None = None) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    # Nearly every value is a plain str already: only other types need the checks and str().
    if type(value) is not str:
        if isinstance(value, bool) or not isinstance(value, TEXT_TYPES):
            raise EventInvalid("invalid_type", f"{name or key} must be a string.")
        value = str(value)
    if len(value) > limit:
        raise EventInvalid("too_long", f"{name or key} is longer than {limit} characters.")
    return value


def _decimal(value: Any, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise EventInvalid("invalid_number", f"{name} must be a number.")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise EventInvalid("invalid_number", f"{name} must be a number.") from None
    if not number.is_finite() or abs(number) >= MAX_AMOUNT:
        raise EventInvalid("invalid_number", f"{name} is out of range.")
    return number.quantize(CENT)


def _integer(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise EventInvalid("invalid_number", f"{name} must be an integer.")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None or abs(number) > 1_000_000:
        raise EventInvalid("invalid_number", f"{name} must be an integer up to one million.")
    return number


def parse_timestamp(value: Any, name: str = "timestamp") -> datetime:
    """ISO 8601 (naive means UTC) or Unix time in seconds or milliseconds."""
    if isinstance(value, bool):
        raise EventInvalid("invalid_timestamp", f"{name} must be ISO 8601 or Unix time.")
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise EventInvalid("invalid_timestamp", f"{name} is out of range.") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise EventInvalid(
                "invalid_timestamp", f"{name} must be ISO 8601 or Unix time."
            ) from None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
            raise EventInvalid("invalid_timestamp", f"{name} is out of range.") from None
    raise EventInvalid("invalid_timestamp", f"{name} must be ISO 8601 or Unix time.")


def occurred_at_for(
    timestamp: datetime | None, *, sent_at: datetime | None, received_at: datetime
) -> datetime:
    """Correct the client clock: occurred_at = received_at − (sent_at − timestamp).

    Events more than 23 hours in the future (after correction) take received_at; events before
    MIN_OCCURRED_AT (after correction) are rejected.
    """
    if timestamp is None:
        return received_at
    try:
        occurred_at = timestamp if sent_at is None else received_at - (sent_at - timestamp)
    except OverflowError:  # a year-1 timestamp sent in year 9999
        raise EventInvalid("invalid_timestamp", "timestamp is out of range.") from None
    if occurred_at < MIN_OCCURRED_AT:
        raise EventInvalid(
            "invalid_timestamp", f"timestamp is before {MIN_OCCURRED_AT.date().isoformat()}."
        )
    if occurred_at - received_at > MAX_FUTURE:
        return received_at
    return occurred_at


def json_too_deep(value: Any, depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether objects and arrays in `value` nest more than `depth` levels (itself level 1).

    Descends only into containers, so a flat object costs one pass over its values.
    """
    if type(value) is dict:
        values: Any = value.values()
    elif type(value) is list:
        values = value
    else:
        return False
    if depth < 1:
        return True
    for item in values:
        if (type(item) is dict or type(item) is list) and json_too_deep(item, depth - 1):
            return True
    return False


_NO_UTM: dict[str, str] = {}


def _utm_from_url(url: str) -> dict[str, str]:
    """The UTM fields in a URL's query string; read-only (shared between calls)."""
    if "utm_" not in url:
        return _NO_UTM
    return _utm_from_tagged_url(url)


# Parsing a query string costs more than the rest of an event's validation, and a shop's traffic
# repeats its tagged landing URLs (a campaign's links, a batch's events from one page). At most
# 1024 URLs of at most 2 KB (MAX_URL is checked first) per process.
@functools.lru_cache(maxsize=1024)
def _utm_from_tagged_url(url: str) -> dict[str, str]:
    query = parse_qs(urlsplit(url).query)
    return {key: query[key][0][:MAX_SHORT] for key in UTM_FIELDS if query.get(key)}


def event_validate(raw: Any, *, received_at: datetime, sent_at: datetime | None = None) -> EventIn:
    """Validate one event in clickserver's own format (see docs/ingestion.md)."""
    if not isinstance(raw, dict):
        if isinstance(raw, InvalidJsonEvent):
            raise EventInvalid(
                "invalid_json", "The event holds NaN, Infinity, 1e309 or a lone surrogate."
            )
        raise EventInvalid("not_object", "Each event must be a JSON object.")

    event_type = raw.get("type", raw.get("event_type"))
    if not event_type or not isinstance(event_type, str):
        raise EventInvalid("missing_field", "type is required.")
    if len(event_type) > MAX_TYPE:
        raise EventInvalid("too_long", f"type is longer than {MAX_TYPE} characters.")

    event_id = _text(raw, "event_id", MAX_EVENT_ID) or str(uuid.uuid4())
    anonymous_id = clean_id(_text(raw, "anonymous_id", MAX_ID))
    user_id = clean_id(_text(raw, "user_id", MAX_ID))
    if not anonymous_id and not user_id:
        raise EventInvalid("missing_identity", "anonymous_id or user_id is required.")

    event = EventIn(
        event_id=event_id,
        type=event_type.strip(),
        occurred_at=_occurred_at(raw, received_at=received_at, sent_at=sent_at),
        anonymous_id=anonymous_id,
        user_id=user_id,
        url=_text(raw, "url", MAX_URL),
        referrer=_text(raw, "referrer", MAX_URL),
        title=_text(raw, "title", MAX_TITLE),
        properties=_properties(raw),
    )
    _product_apply(event, raw.get("product"))
    _order_apply(event, raw.get("order"))
    if event.type == REFUND_TYPE:
        _refund_products_apply(event, raw)
    _utm_apply(event, raw)
    _context_apply(event, raw.get("context") or {})
    return event


def _occurred_at(raw: dict, *, received_at: datetime, sent_at: datetime | None) -> datetime:
    own_sent_at = raw.get("sent_at")
    if own_sent_at is not None:
        sent_at = parse_timestamp(own_sent_at, "sent_at")
    timestamp = raw.get("timestamp")
    return occurred_at_for(
        parse_timestamp(timestamp) if timestamp is not None else None,
        sent_at=sent_at,
        received_at=received_at,
    )


def _properties(raw: dict) -> dict:
    properties = raw.get("properties", raw.get("data"))
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise EventInvalid("invalid_type", "properties must be an object.")
    # Checked before the size: orjson cannot serialise 255 levels, and the database stores 31.
    if properties and json_too_deep(properties):
        raise EventInvalid("too_deep", f"properties nest more than {MAX_JSON_DEPTH} levels.")
    if properties and len(orjson.dumps(properties)) > MAX_PROPERTIES_BYTES:
        raise EventInvalid(
            "properties_too_large", f"properties are larger than {MAX_PROPERTIES_BYTES} bytes."
        )
    return properties


def _product_apply(event: EventIn, product: Any) -> None:
    if product is None:
        return
    if not isinstance(product, dict):
        raise EventInvalid("invalid_type", "product must be an object.")
    event.product_id = _text(product, "id", MAX_PRODUCT_ID, name="product.id")
    event.product_name = _text(product, "name", MAX_SHORT, name="product.name")
    event.product_category = _text(product, "category", MAX_SHORT, name="product.category")
    event.product_price = _decimal(product.get("price"), "product.price")
    event.product_quantity = _integer(product.get("quantity"), "product.quantity")


def _refund_products_apply(event: EventIn, raw: dict) -> None:
    """A refund's lines: `products` (top level, or in `properties` as Segment's "Order
    Refunded" carries them), each {id, sku, name, quantity, price or amount}; stored cleaned in
    `properties["products"]`, where the pipeline reads them (events/services/orders.py).

    A line needs an id, a sku or a name; quantity defaults to 1 and is 1 to one million; its
    amount is `amount`, else price × quantity, 0 or more.
    """
    products = raw.get("products", event.properties.get("products"))
    if products is None:
        return
    if not isinstance(products, list):
        raise EventInvalid("invalid_type", "products must be a list of objects.")
    if len(products) > MAX_REFUND_PRODUCTS:
        raise EventInvalid(
            "too_long", f"products holds more than {MAX_REFUND_PRODUCTS} refund lines."
        )
    lines = []
    for i, product in enumerate(products):
        name = f"products[{i}]"
        if not isinstance(product, dict):
            raise EventInvalid("invalid_type", f"{name} must be an object.")
        line_id = _text(product, "id", MAX_PRODUCT_ID, name=f"{name}.id") or _text(
            product, "product_id", MAX_PRODUCT_ID, name=f"{name}.product_id"
        )
        sku = _text(product, "sku", MAX_PRODUCT_ID, name=f"{name}.sku")
        title = _text(product, "name", MAX_SHORT, name=f"{name}.name")
        if not (line_id or sku or title):
            raise EventInvalid("missing_field", f"{name} needs an id, a sku or a name.")
        quantity = _integer(product.get("quantity"), f"{name}.quantity")
        if quantity is None:
            quantity = 1
        if quantity < 1:
            raise EventInvalid("invalid_number", f"{name}.quantity must be at least 1.")
        amount = _decimal(product.get("amount"), f"{name}.amount")
        if amount is None:
            price = _decimal(product.get("price"), f"{name}.price")
            amount = None if price is None else (price * quantity).quantize(CENT)
        if amount is not None and amount < 0:
            raise EventInvalid("invalid_number", f"{name} refunds a negative amount.")
        lines.append(
            {
                "id": line_id,
                "sku": sku,
                "name": title,
                "quantity": quantity,
                "amount": str(amount if amount is not None else Decimal("0.00")),
            }
        )
    event.properties = {**event.properties, "products": lines}


def _order_apply(event: EventIn, order: Any) -> None:
    if order is None:
        return
    if not isinstance(order, dict):
        raise EventInvalid("invalid_type", "order must be an object.")
    event.order_id = _text(order, "id", MAX_PRODUCT_ID, name="order.id")
    event.revenue = _decimal(order.get("revenue"), "order.revenue")
    event.currency = _text(order, "currency", 3, name="order.currency").upper()


def _utm_apply(event: EventIn, raw: dict) -> None:
    """UTM fields from `utm`, the top-level `utm_*` keys, or else the URL's query string."""
    utm = raw.get("utm") or {}
    if not isinstance(utm, dict):
        raise EventInvalid("invalid_type", "utm must be an object.")
    from_url = _utm_from_url(event.url)
    if utm or not raw.keys().isdisjoint(UTM_FIELDS):
        for key in UTM_FIELDS:
            short = key.removeprefix("utm_")
            value = _text(utm, short, MAX_SHORT, name=f"utm.{short}") or _text(raw, key, MAX_SHORT)
            setattr(event, key, value or from_url.get(key, ""))
    else:
        # Only the URL can name a UTM field (the common case): ten lookups of absent keys saved.
        for key, value in from_url.items():
            setattr(event, key, value)


def _context_apply(event: EventIn, context: Any) -> None:
    if not isinstance(context, dict):
        raise EventInvalid("invalid_type", "context must be an object.")
    event.user_agent = _text(context, "user_agent", MAX_USER_AGENT, name="context.user_agent")
    event.country = _text(context, "country", 2, name="context.country").upper()
    ip = context.get("ip")
    if ip:
        try:
            event.ip = str(ipaddress.ip_address(str(ip)))
        except ValueError:
            raise EventInvalid("invalid_ip", "context.ip is not an IP address.") from None
