"""Every write of the events app: shops, ingestion, rejected events."""

import functools
import gc
import ipaddress
import json
import logging
import time
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any

import orjson
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import DatabaseError, DataError, IntegrityError, connection, transaction
from django.db.models import Q, QuerySet, Sum
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from rest_framework.authtoken.models import Token

from clickserver import metrics
from clickserver.chunking import chunks
from clickserver.errors import ApplicationError
from events import erasure, identity, shopify
from events.importers import ImportItem, OrderIn, RefundIn
from events.models import (
    Checkout,
    Event,
    EventFormat,
    IdentifierKind,
    Order,
    OrderLine,
    Person,
    PersonIdentifier,
    PipelineJob,
    PipelineWatermark,
    PrivacyRequest,
    Product,
    Refund,
    RejectedEvent,
    Session,
    Shop,
    ShopMembership,
    WebhookDelivery,
    new_identity_secret,
    new_write_key,
)
from events.segment import segment_to_event
from events.sessionize import (
    MAX_SESSION_LENGTH,
    PURCHASE_TYPE,
    EventRow,
    SessionData,
    order_key,
    sessionize,
)
from events.validation import (
    UTM_FIELDS,
    EventIn,
    EventInvalid,
    InvalidJsonEvent,
    event_validate,
    json_too_deep,
)

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


def shop_rotate_identity_secret(*, shop: Shop) -> Shop:
    """A new identity secret; tokens the shop's server signed with the old one stop working."""
    shop.identity_secret = new_identity_secret()
    shop.save(update_fields=["identity_secret"])
    return shop


# --- Ingestion ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def anonymize_ip(ip: str) -> str:
    """Zero the host part: IPv4 keeps /24, IPv6 keeps /48 (the common analytics convention).

    Memoised (a pure function): every event of a batch usually carries the request's address.
    """
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


_EVENT_COLUMNS = [
    f for f in Event._meta.concrete_fields if f.name not in ("id", "session", "person")
]
_EVENT_NAMES = [f.name for f in _EVENT_COLUMNS]


@functools.cache
def _insert_sql(vendor: str) -> str:
    table = connection.ops.quote_name(Event._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in _EVENT_COLUMNS)
    placeholders = ", ".join(["%s"] * len(_EVENT_COLUMNS))
    if vendor == "mysql":
        # IGNORE is meant to skip only the unique (shop, event_id) duplicates: every field was
        # validated to fit. It would also skip a row that breaks a CHECK (a JSON document too
        # deep, say) in a multi-row statement, so `_insert_mysql` verifies what it skipped.
        return f"INSERT IGNORE INTO {table} ({columns}) VALUES ({placeholders})"
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "
        "ON CONFLICT (shop_id, event_id) DO NOTHING"
    )


def _rows(shop_id: int, events: list[EventIn], received_at: datetime) -> list[tuple[Any, ...]]:
    """`_event_columns` as rows for the driver's executemany (SQLite), with datetimes and
    decimals adapted by the backend, each distinct value once (a batch shares its received_at)."""
    ops = connection.ops
    adapters: dict[str, Callable[[Any], Any]] = {
        "received_at": ops.adapt_datetimefield_value,
        "occurred_at": ops.adapt_datetimefield_value,
        "product_price": lambda value: ops.adapt_decimalfield_value(value, 14, 2),
        "revenue": lambda value: ops.adapt_decimalfield_value(value, 14, 2),
    }
    columns = _event_columns(shop_id, events, received_at)
    for index, name in enumerate(_EVENT_NAMES):
        if adapt := adapters.get(name):
            adapted = {value: adapt(value) for value in set(columns[index]) if value is not None}
            columns[index] = [adapted.get(value) for value in columns[index]]
    return list(zip(*columns, strict=True))


def _event_columns(shop_id: int, events: list[EventIn], received_at: datetime) -> list[list[Any]]:
    """The INSERT's values column by column (`_EVENT_NAMES` order), read straight off the events.

    For `_Literals.columns`, which converts each column's distinct values once: building a row
    per event first cost as much as the conversion.
    """
    count = len(events)
    columns: list[list[Any]] = []
    for name in _EVENT_NAMES:
        if name == "shop":
            columns.append([shop_id] * count)
        elif name == "received_at":
            columns.append([received_at] * count)
        elif name == "properties":
            columns.append(
                [orjson.dumps(e.properties).decode() if e.properties else "{}" for e in events]
            )
        else:
            columns.append(list(map(attrgetter(name), events)))
    return columns


# Rows per ingestion INSERT: a request's limit (500 events, 512 KB) is one statement, far below
# MariaDB's 16 MiB max_allowed_packet.
INSERT_ROWS = 1000


def _insert_mysql(shop_id: int, events: list[EventIn], received_at: datetime) -> int:
    """INSERT IGNORE with inlined literals (`_Literals`: each distinct value escaped once).

    The driver's executemany escapes value by value (about a microsecond each, the largest cost
    of a batch), while a batch repeats most of its values (shop, received_at, empty fields, URL,
    user agent). A request's events (500 at most) are one statement, atomic and durable when it
    returns in autocommit mode; an import's larger chunks are several, committed together.
    """
    prefix = _insert_sql("mysql").split(" VALUES ", 1)[0] + " VALUES "
    literal = _Literals()
    statements = list(chunks(events, INSERT_ROWS))
    inserted = 0
    with (
        transaction.atomic() if len(statements) > 1 else nullcontext(),
        connection.cursor() as cursor,
    ):
        for chunk in statements:
            cursor.execute(prefix + literal.columns(_event_columns(shop_id, chunk, received_at)))
            count = max(cursor.rowcount, 0)
            if count < len(chunk):
                _skipped_rows_check(cursor, shop_id=shop_id, events=chunk)
            inserted += count
    return inserted


