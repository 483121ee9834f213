"""Every write of the events app: shops, ingestion, rejected events."""

import ipaddress
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet, Sum
from kombu.exceptions import OperationalError as BrokerError
from rest_framework.authtoken.models import Token

from clickserver.api import ApplicationError
from events import shopify
from events.models import (
    Checkout,
    Event,
    EventFormat,
    IdentifierKind,
    Order,
    OrderLine,
    Person,
    PersonIdentifier,
    PipelineWatermark,
    PrivacyRequest,
    Product,
    Refund,
    RejectedEvent,
    Session,
    Shop,
    ShopMembership,
    WebhookDelivery,
    new_write_key,
)
from events.segment import segment_to_event
from events.validation import EventIn, EventInvalid, event_validate

logger = logging.getLogger(__name__)

# How long one shop's "processing is scheduled" flag lives: many ingest requests in that time
# enqueue one task, which then processes all of their events in one batch.
PROCESS_DEBOUNCE_SECONDS = 1


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    code: str
    detail: str


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the HTTP request says about the sender, used where an event says nothing itself."""

    ip: str | None = None
    user_agent: str = ""
    country: str = ""


@dataclass(frozen=True, slots=True)
class ShopCreated:
    shop: Shop
    api_token: str


# --- Shops ----------------------------------------------------------------------------------------


@transaction.atomic
def shop_create(
    *,
    domain: str,
    owner_username: str,
    name: str = "",
    webhook_secret: str | None = None,
    timezone: str = "UTC",
    currency: str = "USD",
) -> ShopCreated:
    """Create a shop, its owner (if new) and the owner's API token."""
    user_model = get_user_model()
    owner, _ = user_model.objects.get_or_create(username=owner_username)
    shop = Shop(domain=domain, name=name or domain, timezone=timezone, currency=currency.upper())
    if webhook_secret:
        shop.webhook_secret = webhook_secret
    shop.full_clean()
    shop.save()
    ShopMembership.objects.create(shop=shop, user=owner, role=ShopMembership.Role.OWNER)
    token, _ = Token.objects.get_or_create(user=owner)
    return ShopCreated(shop=shop, api_token=token.key)


def shop_rotate_write_key(*, shop: Shop) -> Shop:
    """Give the shop a new public write key; the old one stops working at once."""
    shop.write_key = new_write_key()
    shop.save(update_fields=["write_key"])
    return shop


# --- Ingestion ------------------------------------------------------------------------------------


def anonymize_ip(ip: str) -> str:
    """Zero the host part: IPv4 keeps /24, IPv6 keeps /48 (the common analytics convention)."""
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


_EVENT_COLUMNS = [
    f for f in Event._meta.concrete_fields if f.name not in ("id", "session", "person")
]


def _insert_sql() -> str:
    table = connection.ops.quote_name(Event._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in _EVENT_COLUMNS)
    placeholders = ", ".join(["%s"] * len(_EVENT_COLUMNS))
    if connection.vendor == "mysql":
        # IGNORE only skips the unique (shop, event_id) duplicates here: every other field was
        # validated to fit before it reaches the database.
        return f"INSERT IGNORE INTO {table} ({columns}) VALUES ({placeholders})"
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "
        "ON CONFLICT (shop_id, event_id) DO NOTHING"
    )


def _row(shop_id: int, event: EventIn, received_at: datetime) -> list[Any]:
    ops = connection.ops
    values: dict[str, Any] = {
        "shop": shop_id,
        "received_at": ops.adapt_datetimefield_value(received_at),
        "occurred_at": ops.adapt_datetimefield_value(event.occurred_at),
        "properties": orjson.dumps(event.properties).decode(),
        "product_price": ops.adapt_decimalfield_value(event.product_price, 14, 2),
        "revenue": ops.adapt_decimalfield_value(event.revenue, 14, 2),
    }
    return [values[f.name] if f.name in values else getattr(event, f.name) for f in _EVENT_COLUMNS]


def events_insert(*, shop_id: int, events: list[EventIn], received_at: datetime) -> int:
    """Insert events in one multi-row statement; returns how many were new (not duplicates)."""
    if not events:
        return 0
    rows = [_row(shop_id, event, received_at) for event in events]
    with connection.cursor() as cursor:
        cursor.executemany(_insert_sql(), rows)
        return max(cursor.rowcount, 0)


