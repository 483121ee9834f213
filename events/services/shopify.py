"""Shopify webhooks: store a delivery on receipt, then apply its topic in a Celery task.

Webhooks are stored on receipt (WebhookDelivery, unique per shop and X-Shopify-Webhook-Id) and
processed by a Celery task, so Shopify gets its answer fast and a repeated delivery runs once.
Payload parsing is pure and lives in events/shopify.py; the privacy topics in privacy.py and
erasure.py.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from kombu.exceptions import OperationalError as BrokerError

from clickserver.errors import ApplicationError
from events import shopify
from events.models import (
    Checkout,
    Order,
    OrderLine,
    Product,
    Refund,
    RefundLine,
    Shop,
    WebhookDelivery,
)
from events.services import erasure
from events.services.ingest import IngestResult, events_ingest
from events.services.privacy import shopify_customer_export
from events.shopify import pseudo_anonymous_id

logger = logging.getLogger(__name__)


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
        subject = shopify.privacy_subject_parse(payload)
        erasure.shopify_customer_erase(
            shop=shop,
            customer_id=subject.customer_id,
            email_hash=subject.email_hash,
            order_ids=subject.order_ids,
            now=now,
        )
    elif topic == "shop/redact":
        erasure.shop_erase(shop=shop, keep_delivery_id=delivery.pk, now=now)
    else:
        delivery.error = f"topic {topic!r} is not handled"


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
        event = _purchase_event(order=order, anonymous_id=anonymous_id)
        events_ingest(shop=shop, events=[event], received_at=now)
    return row


def _purchase_event(*, order: shopify.OrderIn, anonymous_id: str) -> dict[str, Any]:
    """The order's purchase event, in the ingestion format."""
    return {
        # Deterministic: orders/create, /paid and /updated all carry the same order.
        "event_id": f"shopify-order-{order.order_id}",
        "type": "purchase",
        "anonymous_id": anonymous_id
        or pseudo_anonymous_id(customer_id=order.customer_id, order_id=order.order_id),
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
    # A redelivered webhook carries the same lines: replaced, never added twice.
    RefundLine.objects.filter(refund=row).delete()
    RefundLine.objects.bulk_create(
        RefundLine(
            refund=row,
            product_id=line.product_id,
            sku=line.sku,
            name=line.name,
            quantity=line.quantity,
            amount=line.amount,
        )
        for line in refund.lines
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
        "anonymous_id": pseudo_anonymous_id(customer_id=customer.customer_id),
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