def _skipped_rows_check(cursor: Any, *, shop_id: int, events: list[EventIn]) -> None:
    """Raise unless every row that INSERT IGNORE skipped was a duplicate (its event_id stored).

    Costs one indexed query, and only for a statement that skipped rows (a client's retry).
    """
    event_ids = sorted({event.event_id for event in events})
    table = connection.ops.quote_name(Event._meta.db_table)
    stored: set[str] = set()
    for chunk in chunks(event_ids, CHUNK):
        cursor.execute(
            f"SELECT event_id FROM {table} WHERE shop_id = %s "
            f"AND event_id IN ({', '.join(['%s'] * len(chunk))})",
            [shop_id, *chunk],
        )
        stored.update(row[0].rstrip(" ") for row in cursor.fetchall())
    # The column's utf8mb4_bin collation pads: "a " duplicates "a".
    refused = [event_id for event_id in event_ids if event_id.rstrip(" ") not in stored]
    if refused:
        logger.error("shop %s: the database refused events %s", shop_id, refused[:10])
        raise DataError(f"The database refused events {', '.join(refused[:10])}.")


def events_insert(*, shop_id: int, events: list[EventIn], received_at: datetime) -> int:
    """Insert events in one multi-row statement; returns how many were new (not duplicates)."""
    if not events:
        return 0
    if connection.vendor == "mysql":
        return _insert_mysql(shop_id, events, received_at)
    with connection.cursor() as cursor:
        cursor.executemany(_insert_sql(connection.vendor), _rows(shop_id, events, received_at))
        return max(cursor.rowcount, 0)


_scheduled_at: dict[int, float] = {}


def process_schedule_forget() -> None:
    """Forget this process's debounce clock (tests start each case afresh)."""
    _scheduled_at.clear()


def events_process_schedule(*, shop_id: int) -> None:
    """Ask a worker to process this shop's new events, at most once a second per shop.

    A process-local clock spares most requests the shared-cache round trip; the cache flag then
    de-duplicates across processes. The task waits until every event of this debounce window
    has settled (PIPELINE_SETTLE_SECONDS), so one run takes them all.
    """
    from django.conf import settings

    from events.tasks import events_process_task

    now = time.monotonic()
    if now - _scheduled_at.get(shop_id, -PROCESS_DEBOUNCE_SECONDS) < PROCESS_DEBOUNCE_SECONDS:
        return
    _scheduled_at[shop_id] = now
    try:
        if not cache.add(f"events:process-scheduled:{shop_id}", 1, PROCESS_DEBOUNCE_SECONDS):
            return
    except RedisError:
        # Redis down: enqueue anyway. The process-local clock above still spaces the tasks, a
        # duplicate task finds nothing left to do, and the rate limiter logs the outage once.
        pass
    countdown = settings.PIPELINE_SETTLE_SECONDS + PROCESS_DEBOUNCE_SECONDS + 0.2
    try:
        events_process_task.apply_async((shop_id,), countdown=countdown)
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
                    payload=rejected_payload(raw),
                    format=format,
                    code=error.code,
                    detail=error.detail,
                    received_at=received_at,
                )
            )
            continue
        _apply_request_context(event, shop=shop, request=request)
        valid.append(event)

    if rejected_rows:
        with transaction.atomic():
            inserted = events_insert(shop_id=shop.pk, events=valid, received_at=received_at)
            RejectedEvent.objects.bulk_create(rejected_rows)
    else:
        # One multi-row INSERT is atomic by itself: in autocommit mode it is durable when it
        # returns, and the BEGIN/COMMIT round trips of a transaction block are saved.
        inserted = events_insert(shop_id=shop.pk, events=valid, received_at=received_at)
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


def rejected_payload(raw: Any) -> Any:
    """What a RejectedEvent keeps of a raw event: the value itself, or its JSON text where the
    database's JSON column cannot hold it (JSON null, which the column reads as SQL NULL; NaN;
    a lone surrogate; more than 31 levels). Only rejected events pay for these checks.
    """
    if isinstance(raw, InvalidJsonEvent):
        raw = raw.raw
    elif raw is not None and not json_too_deep(raw):
        return raw
    try:
        # The stdlib writes NaN and escapes lone surrogates; its recursion limit is ~1000 levels.
        return json.dumps(raw)
    except (RecursionError, ValueError, TypeError):
        return "<unreadable: nested beyond the JSON encoder's limit>"


def _rejected_raw(payload: Any) -> Any:
    """The raw event back from `rejected_payload`'s result."""
    if not isinstance(payload, str):
        return payload
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return payload