def events_process_schedule(*, shop_id: int) -> None:
    """Ask a worker to process this shop's new events, at most once a second per shop."""
    from events.tasks import events_process_task

    if not cache.add(f"events:process-scheduled:{shop_id}", 1, PROCESS_DEBOUNCE_SECONDS):
        return
    try:
        events_process_task.delay(shop_id)
    except BrokerError:
        # The events are durable; the periodic sweep picks them up once the broker is back.
        logger.warning("broker unavailable; shop %s waits for the sweep", shop_id)


def events_ingest(
    *,
    shop: Shop,
    events: list[Any],
    received_at: datetime,
    sent_at: datetime | None = None,
    request: RequestContext | None = None,
    format: str = EventFormat.CLICKSERVER,
) -> IngestResult:
    """Validate and durably store a batch; a re-sent event_id is a no-op.

    Bad events are stored as RejectedEvent and reported by index; they never reject their valid
    neighbours. A Segment-format message is translated to ours before validation. Returns only
    after the transaction has committed.
    """
    request = request or RequestContext()
    translate = segment_to_event if format == EventFormat.SEGMENT else None
    result = IngestResult()
    valid: list[EventIn] = []
    rejected_rows: list[RejectedEvent] = []
    for index, raw in enumerate(events):
        try:
            event = event_validate(
                translate(raw) if translate else raw, received_at=received_at, sent_at=sent_at
            )
        except EventInvalid as error:
            result.rejected.append(Rejection(index=index, code=error.code, detail=error.detail))
            rejected_rows.append(
                RejectedEvent(
                    shop=shop,
                    payload=raw,
                    format=format,
                    code=error.code,
                    detail=error.detail,
                    received_at=received_at,
                )
            )
            continue
        _apply_request_context(event, shop=shop, request=request)
        valid.append(event)

    with transaction.atomic():
        inserted = events_insert(shop_id=shop.pk, events=valid, received_at=received_at)
        if rejected_rows:
            RejectedEvent.objects.bulk_create(rejected_rows)
        if inserted:
            transaction.on_commit(lambda: events_process_schedule(shop_id=shop.pk))
    result.accepted = inserted
    result.duplicates = len(valid) - inserted
    return result


def _apply_request_context(event: EventIn, *, shop: Shop, request: RequestContext) -> None:
    if event.ip is None:
        event.ip = request.ip
    if event.ip and shop.is_ip_anonymized:
        event.ip = anonymize_ip(event.ip)
    if not event.user_agent:
        event.user_agent = request.user_agent[:512]
    if not event.country:
        event.country = request.country


def rejected_event_replay(*, rejected: RejectedEvent, now: datetime) -> IngestResult:
    """Run a rejected payload through ingestion again (after a fix in the validator or data)."""
    result = events_ingest(
        shop=rejected.shop, events=[rejected.payload], received_at=now, format=rejected.format
    )
    if not result.rejected:
        # The new rejection row (if any) replaces this one; a success marks this one replayed.
        rejected.replayed_at = now
        rejected.save(update_fields=["replayed_at"])
    return result


def rejected_events_prune(*, now: datetime, retention_days: int) -> int:
    cutoff = now - timedelta(days=retention_days)
    deleted, _ = RejectedEvent.objects.filter(received_at__lt=cutoff).delete()
    return deleted


# --- Processing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessResult:
    processed: int
    position: int
    has_more: bool


def watermark_name(shop_id: int) -> str:
    return f"events:{shop_id}"


def events_process(*, shop_id: int, now: datetime, batch_size: int) -> ProcessResult:
    """Process the next batch of a shop's events after its watermark, then advance it.

    The watermark row is locked for the whole batch, so workers racing on one shop take turns
    and a retried batch starts again from the last committed position. Events younger than
    PIPELINE_SETTLE_SECONDS wait: an insert still committing may hold a lower id.
    """
    from django.conf import settings

    settled_before = now - timedelta(seconds=settings.PIPELINE_SETTLE_SECONDS)
    with transaction.atomic():
        watermark, _ = PipelineWatermark.objects.get_or_create(name=watermark_name(shop_id))
        watermark = PipelineWatermark.objects.select_for_update().get(pk=watermark.pk)
        ids = list(
            Event.objects.filter(
                shop_id=shop_id, id__gt=watermark.position, received_at__lt=settled_before
            )
            .order_by("id")
            .values_list("id", flat=True)[: batch_size + 1]
        )
        has_more = len(ids) > batch_size
        ids = ids[:batch_size]
        if ids:
            watermark.position = ids[-1]
            watermark.save(update_fields=["position", "updated_at"])
    return ProcessResult(processed=len(ids), position=watermark.position, has_more=has_more)


