"""Readers for historical data: each turns a file into a stream of `ImportItem`s.

Readers are pure (no database): they stream the file row by row, so memory stays bounded, and
derive each event id deterministically from the row so that re-running an import stores nothing
twice. Events come out in clickserver's own raw format and go through the normal validator.
"""

import csv
import gzip
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import orjson

from events.segment import segment_to_event

TAOBAO_TYPES = {
    "pv": "product_view",
    "cart": "add_to_cart",
    "fav": "add_to_wishlist",
    "buy": "purchase",
}
REES46_TYPES = {
    "view": "product_view",
    "cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "purchase": "purchase",
}
FORMATS = ("taobao", "rees46", "online_retail", "segment", "csv")


@dataclass(slots=True)
class OrderIn:
    order_id: str
    placed_at: datetime
    user_id: str
    country: str
    total: Decimal
    lines: list[tuple[str, str, int, Decimal]] = field(default_factory=list)


@dataclass(slots=True)
class RefundIn:
    refund_id: str
    refunded_at: datetime
    amount: Decimal
    # (product id, name, units, amount) taken back; order lines are (code, name, units, price).
    lines: list[tuple[str, str, int, Decimal]] = field(default_factory=list)


@dataclass(slots=True)
class ImportItem:
    """One unit read from the file: an event, an order (with its event) or a refund, or a skip."""

    event: Any = None
    order: OrderIn | None = None
    refund: RefundIn | None = None
    skipped: str = ""
    rows: int = 1  # how many rows of the file this item stands for


def open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def row_event_id(fmt: str, line_no: int, raw: str) -> str:
    """Deterministic id: the same row of the same file always gets the same id."""
    return hashlib.sha1(f"{fmt}:{line_no}:{raw}".encode()).hexdigest()[:32]


def _unix(seconds: str) -> str:
    return datetime.fromtimestamp(int(seconds), tz=UTC).isoformat()


def read_taobao(handle: IO[str]) -> Iterator[ImportItem]:
    """Alibaba UserBehavior: user_id,item_id,category_id,behavior_type,timestamp (no header)."""
    for line_no, line in enumerate(handle, start=1):
        raw = line.strip()
        parts = raw.split(",")
        if line_no == 1 and parts[0] == "user_id":
            continue
        if len(parts) != 5 or parts[3] not in TAOBAO_TYPES or not parts[4].isdigit():
            yield ImportItem(event={"_row": raw})
            continue
        user, item, category, behavior, stamp = parts
        yield ImportItem(
            event={
                "event_id": row_event_id("taobao", line_no, raw),
                "type": TAOBAO_TYPES[behavior],
                "user_id": user,
                "timestamp": _unix(stamp),
                "product": {"id": item, "category": category},
            }
        )


def read_rees46(handle: IO[str]) -> Iterator[ImportItem]:
    """REES46 multi-category store: event_time,event_type,product_id,...,user_id,user_session."""
    reader = csv.DictReader(handle)
    for line_no, row in enumerate(reader, start=2):
        raw = ",".join(row.get(k) or "" for k in reader.fieldnames or [])
        event_type = REES46_TYPES.get(row.get("event_type") or "")
        event: dict[str, Any] = {
            "event_id": row_event_id("rees46", line_no, raw),
            "type": event_type or row.get("event_type"),
            "user_id": row.get("user_id"),
            "timestamp": (row.get("event_time") or "").replace(" UTC", "+00:00"),
            "product": {
                "id": row.get("product_id"),
                "category": row.get("category_code") or row.get("category_id"),
                "price": row.get("price") or None,
            },
            "properties": {
                "brand": row.get("brand") or "",
                "user_session": row.get("user_session"),
            },
        }
        if event_type == "purchase":
            event["order"] = {"revenue": row.get("price") or None}
        yield ImportItem(event=event)


def _retail_time(value: str, tz: ZoneInfo) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=tz).astimezone(UTC)


def online_retail_orders(handle: IO[str], tz: ZoneInfo) -> dict[str, OrderIn]:
    """First pass: each sales invoice's total, first line time, customer and country.

    A numeric InvoiceNo is an order; its lines with Quantity <= 0 are stock adjustments, not
    sales. Totals need the whole file because one invoice can appear in two separate runs.
    """
    orders: dict[str, OrderIn] = {}
    for row in csv.DictReader(handle):
        invoice = row["InvoiceNo"]
        if not invoice[:1].isdigit():
            continue
        order = orders.get(invoice)
        if order is None:
            customer = (row["CustomerID"] or "").removesuffix(".0")
            order = orders[invoice] = OrderIn(
                order_id=invoice,
                placed_at=_retail_time(row["InvoiceDate"], tz),
                user_id=customer,
                country=row["Country"],
                total=Decimal(0),
            )
        quantity = int(row["Quantity"])
        if quantity > 0:
            order.total += quantity * Decimal(row["UnitPrice"])
    return orders