def rejected_event_replay(*, rejected: RejectedEvent, now: datetime) -> IngestResult:
    """Run a rejected payload through ingestion again (after a fix in the validator or data)."""
    result = events_ingest(
        shop=rejected.shop,
        events=[_rejected_raw(rejected.payload)],
        received_at=now,
        format=rejected.format,
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
class AssignResult:
    events: int = 0
    persons_created: int = 0
    persons_merged: int = 0
    sessions_created: int = 0
    sessions_deleted: int = 0


@dataclass(frozen=True, slots=True)
class ProcessResult:
    processed: int
    position: int
    has_more: bool
    assigned: AssignResult = AssignResult()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one batch.

    A batch allocates a few hundred thousand short-lived tuples and rows, none of them in
    reference cycles, so reference counting frees them all; meanwhile the collector would run
    hundreds of passes over every live object (~10 % of a batch's Python time, measured).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# Errors that one stored event can cause in the pipeline's own code or data (an arithmetic
# overflow, a value the code did not expect, a value the database refuses): the batch is retried
# without that event, which is quarantined. Any other error (a lost connection, a deadlock)
# fails the batch, to be retried whole.
POISON_ERRORS: tuple[type[Exception], ...] = (
    ArithmeticError,
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    DataError,
)
# What fails a batch: those that escaped quarantine, and the database's own errors.
BATCH_ERRORS: tuple[type[Exception], ...] = (DatabaseError, *POISON_ERRORS)


def events_process(*, shop_id: int, now: datetime, batch_size: int) -> ProcessResult:
    """Process the next batch of a shop's events after its watermark, then advance it.

    The watermark row is locked for the whole batch, and sessions and persons are written in the
    same transaction, so workers racing on one shop take turns (nothing else writes a shop's
    persons or sessions) and a failed batch leaves no trace: the retry starts again from the
    last committed position. Events younger than PIPELINE_SETTLE_SECONDS wait: an insert still
    committing may hold a lower id.

    An event that makes the batch fail with one of POISON_ERRORS is quarantined
    (`_rows_process`), so it never holds back the events behind it. A batch that fails anyway
    is recorded on the watermark (readiness names the shop) and re-raised for the task's retry.
    """
    from django.conf import settings

    settled_before = now - timedelta(seconds=settings.PIPELINE_SETTLE_SECONDS)
    # Created outside the batch's transaction: two workers creating it at once must not abort it.
    PipelineWatermark.objects.get_or_create(job=PipelineJob.EVENTS, shop_id=shop_id)
    try:
        result = _batch_process(
            shop_id=shop_id, now=now, settled_before=settled_before, batch_size=batch_size
        )
    except BATCH_ERRORS as error:
        metrics.BATCHES_FAILED.inc()
        logger.error("shop %s: pipeline batch failed: %s", shop_id, _error_text(error))
        try:
            PipelineWatermark.objects.filter(job=PipelineJob.EVENTS, shop_id=shop_id).update(
                failed_at=now, error=_error_text(error)
            )
        except DatabaseError:  # the database is away: readiness says so by itself
            logger.warning("shop %s: could not record the failed batch", shop_id)
        raise
    metrics.BATCHES_PROCESSED.inc()
    metrics.PIPELINE_EVENTS_PROCESSED.inc(result.processed)
    return result


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:1024]


def _batch_process(
    *, shop_id: int, now: datetime, settled_before: datetime, batch_size: int
) -> ProcessResult:
    assigned = AssignResult()
    with transaction.atomic(), _gc_paused():
        watermark = PipelineWatermark.objects.select_for_update().get(
            job=PipelineJob.EVENTS, shop_id=shop_id
        )
        # Stragglers first: events below the watermark that no batch assigned, because their
        # insert committed after the watermark had passed their ids. The (shop_id, person_id,
        # id) index holds them as one short range, usually empty.
        rows = _events_fetch(
            "shop_id = %s AND person_id IS NULL AND id <= %s AND received_at < %s",
            [shop_id, watermark.position, _db_value(settled_before)],
            columns=_BATCH_FIELDS,
            limit=batch_size + 1,
        )
        # Then one query walks the (shop_id, id) index from the watermark and reads the whole
        # rows: the batch is cut and read in a single round trip. Their ids all exceed the
        # stragglers', so the batch stays in id order.
        fresh = (
            _events_fetch(
                "shop_id = %s AND id > %s AND received_at < %s",
                [shop_id, watermark.position, _db_value(settled_before)],
                columns=_BATCH_FIELDS,
                limit=batch_size + 1 - len(rows),
            )
            if len(rows) <= batch_size
            else []
        )
        rows += fresh
        has_more = len(rows) > batch_size
        rows = rows[:batch_size]
        if rows:
            assigned = _rows_process(shop_id=shop_id, rows=rows, now=now)
            watermark.position = max(watermark.position, rows[-1][0])
        if rows or watermark.failed_at is not None:
            watermark.failed_at = None
            watermark.error = ""
            watermark.save(update_fields=["position", "failed_at", "error", "updated_at"])
    return ProcessResult(
        processed=assigned.events,
        position=watermark.position,
        has_more=has_more,
        assigned=assigned,
    )


def _rows_process(*, shop_id: int, rows: list[tuple], now: datetime) -> AssignResult:
    """Assign rows and record their orders; quarantine the rows that make this fail.

    Each try runs in a savepoint. When a try fails with one of POISON_ERRORS, the rows are split
    in halves and each half is tried again, down to the single rows that fail, which are
    quarantined: k bad rows in n cost about 2·k·log2(n) extra tries, and a clean batch one
    savepoint. Halves may be processed in any order: the pipeline gives the same sessions for
    out-of-order events.
    """
    try:
        with transaction.atomic():
            assigned = _batch_assign(shop_id=shop_id, rows=rows, now=now)
            # Only purchases become orders: naming just those spares an IN list of the whole
            # batch (~10 % of a batch's time when it was every event id).
            purchase_ids = [row[0] for row in rows if row[2] == PURCHASE_TYPE]
            orders_record_from_purchases(shop_id=shop_id, event_ids=purchase_ids)
            return assigned
    except POISON_ERRORS as error:
        if len(rows) == 1:
            _event_quarantine(shop_id=shop_id, event_pk=rows[0][0], error=error, now=now)
            return AssignResult()
    half = len(rows) // 2
    first = _rows_process(shop_id=shop_id, rows=rows[:half], now=now)
    second = _rows_process(shop_id=shop_id, rows=rows[half:], now=now)
    return AssignResult(
        events=first.events + second.events,
        persons_created=first.persons_created + second.persons_created,
        persons_merged=first.persons_merged + second.persons_merged,
        sessions_created=first.sessions_created + second.sessions_created,
        sessions_deleted=first.sessions_deleted + second.sessions_deleted,
    )


def _event_quarantine(*, shop_id: int, event_pk: int, error: BaseException, now: datetime) -> None:
    """Move an event the pipeline cannot process to the rejected events (admin, replay).

    The one exception to an append-only log: kept, the event would stay unassigned below the
    watermark, where the straggler pass would pick it up again on every batch. Its rejection
    holds every stored field in our own format, so a replay after the fix re-ingests it.
    """
    event = Event.objects.get(pk=event_pk)
    detail = _error_text(error)
    RejectedEvent.objects.create(
        shop_id=shop_id,
        payload=_event_payload(event),
        format=EventFormat.CLICKSERVER,
        code="pipeline_failed",
        detail=detail,
        received_at=now,
    )
    event.delete()
    # Counted once the batch commits: a batch that fails anyway rolls the quarantine back.
    transaction.on_commit(metrics.PIPELINE_EVENTS_QUARANTINED.inc)
    logger.error("shop %s: event %s quarantined: %s", shop_id, event.event_id, detail)


def _event_payload(event: Event) -> dict[str, Any]:
    """A stored event in the ingestion format (docs/ingestion.md), empty fields left out."""
    payload: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "anonymous_id": event.anonymous_id,
        "user_id": event.user_id,
        "timestamp": event.occurred_at.isoformat(),
        "url": event.url,
        "referrer": event.referrer,
        "title": event.title,
        "properties": event.properties,
        "product": {
            "id": event.product_id,
            "name": event.product_name,
            "category": event.product_category,
            "price": None if event.product_price is None else str(event.product_price),
            "quantity": event.product_quantity,
        },
        "order": {
            "id": event.order_id,
            "revenue": None if event.revenue is None else str(event.revenue),
            "currency": event.currency,
        },
        "utm": {key.removeprefix("utm_"): getattr(event, key) for key in UTM_FIELDS},
        "context": {"user_agent": event.user_agent, "ip": event.ip, "country": event.country},
    }
    for key in ("product", "order", "utm", "context"):
        payload[key] = {k: v for k, v in payload[key].items() if v not in ("", None)}
    return {key: value for key, value in payload.items() if value not in ("", None, {})}


# The columns sessionisation reads, in EventRow's order after `id` and `occurred_at`.
_ROW_FIELDS = (
    "id",
    "occurred_at",
    "type",
    "url",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "user_agent",
    "country",
    "revenue",
    "session_id",
    "person_id",
)
# A batch also reads what identity needs; `_batch_assign` relies on this order.
_BATCH_FIELDS = (*_ROW_FIELDS, "anonymous_id", "user_id", "properties")
# Rows per IN (...) list or multi-row statement: well under MariaDB's packet and planner limits.
CHUNK = 2000


def _select_in(sql: str, values: list, *, params: list[Any]) -> list[tuple]:
    """Rows of `sql` for every value, an IN list (`IN_LIST` in `sql`) of a chunk at a time.

    Raw SQL because the ORM prepares each value of an IN list through several calls (~10 µs),
    and a batch looks up tens of thousands of identifiers and persons.
    """
    rows: list[tuple] = []
    with connection.cursor() as cursor:
        for chunk in chunks(values, CHUNK):
            cursor.execute(sql.replace("IN_LIST", ", ".join(["%s"] * len(chunk))), params + chunk)
            rows += cursor.fetchall()
    return rows


def _db_value(value: Any) -> Any:
    """A Python value as the database driver takes it.

    The ORM's per-field preparation costs more than the rest of the pipeline on a large batch;
    this covers the few types the pipeline writes. Datetimes are stored as naive UTC text, as
    Django stores them on both MariaDB and SQLite.
    """
    if isinstance(value, datetime):
        return str(value.astimezone(UTC).replace(tzinfo=None))
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return value


def _rows_write(
    table: str,
    columns: list[str],
    rows: list[tuple],
    *,
    on_conflict: str = "error",
    returning: bool = False,
) -> list[int]:
    """Multi-row INSERT; `on_conflict` "update" upserts by primary key, "ignore" skips.

    With `returning` the new ids come back in row order (MariaDB 10.5+ and SQLite 3.35+
    support INSERT … RETURNING), so new sessions and persons need no second query.
    """
    quote = connection.ops.quote_name
    is_mysql = connection.vendor == "mysql"
    names = ", ".join(quote(column) for column in columns)
    row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
    updates = [column for column in columns if column != "id"]
    suffix = ""
    if on_conflict == "update":
        suffix = (
            " ON DUPLICATE KEY UPDATE "
            + ", ".join(f"{quote(c)} = VALUES({quote(c)})" for c in updates)
            if is_mysql
            else " ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in updates)
        )
    elif on_conflict == "ignore" and not is_mysql:
        suffix = " ON CONFLICT DO NOTHING"
    verb = "INSERT IGNORE" if on_conflict == "ignore" and is_mysql else "INSERT"
    ids: list[int] = []
    literal = _Literals() if is_mysql else None
    with connection.cursor() as cursor:
        for chunk in chunks(rows, 1000):
            sql = f"{verb} INTO {quote(table)} ({names}) VALUES "
            params: list[Any] | None = None
            if literal is not None:
                sql += literal.rows(chunk)
            else:
                params = [_db_value(value) for row in chunk for value in row]
                sql += ", ".join([row_sql] * len(chunk))
            cursor.execute(sql + suffix + (" RETURNING id" if returning else ""), params)
            if returning:
                ids.extend(row[0] for row in cursor.fetchall())
    return ids


_tzinfo = attrgetter("tzinfo")


class _Literals:
    """MariaDB SQL literals for the values the pipeline writes, strings escaped once each.

    The driver escapes every parameter through a few Python calls (~4 µs); a batch writes a few
    hundred thousand values and most strings repeat (URLs, referrers, browsers, countries), so
    inlining them with a per-statement cache of escaped strings costs a fraction of that.
    Escaping is the driver's own (`string_literal`: the connection's charset and SQL mode).
    """

    def __init__(self) -> None:
        connection.ensure_connection()  # raises OperationalError (503) when the database is down
        driver = connection.connection
        self._escape = driver.string_literal
        self._encoding = driver.encoding
        self._strings: dict[str, str] = {}

    def rows(self, rows: list[tuple]) -> str:
        """`(…), (…)` for a VALUES list of these rows (see `columns`)."""
        return self.columns(list(zip(*rows, strict=True)))

    def columns(self, columns: Sequence[Sequence[Any]]) -> str:
        """`(…), (…)` for a VALUES list given column by column, each converted as a whole.

        A column holds one type (or None), and most of its values repeat (a shop id, a country,
        a URL) or are plain integers, so each column's distinct values are converted once and
        the rest is lookups and joins in C; only columns of unhashable values (JSON dicts) go
        value by value. Equal values share one literal, so `Decimal("49.9")` may be written as
        an equal `49.90` of the same column: the same number.
        """
        converted: list[Iterable[str]] = []
        for column in columns:
            kinds = set(map(type, column))
            if kinds == {int}:
                converted.append(map(str, column))
            elif kinds == {datetime} and set(map(_tzinfo, column)) == {UTC}:
                # str() of an aware UTC datetime ends in "+00:00": 1 µs instead of 4, and only
                # once per distinct instant (a batch shares its received_at).
                distinct = {value: f"'{str(value)[:-6]}'" for value in set(column)}
                converted.append(map(distinct.__getitem__, column))
            elif dict in kinds or list in kinds:
                converted.append(map(self, column))
            else:
                distinct = {value: self(value) for value in set(column)}
                converted.append(map(distinct.__getitem__, column))
        return "(" + "), (".join(map(", ".join, zip(*converted, strict=True))) + ")"

    def __call__(self, value: Any) -> str:
        kind = type(value)
        if kind is str:
            text = self._strings.get(value)
            if text is None:
                text = self._strings[value] = self._escape(value.encode(self._encoding)).decode(
                    self._encoding
                )
            return text
        if kind is int:
            return str(value)
        if value is None:
            return "NULL"
        if kind is bool:
            return "1" if value else "0"
        if kind is Decimal:
            return format(value, "f")
        if kind is datetime:
            return f"'{value.astimezone(UTC).replace(tzinfo=None)}'"
        if kind is dict:
            return self(orjson.dumps(value).decode())
        if isinstance(value, str):  # a str subclass, such as a TextChoices member
            return self._escape(value.encode(self._encoding)).decode(self._encoding)
        raise TypeError(f"no SQL literal for {kind.__name__}")


@dataclass(slots=True)
class _Resolution:
    event_person: dict[int, int]
    full_recompute: set[int]
    persons_created: int
    persons_merged: int


def sessions_assign(*, shop_id: int, event_ids: list[int], now: datetime) -> AssignResult:
    """Assign a batch of new events to persons and sessions; call with the shop's lock held.

    Identity first (it may merge persons), then each affected person's sessions are recomputed
    from the last session boundary that the new events cannot move, so late and out-of-order
    events give exactly what a full recomputation gives.
    """
    rows = []
    for chunk in chunks(sorted(event_ids), CHUNK):
        rows += _events_fetch(
            f"id IN ({', '.join(['%s'] * len(chunk))})", chunk, columns=_BATCH_FIELDS
        )
    return _batch_assign(shop_id=shop_id, rows=rows, now=now)


def _batch_assign(*, shop_id: int, rows: list[tuple], now: datetime) -> AssignResult:
    """`sessions_assign` for rows already read with `_BATCH_FIELDS`, in id order."""
    shop = Shop.objects.only("id", "session_timeout_minutes").get(pk=shop_id)
    timeout = timedelta(minutes=shop.session_timeout_minutes)
    identity_rows = [(row[0], row[2], row[-3], row[-2], row[-1], row[1]) for row in rows]
    resolution = persons_resolve(shop_id=shop_id, events=identity_rows, now=now)
    if len(resolution.event_person) < len(rows):
        # Validation rejects such events; one stored anyway would stay unassigned below the
        # watermark and be retaken by every batch as a straggler: `_rows_process` quarantines it.
        raise ValueError("the event has no identifier")

    new_events: dict[int, list[EventRow]] = defaultdict(list)
    for row in rows:
        person_id = resolution.event_person.get(row[0])
        if person_id is not None:
            new_events[person_id].append(EventRow(*row[: len(_ROW_FIELDS)]))
    created, deleted = _sessions_recompute(
        shop_id=shop_id,
        timeout=timeout,
        new_events=new_events,
        full_recompute=resolution.full_recompute,
    )
    return AssignResult(
        events=len(rows),
        persons_created=resolution.persons_created,
        persons_merged=resolution.persons_merged,
        sessions_created=created,
        sessions_deleted=deleted,
    )


def persons_resolve(
    *, shop_id: int, events: list[tuple[int, str, str, str, Any, datetime]], now: datetime
) -> _Resolution:
    """Stitch events `(id, type, anonymous_id, user_id, properties, occurred_at)` to persons.

    Creates persons and identifiers, merges persons that an event proves to be one shopper
    (re-attributing the loser's events, sessions, orders, checkouts and identifiers), and
    returns each event's person. Events are linked in id order, the order they arrived in.
    """
    keys_by_event: dict[int, list[identity.Key]] = {}
    # Without properties an event's identifiers depend on (anonymous_id, user_id) alone (its type
    # only matters for what an identify or alias carries in them), and a batch holds many events
    # of each visitor: extract them once per visitor.
    plain: dict[tuple[str, str], list[identity.Key]] = {}
    for event_id, type_, anonymous_id, user_id, properties, _ in events:
        if properties:
            keys = identity.event_identifiers(
                type=type_, anonymous_id=anonymous_id, user_id=user_id, properties=properties
            )
        elif (keys := plain.get((anonymous_id, user_id))) is None:  # type: ignore[assignment]
            keys = plain[anonymous_id, user_id] = identity.event_identifiers(
                type=type_, anonymous_id=anonymous_id, user_id=user_id, properties=None
            )
        keys_by_event[event_id] = keys
    values_by_kind: dict[str, set[str]] = defaultdict(set)
    for keys in keys_by_event.values():
        for kind, value in keys:
            values_by_kind[kind].add(value)
    identifiers = connection.ops.quote_name(PersonIdentifier._meta.db_table)
    known: dict[identity.Key, int] = {}
    for kind, values in values_by_kind.items():
        for value, person_id in _select_in(
            f"SELECT value, person_id FROM {identifiers} "
            "WHERE shop_id = %s AND kind = %s AND value IN (IN_LIST)",
            sorted(values),
            params=[shop_id, str(kind)],
        ):
            known[(kind, value)] = person_id
    person_exclusive: dict[int, dict[str, str]] = defaultdict(dict)
    exclusive_kinds = sorted(identity.EXCLUSIVE_KINDS)
    for person_id, kind, value in _select_in(
        f"SELECT person_id, kind, value FROM {identifiers} "
        f"WHERE kind IN ({', '.join(['%s'] * len(exclusive_kinds))}) AND person_id IN (IN_LIST)",
        sorted(set(known.values())),
        params=[str(kind) for kind in exclusive_kinds],
    ):
        person_exclusive[person_id][kind] = value

    graph = identity.IdentityGraph(known=known, person_exclusive=person_exclusive)
    primary_by_event = {event_id: graph.link(keys) for event_id, keys in keys_by_event.items()}
    components = graph.components()

    times: dict[Any, list[datetime]] = defaultdict(list)
    traits: dict[Any, dict[str, Any]] = defaultdict(dict)
    root_by_event: dict[int, Any] = {}
    for event_id, type_, _, _, properties, occurred_at in events:
        primary = primary_by_event[event_id]
        if primary is None:
            continue
        root = graph.find(primary)
        root_by_event[event_id] = root
        times[root].append(occurred_at)
        if type_ == "identify" and isinstance(properties, dict):
            traits[root].update(_public_traits(properties.get("traits")))

    person_by_root: dict[Any, int] = {}
    new_roots = []
    new_rows = []
    for root in times:
        component = components[root]
        if component.survivor is not None:
            person_by_root[root] = component.survivor
            continue
        new_roots.append(root)
        new_rows.append(
            (
                shop_id,
                component.user_id,
                min(times[root]),
                max(times[root]),
                traits.get(root, {}),
                now,
            )
        )
    new_ids = _rows_write(
        Person._meta.db_table,
        ["shop_id", "user_id", "first_seen_at", "last_seen_at", "traits", "created_at"],
        new_rows,
        returning=True,
    )
    person_by_root.update(zip(new_roots, new_ids, strict=True))

    merged = 0
    full_recompute: set[int] = set()
    survivors: dict[int, Any] = {}
    for root in times:
        if (survivor_id := components[root].survivor) is not None:
            survivors[survivor_id] = root
    for root, component in components.items():
        if len(component.persons) > 1:
            survivor, losers = component.persons[0], component.persons[1:]
            _persons_merge(survivor_id=survivor, loser_ids=losers)
            merged += len(losers)
            full_recompute.add(survivor)
            survivors.setdefault(survivor, root)
    _persons_refresh(survivors=survivors, components=components, times=times, traits=traits)

    new_identifiers = [
        (shop_id, person_by_root[root], kind, value, now)
        for root, component in components.items()
        if root in person_by_root
        for kind, value in component.identifiers
        if (kind, value) not in known
    ]
    # Ignoring conflicts keeps a concurrent writer outside the pipeline (a Shopify webhook that
    # stores a customer id) from failing the batch; the stored edge wins and later events use it.
    _rows_write(
        PersonIdentifier._meta.db_table,
        ["shop_id", "person_id", "kind", "value", "created_at"],
        new_identifiers,
        on_conflict="ignore",
    )
    return _Resolution(
        event_person={event_id: person_by_root[root] for event_id, root in root_by_event.items()},
        full_recompute=full_recompute,
        persons_created=len(new_ids),
        persons_merged=merged,
    )


def _public_traits(traits: Any) -> dict[str, Any]:
    """Identify traits worth keeping on the person; the raw email stays out (only its hash)."""
    if not isinstance(traits, dict):
        return {}
    return {key: value for key, value in traits.items() if key != "email"}


def _persons_merge(*, survivor_id: int, loser_ids: list[int]) -> None:
    """Re-attribute everything of the losers to the survivor, then delete the losers."""
    Event.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    Session.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    Order.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    Checkout.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    PersonIdentifier.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    losers = list(Person.objects.filter(id__in=loser_ids))
    survivor = Person.objects.get(pk=survivor_id)
    survivor.first_seen_at = min([survivor.first_seen_at, *(p.first_seen_at for p in losers)])
    survivor.last_seen_at = max([survivor.last_seen_at, *(p.last_seen_at for p in losers)])
    survivor.traits = {**{k: v for p in losers for k, v in p.traits.items()}, **survivor.traits}
    survivor.save(update_fields=["first_seen_at", "last_seen_at", "traits"])
    Person.objects.filter(id__in=loser_ids).delete()


def _persons_refresh(
    *,
    survivors: dict[int, Any],
    components: dict[Any, identity.Component],
    times: dict[Any, list[datetime]],
    traits: dict[Any, dict[str, Any]],
) -> None:
    """Bring existing persons' user id, first/last seen and traits up to this batch."""
    columns = ["id", "shop_id", "user_id", "first_seen_at", "last_seen_at", "traits", "created_at"]
    changed = []
    for chunk in chunks(sorted(survivors), CHUNK):
        for row in Person.objects.filter(id__in=chunk).values_list(*columns):
            person_id, shop_id, user_id, first_seen_at, last_seen_at, person_traits, created = row
            root = survivors[person_id]
            seen = times.get(root)
            if seen:
                first_seen_at = min(first_seen_at, *seen)
                last_seen_at = max(last_seen_at, *seen)
            new_row = (
                person_id,
                shop_id,
                components[root].user_id or user_id,
                first_seen_at,
                last_seen_at,
                {**person_traits, **traits.get(root, {})},
                created,
            )
            if new_row != row:
                changed.append(new_row)
    _rows_write(Person._meta.db_table, columns, changed, on_conflict="update")


_SESSION_ATTRIBUTES = [
    f.name for f in Session._meta.concrete_fields if f.name not in ("id", "shop", "person")
]


# One C call per session instead of a generator of getattr calls.
_session_values: Callable[[SessionData], tuple] = attrgetter(*_SESSION_ATTRIBUTES)


def _events_fetch(
    where: str, params: list[Any], *, columns: tuple[str, ...], limit: int | None = None
) -> list[tuple]:
    """Event rows by raw SQL, converted by hand: the ORM's per-value converters cost more than
    the query on the tens of thousands of rows a batch reads. Converted column by column (a
    transpose is one C call each way), not row by row."""
    quote = connection.ops.quote_name
    table = quote(Event._meta.db_table)
    # Read as text, `occurred_at` converts in one C call (`fromisoformat`) instead of the
    # driver's Python converter: about half the cost of reading the column.
    names = ", ".join(
        "CAST(occurred_at AS CHAR)"
        if column == "occurred_at" and connection.vendor == "mysql"
        else quote(column)
        for column in columns
    )
    with connection.cursor() as cursor:
        suffix = f" LIMIT {int(limit)}" if limit is not None else ""
        cursor.execute(f"SELECT {names} FROM {table} WHERE {where} ORDER BY id{suffix}", params)
        raw = cursor.fetchall()
    if not raw:
        return []
    values = list(zip(*raw, strict=True))
    at = columns.index("occurred_at")
    column = values[at]
    if column and type(column[0]) is str:  # naive UTC text, as stored: parsed in C, no calls
        values[at] = tuple(map(datetime.fromisoformat, map("{}+00:00".format, column)))
    else:
        values[at] = tuple(map(_aware_utc, column))
    if "revenue" in columns:
        index = columns.index("revenue")
        values[index] = tuple(
            value if value is None or type(value) is Decimal else Decimal(str(value))
            for value in values[index]
        )
    if "properties" in columns:
        index = columns.index("properties")
        values[index] = tuple(
            orjson.loads(text) if text and text != "{}" else {} for text in values[index]
        )
    return list(zip(*values, strict=True))


def _aware_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):  # naive UTC text, as stored
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC)