def shops_with_backlog(*, now: datetime) -> list[int]:
    """Ids of shops that have settled events beyond their watermark."""
    from django.conf import settings

    settled_before = now - timedelta(seconds=settings.PIPELINE_SETTLE_SECONDS)
    positions = {
        w.name: w.position for w in PipelineWatermark.objects.filter(name__startswith="events:")
    }
    backlog = []
    for shop_id in Shop.objects.filter(is_active=True).values_list("id", flat=True):
        position = positions.get(watermark_name(shop_id), 0)
        if Event.objects.filter(
            shop_id=shop_id, id__gt=position, received_at__lt=settled_before
        ).exists():
            backlog.append(shop_id)
    return backlog


# --- Shopify --------------------------------------------------------------------------------------
# Webhooks are stored on receipt (WebhookDelivery, unique per shop and X-Shopify-Webhook-Id) and
# processed by a Celery task, so Shopify gets its answer fast and a repeated delivery runs once.
# Payload parsing is pure and lives in events/shopify.py.


@dataclass(frozen=True, slots=True)
class WebhookReceived:
    delivery: WebhookDelivery
    is_duplicate: bool


def shopify_webhook_receive(
    *, shop: Shop, webhook_id: str, topic: str, body: bytes, received_at: datetime
) -> WebhookReceived:
    """Store a verified delivery and enqueue its processing; a repeated webhook id is a no-op."""
    try:
        payload = shopify.payload_parse(body)
    except shopify.PayloadInvalid as error:
        raise ApplicationError(str(error), code="malformed_json") from None
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                shop=shop,
                webhook_id=webhook_id[:128],
                topic=topic[:64],
                payload=payload,
                received_at=received_at,
                customer_id=shopify.customer_id_of(topic, payload),
            )
            transaction.on_commit(lambda: shopify_webhook_schedule(delivery_id=delivery.pk))
    except IntegrityError:
        existing = WebhookDelivery.objects.get(shop=shop, webhook_id=webhook_id[:128])
        return WebhookReceived(delivery=existing, is_duplicate=True)
    return WebhookReceived(delivery=delivery, is_duplicate=False)


def shopify_webhook_schedule(*, delivery_id: int) -> None:
    from events.tasks import shopify_webhook_process_task

    try:
        shopify_webhook_process_task.delay(delivery_id)
    except BrokerError:
        # The delivery is durable; shopify_webhooks_sweep_task processes it once the broker is back.
        logger.warning("broker unavailable; webhook delivery %s waits for the sweep", delivery_id)


