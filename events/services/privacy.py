"""Shopify's customers/data_request: find every row of one customer and export it."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from events import shopify
from events.models import (
    Checkout,
    Event,
    IdentifierKind,
    Order,
    Person,
    PersonIdentifier,
    PrivacyRequest,
    Session,
    Shop,
    WebhookDelivery,
)
from events.shopify import pseudo_anonymous_id


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
        anonymous_ids.add(pseudo_anonymous_id(customer_id=subject.customer_id))
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


def shopify_customer_export(
    *, shop: Shop, subject: shopify.PrivacySubject, now: datetime
) -> PrivacyRequest:
    """customers/data_request: collect everything stored about the customer into one export."""
    scope = _privacy_scope(shop=shop, subject=subject)
    orders = list(scope.orders.prefetch_related("lines", "refunds__lines"))
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
        "orders": [_order_export(o) for o in orders],
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


def _order_export(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "placed_at": order.placed_at,
        "currency": order.currency,
        "total": order.total,
        "refunded_amount": order.refunded_amount,
        "is_cancelled": order.is_cancelled,
        "lines": [
            {
                "product_id": li.product_id,
                "sku": li.sku,
                "name": li.name,
                "quantity": li.quantity,
                "unit_price": li.unit_price,
            }
            for li in order.lines.all()
        ],
        "refunds": [
            {
                "refund_id": refund.refund_id,
                "amount": refund.amount,
                "refunded_at": refund.refunded_at,
                "lines": [
                    {
                        "product_id": line.product_id,
                        "sku": line.sku,
                        "name": line.name,
                        "quantity": line.quantity,
                        "amount": line.amount,
                    }
                    for line in refund.lines.all()
                ],
            }
            for refund in order.refunds.all()
        ],
    }