def _load_person_events(
    *, person_ids: list[int], since: dict[int, datetime] | None
) -> dict[int, list[EventRow]]:
    """Processed events of these persons, from each one's `since` (all when None)."""
    loaded: dict[int, list[EventRow]] = defaultdict(list)
    for chunk in chunks(person_ids, 500):
        where = f"person_id IN ({', '.join(['%s'] * len(chunk))})"
        params: list[Any] = list(chunk)
        if since is not None:
            where += " AND occurred_at >= %s"
            params.append(_db_value(min(since[p] for p in chunk)))
        for row in _events_fetch(where, params, columns=_ROW_FIELDS):
            event = EventRow(*row)
            person_id: int = row[-1]  # the query selected by person, so never NULL here
            if since is None or event.occurred_at >= since[person_id]:
                loaded[person_id].append(event)
    return loaded


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _earlier(at: datetime, delta: timedelta) -> datetime:
    """`at - delta`, or the first instant of the calendar where that would leave it.

    Ingestion rejects times before 2000, but rows stored earlier may hold year 1.
    """
    return at - delta if at - _EARLIEST > delta else _EARLIEST


def _restart_points(*, first_new: dict[int, datetime], timeout: timedelta) -> dict[int, datetime]:
    """For each person, the earliest session start that their new events can change.

    Sessionisation is a left-to-right scan, so sessions before the first new event stand; the
    only older session that can absorb a new event is one that ended within the timeout before
    it. A session start is a safe place to restart the scan, so the result is the start of the
    earliest session ending at or after `first_new - timeout`, or `first_new` itself. Read from
    the sessions (started at most 24 h before they end) instead of a day of raw events.
    """
    restart = dict(first_new)
    table = connection.ops.quote_name(Session._meta.db_table)
    for chunk in chunks(sorted(first_new), 500):
        earliest = _earlier(min(first_new[p] for p in chunk), timeout)
        for person_id, started_at, ended_at in _select_in(
            f"SELECT person_id, started_at, ended_at FROM {table} "
            "WHERE started_at >= %s AND ended_at >= %s AND person_id IN (IN_LIST)",
            chunk,
            params=[_db_value(_earlier(earliest, MAX_SESSION_LENGTH)), _db_value(earliest)],
        ):
            if _aware_utc(ended_at) >= _earlier(first_new[person_id], timeout):
                restart[person_id] = min(restart[person_id], _aware_utc(started_at))
    return restart