def shopify_webhook_process(*, delivery_id: int, now: datetime) -> None:
    """Apply one stored delivery. Runs once: the row is locked and marked processed."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update()
            .select_related("shop")
            .filter(pk=delivery_id, processed_at__isnull=True)
            .first()
        )
        if delivery is None:
            return
        try:
            with transaction.atomic():
                _shopify_topic_apply(delivery=delivery, now=now)
        except shopify.PayloadInvalid as error:
            # Bad data does not get better on retry: record why and move on.
            delivery.error = str(error)[:1024]
        if delivery.topic in shopify.PRIVACY_TOPICS:
            # Keep no email or phone from a privacy request: the PrivacyRequest row is the record.
            delivery.payload = {"customer_id": shopify.customer_id_of("", delivery.payload)}
        delivery.processed_at = now
        delivery.save(update_fields=["processed_at", "error", "payload"])


def _shopify_topic_apply(*, delivery: WebhookDelivery, now: datetime) -> None:
    shop, topic, payload = delivery.shop, delivery.topic, delivery.payload
    if topic in shopify.ORDER_TOPICS:
        shopify_order_upsert(shop=shop, order=shopify.order_parse(payload), now=now)
    elif topic == "orders/cancelled":
        shopify_order_upsert(
            shop=shop, order=shopify.order_parse(payload), now=now, emits_purchase=False
        )
    elif topic == "refunds/create":
        shopify_refund_upsert(shop=shop, refund=shopify.refund_parse(payload))
    elif topic in shopify.CHECKOUT_TOPICS or topic in shopify.CART_TOPICS:
        kind = Checkout.Kind.CHECKOUT if topic in shopify.CHECKOUT_TOPICS else Checkout.Kind.CART
        shopify_checkout_upsert(shop=shop, checkout=shopify.checkout_parse(payload, kind=kind))
    elif topic in shopify.CUSTOMER_TOPICS:
        shopify_customer_identify(shop=shop, customer=shopify.customer_parse(payload), now=now)
    elif topic in shopify.PRODUCT_TOPICS:
        shopify_product_upsert(
            shop=shop, product=shopify.product_parse(payload, shop_domain=shop.domain), now=now
        )
    elif topic == "app/uninstalled":
        shopify_shop_uninstall(shop=shop, now=now)
    elif topic == "customers/data_request":
        shopify_customer_export(shop=shop, subject=shopify.privacy_subject_parse(payload), now=now)
    elif topic == "customers/redact":
        shopify_customer_redact(shop=shop, subject=shopify.privacy_subject_parse(payload), now=now)
    elif topic == "shop/redact":
        shopify_shop_redact(shop=shop, keep_delivery_id=delivery.pk, now=now)
    else:
        delivery.error = f"topic {topic!r} is not handled"


def shopify_pseudo_anonymous_id(*, customer_id: str, order_id: str = "") -> str:
    """An anonymous id for server-side events with no browser id: per customer, else per order.

    Events need an identity; the identity pipeline joins these to the browser's person through
    the shopify_customer_id / email_hash properties.
    """
    return f"shopify-customer-{customer_id}" if customer_id else f"shopify-order-{order_id}"


def _anonymous_id_for_cart(*, shop: Shop, cart_token: str) -> str:
    if not cart_token:
        return ""
    return (
        Checkout.objects.filter(shop=shop, cart_token=cart_token)
        .exclude(anonymous_id="")
        .order_by("-updated_at")
        .values_list("anonymous_id", flat=True)
        .first()
        or ""
    )


def shopify_order_upsert(
    *, shop: Shop, order: shopify.OrderIn, now: datetime, emits_purchase: bool = True
) -> Order:
    """Create or update an order with its lines; emit its purchase event once per order."""
    anonymous_id = order.anonymous_id or _anonymous_id_for_cart(
        shop=shop, cart_token=order.cart_token
    )
    existing = Order.objects.select_for_update().filter(shop=shop, order_id=order.order_id).first()
    row = existing or Order(shop=shop, order_id=order.order_id, source=Order.Source.SHOPIFY)
    row.anonymous_id = anonymous_id or row.anonymous_id
    row.placed_at = order.placed_at
    row.currency = order.currency
    row.total = order.total
    row.is_cancelled = order.cancelled_at is not None
    row.cancelled_at = order.cancelled_at
    row.country = order.country
    row.properties = {
        **row.properties,
        "shopify_customer_id": order.customer_id,
        "email_hash": order.email_hash,
        "cart_token": order.cart_token,
        "checkout_token": order.checkout_token,
    }
    row.save()
    OrderLine.objects.filter(order=row).delete()
    OrderLine.objects.bulk_create(
        OrderLine(
            order=row,
            product_id=line.product_id,
            sku=line.sku,
            name=line.name,
            quantity=line.quantity,
            unit_price=line.unit_price,
        )
        for line in order.lines
    )
    Refund.objects.filter(shop=shop, source_order_id=order.order_id, order__isnull=True).update(
        order=row
    )
    _order_refunded_amount_refresh(order=row)
    Checkout.objects.filter(shop=shop, completed_at__isnull=True).filter(
        Q(kind=Checkout.Kind.CHECKOUT, token=order.checkout_token or None)
        | Q(kind=Checkout.Kind.CART, token=order.cart_token or None)
    ).update(completed_at=order.placed_at)
    if emits_purchase:
        event = {
            # Deterministic: orders/create, /paid and /updated all carry the same order.
            "event_id": f"shopify-order-{order.order_id}",
            "type": "purchase",
            "anonymous_id": anonymous_id
            or shopify_pseudo_anonymous_id(customer_id=order.customer_id, order_id=order.order_id),
            "timestamp": order.placed_at.isoformat(),
            "order": {
                "id": order.order_id,
                "revenue": str(order.total),
                "currency": order.currency,
            },
            "properties": {
                "source": "shopify",
                "shopify_customer_id": order.customer_id,
                "email_hash": order.email_hash,
            },
        }
        events_ingest(shop=shop, events=[event], received_at=now)
    return row


def _order_refunded_amount_refresh(*, order: Order) -> None:
    total = Refund.objects.filter(order=order).aggregate(total=Sum("amount"))["total"]
    order.refunded_amount = total or Decimal("0.00")
    order.save(update_fields=["refunded_amount", "updated_at"])


def shopify_refund_upsert(*, shop: Shop, refund: shopify.RefundIn) -> Refund:
    """Store a refund; the order's refunded_amount is the sum of its refunds (net revenue)."""
    order = Order.objects.filter(shop=shop, order_id=refund.order_id).first()
    row, _ = Refund.objects.update_or_create(
        shop=shop,
        refund_id=refund.refund_id,
        defaults={
            "source_order_id": refund.order_id,
            "order": order,
            "amount": refund.amount,
            "refunded_at": refund.refunded_at,
        },
    )
    if order is not None:
        _order_refunded_amount_refresh(order=order)
    return row


