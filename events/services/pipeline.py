"""The processing pipeline: a shop's new events, batch by batch after its watermark.

Each batch is stitched to persons (persons.py), sessionised (sessions.py) and its purchases
recorded as orders (orders.py), in one transaction with the watermark; an event that makes the
batch fail is quarantined to the rejected events.
"""

import gc
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import DatabaseError, DataError, transaction
from redis.exceptions import RedisError

from clickserver import metrics
from clickserver.sql import db_value
from events import sql
from events.models import Event, EventFormat, PipelineJob, PipelineWatermark, RejectedEvent, Shop
from events.services.orders import orders_record_from_purchases, refunds_record_from_events
from events.services.persons import persons_resolve
from events.services.sessions import ROW_FIELDS, AssignResult, sessions_recompute
from events.sessionize import PURCHASE_TYPE, EventRow
from events.validation import REFUND_TYPE, UTM_FIELDS

logger = logging.getLogger(__name__)

# A batch also reads what identity needs; `_batch_assign` relies on this order.
BATCH_FIELDS = (*ROW_FIELDS, "anonymous_id", "user_id", "properties")


@dataclass(frozen=True, slots=True)
class ProcessResult:
    processed: int
    position: int
    has_more: bool
    assigned: AssignResult = field(default_factory=AssignResult)
    # Another run holds the shop's batch (only when asked not to wait): nothing was done.
    busy: bool = False


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


def events_process(
    *, shop_id: int, now: datetime, batch_size: int, wait: bool = True
) -> ProcessResult:
    """Process the next batch of a shop's events after its watermark, then advance it.

    The watermark row is locked for the whole batch, and sessions and persons are written in the
    same transaction, so workers racing on one shop take turns (nothing else writes a shop's
    persons or sessions) and a failed batch leaves no trace: the retry starts again from the
    last committed position. Events younger than PIPELINE_SETTLE_SECONDS wait: an insert still
    committing may hold a lower id. With `wait=False` a run that finds the watermark locked
    returns at once with `busy` set instead of waiting its turn (the worker's task: see
    `events_process_again_request`).

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
            shop_id=shop_id,
            now=now,
            settled_before=settled_before,
            batch_size=batch_size,
            wait=wait,
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
    if result.busy:
        return result
    metrics.BATCHES_PROCESSED.inc()
    metrics.PIPELINE_EVENTS_PROCESSED.inc(result.processed)
    return result


# How long a request for another run waits for the run holding the shop's batch; longer than any
# batch (CELERY_TASK_TIME_LIMIT), so it is only ever lost with the worker holding the batch, and
# then the beat sweep (PIPELINE_SWEEP_SECONDS) takes over.
AGAIN_SECONDS = 900


def events_process_again_request(*, shop_id: int) -> bool:
    """Ask the run holding the shop's batch to run once more when it is done; False when the
    request could not be recorded (Redis down).

    A worker's run that finds the batch taken returns instead of waiting its turn: at 2,000
    events/s the ingestion schedules a run every second, and runs queued behind the lock held
    every worker process (and the live scores' message behind them) for seconds each."""
    try:
        cache.set(_again_key(shop_id), 1, AGAIN_SECONDS)
    except RedisError:
        return False
    return True


def events_process_again_take(*, shop_id: int) -> bool:
    """Whether another run was asked for while this one held the batch (and clear the request).
    Redis down: True (one more run finds nothing to do at worst)."""
    try:
        return bool(cache.delete(_again_key(shop_id)))
    except RedisError:
        return True


def _again_key(shop_id: int) -> str:
    return f"events:process-again:{shop_id}"


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:1024]


def _batch_process(
    *, shop_id: int, now: datetime, settled_before: datetime, batch_size: int, wait: bool
) -> ProcessResult:
    assigned = AssignResult()
    with transaction.atomic(), _gc_paused():
        watermark = (
            PipelineWatermark.objects.select_for_update(skip_locked=not wait)
            .filter(job=PipelineJob.EVENTS, shop_id=shop_id)
            .first()
        )
        if watermark is None:  # created above: only a run holding it hides it
            return ProcessResult(processed=0, position=0, has_more=False, busy=True)
        # Stragglers first: events below the watermark that no batch assigned, because their
        # insert committed after the watermark had passed their ids. The (shop_id, person_id,
        # id) index holds them as one short range, usually empty.
        rows = sql.events_fetch(
            "shop_id = %s AND person_id IS NULL AND id <= %s AND received_at < %s",
            [shop_id, watermark.position, db_value(settled_before)],
            columns=BATCH_FIELDS,
            limit=batch_size + 1,
        )
        # Then one query walks the (shop_id, id) index from the watermark and reads the whole
        # rows: the batch is cut and read in a single round trip. Their ids all exceed the
        # stragglers', so the batch stays in id order.
        fresh = (
            sql.events_fetch(
                "shop_id = %s AND id > %s AND received_at < %s",
                [shop_id, watermark.position, db_value(settled_before)],
                columns=BATCH_FIELDS,
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
            refund_ids = [row[0] for row in rows if row[2] == REFUND_TYPE]
            if refund_ids:
                refunds_record_from_events(shop_id=shop_id, event_ids=refund_ids)
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


def _batch_assign(*, shop_id: int, rows: list[tuple], now: datetime) -> AssignResult:
    """Assign a batch's rows (read with `BATCH_FIELDS`, in id order) to persons and sessions.

    Call with the shop's watermark locked. Identity first (it may merge persons), then each
    affected person's sessions are recomputed from the last session boundary that the new
    events cannot move, so late and out-of-order events give exactly what a full recomputation
    gives.
    """
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
            new_events[person_id].append(EventRow(*row[: len(ROW_FIELDS)]))
    created, deleted = sessions_recompute(
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