def _sessions_recompute(
    *,
    shop_id: int,
    timeout: timedelta,
    new_events: dict[int, list[EventRow]],
    full_recompute: set[int],
) -> tuple[int, int]:
    """Recompute the affected sessions of these persons; returns (created, deleted)."""
    incremental = sorted(set(new_events) - full_recompute)
    restart = _restart_points(
        first_new={p: min(e.occurred_at for e in new_events[p]) for p in incremental},
        timeout=timeout,
    )
    old = _load_person_events(person_ids=incremental, since=restart)
    old.update(_load_person_events(person_ids=sorted(full_recompute), since=None))

    reused: list[tuple[int, int, SessionData]] = []
    created: list[tuple[int, SessionData]] = []
    obsolete: list[int] = []
    for person_id in sorted(set(new_events) | full_recompute):
        fresh = new_events.get(person_id, [])
        new_ids = {e.id for e in fresh}
        # Every loaded older event is at or after the restart point (all of them on a full
        # recompute), so all of them are sessionised again together with the new ones.
        older = sorted((e for e in old.get(person_id, []) if e.id not in new_ids), key=order_key)
        old_session_ids = list(dict.fromkeys(e.session_id for e in older if e.session_id))
        sessions = sessionize(sorted(older + fresh, key=order_key), timeout=timeout)
        # Reusing the old ids in order keeps an extended session's id (and its events' rows)
        # unchanged, which is the common case of a live visit.
        for index, data in enumerate(sessions):
            if index < len(old_session_ids):
                reused.append((old_session_ids[index], person_id, data))
            else:
                created.append((person_id, data))
        obsolete.extend(old_session_ids[len(sessions) :])

    table = Session._meta.db_table
    _rows_write(
        table,
        ["id", "shop_id", "person_id", *_SESSION_ATTRIBUTES],
        [(pk, shop_id, person, *_session_values(data)) for pk, person, data in reused],
        on_conflict="update",
    )
    created_ids = _rows_write(
        table,
        ["shop_id", "person_id", *_SESSION_ATTRIBUTES],
        [(shop_id, person, *_session_values(data)) for person, data in created],
        returning=True,
    )

    current = {
        e.id: (e.session_id, e.person_id)
        for events in (*old.values(), *new_events.values())
        for e in events
    }
    assigned = [(pk, person, data) for pk, person, data in reused]
    assigned += [
        (pk, person, data) for pk, (person, data) in zip(created_ids, created, strict=True)
    ]
    changes = [
        (event_id, session_id, person_id)
        for session_id, person_id, data in assigned
        for event_id in data.event_ids
        if current[event_id] != (session_id, person_id)
    ]
    _events_assign(changes)
    if obsolete:
        Session.objects.filter(id__in=obsolete).delete()
    return len(created_ids), len(obsolete)