def shopify_checkout_upsert(*, shop: Shop, checkout: shopify.CheckoutIn) -> Checkout:
    existing = (
        Checkout.objects.select_for_update()
        .filter(shop=shop, kind=checkout.kind, token=checkout.token)
        .first()
    )
    row = existing or Checkout(shop=shop, kind=checkout.kind, token=checkout.token)
    row.cart_token = checkout.cart_token or row.cart_token
    row.anonymous_id = (
        checkout.anonymous_id
        or row.anonymous_id
        or _anonymous_id_for_cart(shop=shop, cart_token=checkout.cart_token)
    )
    row.email_hash = checkout.email_hash or row.email_hash
    row.total = checkout.total
    row.currency = checkout.currency
    row.line_items = checkout.line_items
    row.created_at = checkout.created_at
    row.updated_at = checkout.updated_at
    row.completed_at = checkout.completed_at or row.completed_at
    row.save()
    return row


def shopify_customer_identify(
    *, shop: Shop, customer: shopify.CustomerIn, now: datetime
) -> IngestResult:
    """Emit an `identify` event tying the Shopify customer id to the email hash."""
    version = int((customer.updated_at or now).timestamp())
    event = {
        "event_id": f"shopify-customer-{customer.customer_id}-{version}",
        "type": "identify",
        "anonymous_id": shopify_pseudo_anonymous_id(customer_id=customer.customer_id),
        "timestamp": (customer.updated_at or now).isoformat(),
        "properties": {
            "source": "shopify",
            "shopify_customer_id": customer.customer_id,
            "email_hash": customer.email_hash,
            "traits": customer.traits,
        },
    }
    return events_ingest(shop=shop, events=[event], received_at=now)


def shopify_product_upsert(*, shop: Shop, product: shopify.ProductIn, now: datetime) -> Product:
    row, _ = Product.objects.update_or_create(
        shop=shop,
        product_id=product.product_id,
        defaults={
            "title": product.title,
            "category": product.category,
            "vendor": product.vendor,
            "price": product.price,
            "url": product.url,
            "image_url": product.image_url,
            "is_available": product.is_available,
            "updated_at": product.updated_at or now,
        },
    )
    return row


def shopify_shop_uninstall(*, shop: Shop, now: datetime) -> None:
    """The app was removed: stop accepting events; shop/redact erases the data later."""
    shop.is_active = False
    shop.uninstalled_at = now
    shop.save(update_fields=["is_active", "uninstalled_at"])


