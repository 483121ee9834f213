"""Every write of the events app: shops, ingestion, rejected events."""

import ipaddress
import logging
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from kombu.exceptions import OperationalError as BrokerError
from rest_framework.authtoken.models import Token

from events.importers import ImportItem, OrderIn, RefundIn
from events.models import (
    Event,
    EventFormat,
    Order,
    OrderLine,
    PipelineWatermark,
    Refund,
    RejectedEvent,
    Shop,
    ShopMembership,
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
    if timezone not in zoneinfo.available_timezones():
        raise ValidationError({"timezone": [f"Unknown time zone {timezone!r}."]})
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


# --- Import of historical data ----------------------------------------------------------------


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
    new = [r for r in refunds if r.refund_id not in existing]
    Refund.objects.bulk_create(
        [
            Refund(shop=shop, refund_id=r.refund_id, amount=r.amount, refunded_at=r.refunded_at)
            for r in new
        ],
        ignore_conflicts=True,
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
