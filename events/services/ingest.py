"""Ingestion: validate a batch, store it durably in one statement, schedule its processing.

Also the rejected events: what a RejectedEvent keeps of a bad event, its replay and pruning.
"""

import functools
import ipaddress
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from events import sql
from events.models import EventFormat, RejectedEvent, Shop
from events.segment import segment_to_event
from events.validation import EventIn, EventInvalid, InvalidJsonEvent, event_validate, json_too_deep

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


@functools.lru_cache(maxsize=4096)
def anonymize_ip(ip: str) -> str:
    """Zero the host part: IPv4 keeps /24, IPv6 keeps /48 (the common analytics convention).

    Memoised (a pure function): every event of a batch usually carries the request's address.
    """
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def events_insert(*, shop_id: int, events: list[EventIn], received_at: datetime) -> int:
    """Insert events in one multi-row statement; returns how many were new (not duplicates)."""
    if not events:
        return 0
    return sql.events_insert_ignore(shop_id=shop_id, events=events, received_at=received_at)


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