@dataclass(frozen=True, slots=True)
class PrivacyScope:
    """Every row that belongs to one Shopify customer, as querysets."""

    persons: QuerySet[Person]
    events: QuerySet[Event]
    sessions: QuerySet[Session]
    orders: QuerySet[Order]
    checkouts: QuerySet[Checkout]
    identifiers: QuerySet[PersonIdentifier]
    deliveries: QuerySet[WebhookDelivery]


def _privacy_scope(*, shop: Shop, subject: shopify.PrivacySubject) -> PrivacyScope:
    """The customer's rows, found by Shopify customer id, email hash and the ids they link to."""
    keys = Q(pk__in=[])
    props = Q(pk__in=[])
    if subject.customer_id:
        keys |= Q(kind=IdentifierKind.SHOPIFY_CUSTOMER, value=subject.customer_id)
        props |= Q(properties__shopify_customer_id=subject.customer_id)
    if subject.email_hash:
        keys |= Q(kind=IdentifierKind.EMAIL_HASH, value=subject.email_hash)
        props |= Q(properties__email_hash=subject.email_hash)
    person_ids = list(
        PersonIdentifier.objects.filter(keys, shop=shop).values_list("person_id", flat=True)
    )
    identifiers = PersonIdentifier.objects.filter(shop=shop, person_id__in=person_ids)
    anonymous_ids = set(
        identifiers.filter(kind=IdentifierKind.ANONYMOUS_ID).values_list("value", flat=True)
    )
    user_ids = set(identifiers.filter(kind=IdentifierKind.USER_ID).values_list("value", flat=True))
    orders = Order.objects.filter(
        Q(person_id__in=person_ids) | Q(order_id__in=subject.order_ids) | props, shop=shop
    )
    # The browser ids on the customer's orders and checkouts belong to them as well.
    anonymous_ids |= set(orders.exclude(anonymous_id="").values_list("anonymous_id", flat=True))
    if subject.customer_id:
        anonymous_ids.add(shopify_pseudo_anonymous_id(customer_id=subject.customer_id))
    checkout_match = Q(person_id__in=person_ids) | Q(anonymous_id__in=anonymous_ids)
    if subject.email_hash:
        checkout_match |= Q(email_hash=subject.email_hash)
    checkouts = Checkout.objects.filter(checkout_match, shop=shop)
    anonymous_ids |= set(checkouts.exclude(anonymous_id="").values_list("anonymous_id", flat=True))
    events = Event.objects.filter(
        Q(person_id__in=person_ids)
        | Q(anonymous_id__in=anonymous_ids)
        | Q(user_id__in=user_ids)
        | props,
        shop=shop,
    )
    return PrivacyScope(
        persons=Person.objects.filter(shop=shop, pk__in=person_ids),
        events=events,
        sessions=Session.objects.filter(shop=shop, person_id__in=person_ids),
        orders=orders,
        checkouts=checkouts,
        identifiers=identifiers,
        deliveries=WebhookDelivery.objects.filter(
            shop=shop, customer_id=subject.customer_id or None
        ),
    )


def _deleted(queryset: QuerySet) -> int:
    """Delete and count the queryset's own rows (Django's total includes cascaded children)."""
    _, per_model = queryset.delete()
    return per_model.get(queryset.model._meta.label, 0)


def shopify_customer_export(
    *, shop: Shop, subject: shopify.PrivacySubject, now: datetime
) -> PrivacyRequest:
    """customers/data_request: collect everything stored about the customer into one export."""
    scope = _privacy_scope(shop=shop, subject=subject)
    orders = list(scope.orders.prefetch_related("lines", "refunds"))
    export = {
        "shop": shop.domain,
        "shopify_customer_id": subject.customer_id,
        "exported_at": now,
        "persons": list(scope.persons.values("id", "user_id", "first_seen_at", "traits")),
        "identifiers": list(scope.identifiers.values("person_id", "kind", "value")),
        "events": list(
            scope.events.order_by("occurred_at").values(
                "event_id",
                "type",
                "occurred_at",
                "url",
                "referrer",
                "title",
                "product_id",
                "order_id",
                "revenue",
                "currency",
                "anonymous_id",
                "user_id",
                "properties",
            )
        ),
        "sessions": list(scope.sessions.values("id", "started_at", "ended_at", "entry_url")),
        "orders": [
            {
                "order_id": o.order_id,
                "placed_at": o.placed_at,
                "currency": o.currency,
                "total": o.total,
                "refunded_amount": o.refunded_amount,
                "is_cancelled": o.is_cancelled,
                "lines": [
                    {
                        "product_id": li.product_id,
                        "sku": li.sku,
                        "name": li.name,
                        "quantity": li.quantity,
                        "unit_price": li.unit_price,
                    }
                    for li in o.lines.all()
                ],
            }
            for o in orders
        ],
        "checkouts": list(
            scope.checkouts.values(
                "kind", "token", "total", "currency", "created_at", "completed_at"
            )
        ),
    }
    return PrivacyRequest.objects.create(
        shop=shop,
        kind=PrivacyRequest.Kind.DATA_REQUEST,
        shopify_customer_id=subject.customer_id,
        email_hash=subject.email_hash,
        export=export,
        requested_at=now,
        completed_at=now,
    )


