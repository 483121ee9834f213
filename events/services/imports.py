"""Import of historical data: a stream of events, orders and refunds stored in chunks."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from events.importers import ImportItem, OrderIn, RefundIn
from events.models import Order, OrderLine, Refund, RefundLine, Shop
from events.services.ingest import events_ingest


@dataclass(slots=True)
class ImportSummary:
    rows: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    refunds: int = 0


def _orders_store(*, shop: Shop, orders: list[OrderIn], created: set[str]) -> int:
    """Insert new orders and their sale lines; an order seen in an earlier run keeps its lines.

    `created` remembers the orders this run created, so an invoice whose lines come in two
    separate runs of the file gets all of them, while a re-run of the import adds nothing.
    """
    ids = [o.order_id for o in orders]
    existing = set(
        Order.objects.filter(shop=shop, order_id__in=ids).values_list("order_id", flat=True)
    )
    new = list({o.order_id: o for o in orders if o.order_id not in existing}.values())
    Order.objects.bulk_create(
        [
            Order(
                shop=shop,
                order_id=o.order_id,
                user_id=o.user_id,
                placed_at=o.placed_at,
                currency=shop.currency,
                total=o.total,
                country=o.country[:2] if len(o.country) == 2 else "",
                source=Order.Source.IMPORT,
                properties={"country_name": o.country},
            )
            for o in new
        ],
        ignore_conflicts=True,
    )
    created.update(o.order_id for o in new)
    with_lines = [o for o in orders if o.order_id in created and o.lines]
    pks = dict(
        Order.objects.filter(shop=shop, order_id__in=[o.order_id for o in with_lines]).values_list(
            "order_id", "pk"
        )
    )
    OrderLine.objects.bulk_create(
        [
            OrderLine(
                order_id=pks[o.order_id],
                product_id=code,
                sku=code,
                name=name[:512],
                quantity=quantity,
                unit_price=price,
            )
            for o in with_lines
            for code, name, quantity, price in o.lines
        ]
    )
    return len(new)


def _refunds_store(*, shop: Shop, refunds: list[RefundIn]) -> int:
    existing = set(
        Refund.objects.filter(shop=shop, refund_id__in=[r.refund_id for r in refunds]).values_list(
            "refund_id", flat=True
        )
    )
    new = list({r.refund_id: r for r in refunds if r.refund_id not in existing}.values())
    Refund.objects.bulk_create(
        [
            Refund(shop=shop, refund_id=r.refund_id, amount=r.amount, refunded_at=r.refunded_at)
            for r in new
        ],
        ignore_conflicts=True,
    )
    # Ids read back (MariaDB's bulk insert returns none); only refunds this call created get lines.
    pks = dict(
        Refund.objects.filter(
            shop=shop, refund_id__in=[r.refund_id for r in new if r.lines], lines__isnull=True
        ).values_list("refund_id", "pk")
    )
    RefundLine.objects.bulk_create(
        [
            RefundLine(
                refund_id=pks[r.refund_id],
                product_id=code[:128],
                sku=code[:128],
                name=name[:512],
                quantity=quantity,
                amount=amount,
            )
            for r in new
            if r.refund_id in pks
            for code, name, quantity, amount in r.lines
        ]
    )
    return len(new)


def events_import(
    *, shop: Shop, items: Iterable[ImportItem], now: datetime, chunk_size: int = 2000
) -> ImportSummary:
    """Store a stream of imported items in chunks; safe to re-run on the same file."""
    summary = ImportSummary()
    events: list[Any] = []
    orders: list[OrderIn] = []
    refunds: list[RefundIn] = []
    created_orders: set[str] = set()

    def flush() -> None:
        with transaction.atomic():
            if orders:
                summary.orders += _orders_store(shop=shop, orders=orders, created=created_orders)
            if refunds:
                summary.refunds += _refunds_store(shop=shop, refunds=refunds)
            if events:
                result = events_ingest(shop=shop, events=events, received_at=now)
                summary.stored += result.accepted
                summary.duplicates += result.duplicates
                for rejection in result.rejected:
                    summary.rejected[rejection.code] = summary.rejected.get(rejection.code, 0) + 1
        events.clear()
        orders.clear()
        refunds.clear()

    for item in items:
        summary.rows += item.rows
        if item.skipped:
            summary.skipped[item.skipped] = summary.skipped.get(item.skipped, 0) + 1
        if item.event is not None:
            events.append(item.event)
        if item.order is not None:
            orders.append(item.order)
        if item.refund is not None:
            refunds.append(item.refund)
        if len(events) >= chunk_size or len(orders) >= chunk_size or len(refunds) >= chunk_size:
            flush()
    flush()
    return summary
