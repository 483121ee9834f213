"""Orders from purchase events and refunds from refund events: the pipeline records an Order for
each purchase it processes and a Refund (with its lines) for each refund."""

from decimal import Decimal

from django.db.models import Sum

from events.models import Event, Order, OrderLine, Refund, RefundLine, Shop
from events.validation import REFUND_TYPE


def orders_record_from_purchases(*, shop_id: int, event_ids: list[int]) -> int:
    """Record an Order for each purchase event (snippet, API, Segment) that has none yet.

    Revenue is counted from orders, so a shop that only tracks purchases in the browser still
    has revenue. The order id is the event's order id, or the event id when it carries none.
    An order that already exists (a Shopify webhook, an import, a repeated purchase event) is
    left as it is, apart from gaining the buyer when it had none. Runs after identity, so
    `person_id` is set. A purchase event that names a product (`product.id`, price, quantity)
    gives its new order that line, so units and products sold count tracked orders too.
    """
    purchases = list(
        Event.objects.filter(id__in=event_ids, type="purchase")
        .order_by("id")
        .values_list(
            "event_id", "order_id", "revenue", "currency", "occurred_at", "person_id",
            "anonymous_id", "user_id", "country", "product_id", "product_name",
            "product_price", "product_quantity",
        )
    )  # fmt: skip
    if not purchases:
        return 0
    currency = Shop.objects.filter(pk=shop_id).values_list("currency", flat=True).first() or ""
    orders: dict[str, Order] = {}
    lines: dict[str, OrderLine] = {}
    for (event_id, order_id, revenue, event_currency, occurred_at, person_id, anonymous_id,
         user_id, country, product_id, product_name, price, quantity) in purchases:  # fmt: skip
        key = order_id or f"event:{event_id}"
        if product_id and key not in orders:
            lines[key] = OrderLine(
                product_id=product_id,
                name=product_name,
                quantity=quantity or 1,
                unit_price=price if price is not None else (revenue or 0) / (quantity or 1),
            )
        # The first purchase event of an order describes it; repeats change nothing.
        orders.setdefault(
            key,
            Order(
                shop_id=shop_id,
                order_id=key,
                person_id=person_id,
                anonymous_id=anonymous_id,
                user_id=user_id,
                placed_at=occurred_at,
                currency=event_currency or currency,
                total=revenue or 0,
                country=country,
                source=Order.Source.API,
            ),
        )
    existing = dict(
        Order.objects.filter(shop_id=shop_id, order_id__in=list(orders)).values_list(
            "order_id", "person_id"
        )
    )
    Order.objects.bulk_create(
        [order for key, order in orders.items() if key not in existing], ignore_conflicts=True
    )
    # Only the orders this call created get a line (ids read back: MariaDB's bulk insert
    # returns none); an order that came from Shopify or an import keeps its own lines.
    created = {key for key in orders if key not in existing}
    if lines.keys() & created:
        ids = dict(
            Order.objects.filter(
                shop_id=shop_id, order_id__in=list(lines.keys() & created), lines__isnull=True
            ).values_list("order_id", "id")
        )
        for key, pk in ids.items():
            lines[key].order_id = pk
        OrderLine.objects.bulk_create([lines[key] for key in ids])
    _refunds_link(shop_id=shop_id, order_ids=sorted(created))
    buyers: dict[int, list[str]] = {}
    for key, person_id in existing.items():
        if person_id is None and orders[key].person_id is not None:
            buyers.setdefault(orders[key].person_id, []).append(key)
    for person_id, keys in buyers.items():
        Order.objects.filter(shop_id=shop_id, order_id__in=keys).update(person_id=person_id)
    return len(orders) - len(existing)