def shopify_customer_redact(
    *, shop: Shop, subject: shopify.PrivacySubject, now: datetime
) -> PrivacyRequest:
    """customers/redact: erase the customer's events, sessions, orders, checkouts and identity."""
    scope = _privacy_scope(shop=shop, subject=subject)
    order_ids = list(scope.orders.values_list("pk", flat=True))
    erased = {
        "events": _deleted(scope.events),
        "sessions": _deleted(scope.sessions),
        "refunds": _deleted(Refund.objects.filter(order_id__in=order_ids)),
        "orders": _deleted(Order.objects.filter(pk__in=order_ids)),
        "checkouts": _deleted(scope.checkouts),
        "identifiers": _deleted(scope.identifiers),
        "persons": _deleted(scope.persons),
        "webhook_deliveries": _deleted(scope.deliveries),
        "exports": _deleted(
            PrivacyRequest.objects.filter(
                shop=shop,
                kind=PrivacyRequest.Kind.DATA_REQUEST,
                shopify_customer_id=subject.customer_id or None,
            )
        ),
    }
    return PrivacyRequest.objects.create(
        shop=shop,
        kind=PrivacyRequest.Kind.CUSTOMER_REDACT,
        shopify_customer_id=subject.customer_id,
        erased=erased,
        requested_at=now,
        completed_at=now,
    )


def shopify_shop_redact(*, shop: Shop, keep_delivery_id: int, now: datetime) -> PrivacyRequest:
    """shop/redact: erase all of the shop's data; the Shop row stays, inactive, as the record."""
    erased = {
        "events": _deleted(Event.objects.filter(shop=shop)),
        "rejected_events": _deleted(RejectedEvent.objects.filter(shop=shop)),
        "sessions": _deleted(Session.objects.filter(shop=shop)),
        "refunds": _deleted(Refund.objects.filter(shop=shop)),
        "orders": _deleted(Order.objects.filter(shop=shop)),
        "checkouts": _deleted(Checkout.objects.filter(shop=shop)),
        "products": _deleted(Product.objects.filter(shop=shop)),
        "identifiers": _deleted(PersonIdentifier.objects.filter(shop=shop)),
        "persons": _deleted(Person.objects.filter(shop=shop)),
        "webhook_deliveries": _deleted(
            WebhookDelivery.objects.filter(shop=shop).exclude(pk=keep_delivery_id)
        ),
        "privacy_requests": _deleted(PrivacyRequest.objects.filter(shop=shop)),
    }
    PipelineWatermark.objects.filter(name=watermark_name(shop.pk)).delete()
    shop.is_active = False
    shop.save(update_fields=["is_active"])
    return PrivacyRequest.objects.create(
        shop=shop,
        kind=PrivacyRequest.Kind.SHOP_REDACT,
        erased=erased,
        requested_at=now,
        completed_at=now,
    )


def shopify_webhooks_sweep(*, now: datetime, older_than_seconds: int = 60) -> int:
    """Process deliveries whose task was lost (broker down, worker killed); returns how many."""
    cutoff = now - timedelta(seconds=older_than_seconds)
    ids = list(
        WebhookDelivery.objects.filter(processed_at__isnull=True, received_at__lt=cutoff)
        .order_by("received_at")
        .values_list("pk", flat=True)[:500]
    )
    for delivery_id in ids:
        shopify_webhook_process(delivery_id=delivery_id, now=now)
    return len(ids)