def _events_assign(changes: list[tuple[int, int, int]]) -> None:
    """Set (session, person) of many events in a few statements, never one per event.

    MariaDB: the pairs go to a temporary table in multi-row inserts, then one UPDATE … JOIN on
    the primary key, driven by the temporary table. Elsewhere (SQLite) an UPDATE … CASE per chunk.

    `STRAIGHT_JOIN` pins the join order. Left to itself MariaDB picks it from the table
    statistics, and while the events table looks small next to the temporary table (a shop's
    first backlog, the bench) it scans the whole events table and probes the temporary one for
    each row: 2.5 rows read per row written on a 50,000-event bench run, the whole log once per
    batch in general, and every scanned row is locked for update on the way, so two shops'
    workers could wait on each other's rows. Driven by the temporary table, the statement reads
    and locks exactly the rows it writes.
    """
    if not changes:
        return
    table = connection.ops.quote_name(Event._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            # Temporary tables are per connection and neither CREATE nor DROP of one commits.
            cursor.execute(
                "CREATE TEMPORARY TABLE pipeline_assignment "
                "(id BIGINT PRIMARY KEY, session_id BIGINT, person_id BIGINT) ENGINE=MEMORY"
            )
            try:
                # In id order the UPDATE walks the event rows' pages in order (~30 % faster here
                # than in session order): a MEMORY table is scanned in insertion order.
                for chunk in chunks(sorted(changes), 5000):
                    # Integer literals (they are ids from the database) skip the driver's
                    # per-value escaping, which costs more than the insert itself.
                    cursor.execute(
                        "INSERT INTO pipeline_assignment VALUES "
                        + ", ".join(f"({int(a)}, {int(b)}, {int(c)})" for a, b, c in chunk)
                    )
                cursor.execute(
                    f"UPDATE pipeline_assignment a STRAIGHT_JOIN {table} e ON e.id = a.id "
                    "SET e.session_id = a.session_id, e.person_id = a.person_id"
                )
            finally:
                cursor.execute("DROP TEMPORARY TABLE pipeline_assignment")
            return
        for chunk in chunks(changes, 400):
            cases = " ".join(["WHEN %s THEN %s"] * len(chunk))
            params: list[int] = []
            for event_id, session_id, _ in chunk:
                params += [event_id, session_id]
            for event_id, _, person_id in chunk:
                params += [event_id, person_id]
            params += [event_id for event_id, _, _ in chunk]
            cursor.execute(
                f"UPDATE {table} SET session_id = CASE id {cases} END, "
                f"person_id = CASE id {cases} END "
                f"WHERE id IN ({', '.join(['%s'] * len(chunk))})",
                params,
            )


def sessions_rebuild(*, shop_id: int) -> AssignResult:
    """Recompute every session of a shop from its processed events (after a timeout change)."""
    shop = Shop.objects.only("id", "session_timeout_minutes").get(pk=shop_id)
    person_ids = list(Person.objects.filter(shop_id=shop_id).values_list("id", flat=True))
    created = deleted = 0
    with transaction.atomic():
        PipelineWatermark.objects.select_for_update().filter(
            job=PipelineJob.EVENTS, shop_id=shop_id
        ).first()
        for chunk in chunks(person_ids, 500):
            chunk_created, chunk_deleted = _sessions_recompute(
                shop_id=shop_id,
                timeout=timedelta(minutes=shop.session_timeout_minutes),
                new_events={},
                full_recompute=set(chunk),
            )
            created += chunk_created
            deleted += chunk_deleted
    return AssignResult(sessions_created=created, sessions_deleted=deleted)


# --- Orders from purchase events ---------------------------------------------------------------


def orders_record_from_purchases(*, shop_id: int, event_ids: list[int]) -> int:
    """Record an Order for each purchase event (snippet, API, Segment) that has none yet.

    Revenue is counted from orders, so a shop that only tracks purchases in the browser still
    has revenue. The order id is the event's order id, or the event id when it carries none.
    An order that already exists (a Shopify webhook, an import, a repeated purchase event) is
    left as it is, apart from gaining the buyer when it had none. Runs after sessions_assign, so
    `person_id` is set.
    """
    purchases = list(
        Event.objects.filter(id__in=event_ids, type="purchase")
        .order_by("id")
        .values_list(
            "event_id", "order_id", "revenue", "currency", "occurred_at", "person_id",
            "anonymous_id", "user_id", "country",
        )
    )  # fmt: skip
    if not purchases:
        return 0
    currency = Shop.objects.filter(pk=shop_id).values_list("currency", flat=True).first() or ""
    orders: dict[str, Order] = {}
    for (event_id, order_id, revenue, event_currency, occurred_at, person_id, anonymous_id,
         user_id, country) in purchases:  # fmt: skip
        key = order_id or f"event:{event_id}"
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
    buyers: dict[int, list[str]] = {}
    for key, person_id in existing.items():
        if person_id is None and orders[key].person_id is not None:
            buyers.setdefault(orders[key].person_id, []).append(key)
    for person_id, keys in buyers.items():
        Order.objects.filter(shop_id=shop_id, order_id__in=keys).update(person_id=person_id)
    return len(orders) - len(existing)


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