def refunds_record_from_events(*, shop_id: int, event_ids: list[int]) -> int:
    """Record a Refund, with its refund lines, for each refund event that has none yet.

    The refund's id is `event:<event id>` (a repeated event is one refund); its order is the
    event's `order.id`, linked when that order is recorded, whose `refunded_amount` becomes the
    sum of its refunds. The amount is the event's `order.revenue`, else the sum of its lines;
    the lines are the validated `products` (events/validation.py), else the event's `product`.
    A refund whose order is not recorded yet keeps the order id (`source_order_id`) and is
    linked when a purchase event records that order (`orders_record_from_purchases`).
    """
    events = list(
        Event.objects.filter(id__in=event_ids, type=REFUND_TYPE)
        .order_by("id")
        .values_list(
            "event_id", "order_id", "revenue", "occurred_at", "properties", "product_id",
            "product_name", "product_price", "product_quantity",
        )
    )  # fmt: skip
    if not events:
        return 0
    refunds: dict[str, Refund] = {}
    lines: dict[str, list[RefundLine]] = {}
    for (event_id, order_id, revenue, occurred_at, properties, product_id, product_name,
         price, quantity) in events:  # fmt: skip
        key = f"event:{event_id}"
        if key in refunds:
            continue
        products = properties.get("products") if isinstance(properties, dict) else None
        if isinstance(products, list) and products:
            lines[key] = [
                RefundLine(
                    product_id=p["id"],
                    sku=p["sku"],
                    name=p["name"],
                    quantity=p["quantity"],
                    amount=Decimal(p["amount"]),
                )
                for p in products
            ]
        elif product_id:
            units = quantity or 1
            lines[key] = [
                RefundLine(
                    product_id=product_id,
                    name=product_name,
                    quantity=units,
                    amount=price * units if price is not None else (revenue or Decimal(0)),
                )
            ]
        amount = (
            revenue
            if revenue is not None
            else sum((line.amount for line in lines.get(key, [])), Decimal(0))
        )
        refunds[key] = Refund(
            shop_id=shop_id,
            refund_id=key,
            source_order_id=order_id,
            amount=amount,
            refunded_at=occurred_at,
        )
    existing = set(
        Refund.objects.filter(shop_id=shop_id, refund_id__in=list(refunds)).values_list(
            "refund_id", flat=True
        )
    )
    new = {key: refund for key, refund in refunds.items() if key not in existing}
    order_ids = {refund.source_order_id for refund in new.values() if refund.source_order_id}
    orders = (
        dict(
            Order.objects.filter(shop_id=shop_id, order_id__in=list(order_ids)).values_list(
                "order_id", "id"
            )
        )
        if order_ids
        else {}
    )
    for refund in new.values():
        refund.order_id = orders.get(refund.source_order_id)
    linked = sorted({refund.order_id for refund in new.values() if refund.order_id is not None})
    Refund.objects.bulk_create(list(new.values()), ignore_conflicts=True)
    # Ids read back (MariaDB's bulk insert returns none): only refunds this call created get lines.
    with_lines = [key for key in new if key in lines]
    if with_lines:
        ids = dict(
            Refund.objects.filter(
                shop_id=shop_id, refund_id__in=with_lines, lines__isnull=True
            ).values_list("refund_id", "id")
        )
        for key, pk in ids.items():
            for line in lines[key]:
                line.refund_id = pk
        RefundLine.objects.bulk_create([line for key in ids for line in lines[key]])
    _refunded_amounts_refresh(order_pks=linked)
    return len(new)


def _refunded_amounts_refresh(*, order_pks: list[int]) -> None:
    """Each order's `refunded_amount` = the sum of its refunds (net revenue)."""
    for pk in order_pks:
        total = Refund.objects.filter(order_id=pk).aggregate(total=Sum("amount"))["total"]
        order = Order(pk=pk, refunded_amount=total or Decimal("0.00"))
        order.save(update_fields=["refunded_amount", "updated_at"])


def _refunds_link(*, shop_id: int, order_ids: list[str]) -> None:
    """Link the refunds that came before these (new) orders, by the order's id at the source."""
    if not order_ids:
        return
    waiting = set(
        Refund.objects.filter(
            shop_id=shop_id, order__isnull=True, source_order_id__in=order_ids
        ).values_list("source_order_id", flat=True)
    )
    if not waiting:
        return
    pks = dict(
        Order.objects.filter(shop_id=shop_id, order_id__in=sorted(waiting)).values_list(
            "order_id", "id"
        )
    )
    for order_id, pk in pks.items():
        Refund.objects.filter(shop_id=shop_id, order__isnull=True, source_order_id=order_id).update(
            order_id=pk
        )
    _refunded_amounts_refresh(order_pks=sorted(pks.values()))