def read_online_retail(
    handle: IO[str], orders: dict[str, OrderIn], tz: ZoneInfo
) -> Iterator[ImportItem]:
    """Second pass: orders with their lines and purchase event, refunds, skips.

    `C` invoices are refunds on their own date, each line a refund line (the StockCode's units
    and value taken back); `A` invoices are accounting adjustments (skipped).
    """
    refunds: dict[str, RefundIn] = {}
    emitted: set[str] = set()
    current: OrderIn | None = None

    def flush() -> Iterator[ImportItem]:
        if current is None:
            return
        first = current.order_id not in emitted
        emitted.add(current.order_id)
        yield ImportItem(
            order=current,
            event=_retail_purchase_event(current) if first else None,
            rows=len(current.lines),
        )

    for row in csv.DictReader(handle):
        invoice = row["InvoiceNo"]
        quantity = int(row["Quantity"])
        if invoice.startswith("A"):
            yield ImportItem(skipped="accounting_adjustment")
            continue
        if invoice.startswith("C"):
            amount = -quantity * Decimal(row["UnitPrice"])
            refund = refunds.get(invoice)
            if refund is None:
                refund = refunds[invoice] = RefundIn(
                    invoice, _retail_time(row["InvoiceDate"], tz), Decimal(0)
                )
            refund.amount += amount
            refund.lines.append((row["StockCode"], row["Description"] or "", -quantity, amount))
            yield ImportItem()  # a refund line: counted now, stored with its invoice at the end
            continue
        if current is None or current.order_id != invoice:
            yield from flush()
            whole = orders[invoice]
            current = OrderIn(
                order_id=invoice,
                placed_at=whole.placed_at,
                user_id=whole.user_id,
                country=whole.country,
                total=whole.total,
            )
        if quantity <= 0:
            yield ImportItem(skipped="stock_adjustment")
            continue
        current.lines.append(
            (row["StockCode"], row["Description"] or "", quantity, Decimal(row["UnitPrice"]))
        )
    yield from flush()
    for refund in refunds.values():
        yield ImportItem(refund=refund, rows=0)


def _retail_purchase_event(order: OrderIn) -> dict[str, Any]:
    identity = (
        {"user_id": order.user_id}
        if order.user_id
        else {"anonymous_id": f"invoice-{order.order_id}"}
    )
    return {
        "event_id": f"online_retail:order:{order.order_id}",
        "type": "purchase",
        **identity,
        "timestamp": order.placed_at.isoformat(),
        "order": {"id": order.order_id, "revenue": str(order.total)},
        "properties": {"country": order.country},
    }


def read_segment(handle: IO[str]) -> Iterator[ImportItem]:
    """JSON Lines of Segment messages (as exported by Segment or RudderStack)."""
    for line_no, line in enumerate(handle, start=1):
        raw = line.strip()
        if not raw:
            continue
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            yield ImportItem(event={"_row": raw})
            continue
        event = segment_to_event(message)
        if isinstance(event, dict) and not event.get("event_id"):
            event["event_id"] = row_event_id("segment", line_no, raw)
        yield ImportItem(event=event)


def read_mapped_csv(handle: IO[str], mapping: dict[str, Any]) -> Iterator[ImportItem]:
    """A CSV described by a mapping file (see docs/import.md).

    mapping = {"columns": {"type": "event", "anonymous_id": "visitor", "timestamp": "ts",
               "product.id": "sku", ...}, "types": {"view": "product_view"}, "delimiter": ","}
    """
    columns: dict[str, str] = mapping.get("columns", {})
    types: dict[str, str] = mapping.get("types", {})
    reader = csv.DictReader(handle, delimiter=mapping.get("delimiter", ","))
    for line_no, row in enumerate(reader, start=2):
        raw = "\x1f".join(row.get(k) or "" for k in reader.fieldnames or [])
        event: dict[str, Any] = {}
        for target, source in columns.items():
            value = row.get(source)
            if value in (None, ""):
                continue
            if "." in target:
                group, key = target.split(".", 1)
                event.setdefault(group, {})[key] = value
            else:
                event[target] = value
        if "type" in event:
            event["type"] = types.get(event["type"], event["type"])
        if "timestamp" in event and str(event["timestamp"]).isdigit():
            event["timestamp"] = int(event["timestamp"])
        event.setdefault("event_id", row_event_id("csv", line_no, raw))
        yield ImportItem(event=event)
