"""Celery interfaces of the events app: take ids, call one service, own the retry policy."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from events import selectors
from events.follow_ups import follow_ups_enqueue
from events.services import erasure
from events.services.ingest import rejected_events_prune
from events.services.pipeline import (
    ProcessResult,
    events_process,
    events_process_again_request,
    events_process_again_take,
)
from events.services.sessions import shop_sessions_rebuild
from events.services.shopify import shopify_webhook_process, shopify_webhooks_sweep


@shared_task(
    autoretry_for=(OperationalError,), retry_backoff=True, retry_backoff_max=60, max_retries=8
)
def events_process_task(shop_id: int) -> int:
    """Process one batch of a shop's new events; chain itself while a backlog remains.

    One run per shop at a time: a run that finds the batch held by another leaves it a request
    to run again and returns, rather than hold a worker process waiting for the lock. The
    request is made before a second try, so either that try gets the batch or the holder, which
    takes requests only after it has released the batch, sees the request."""
    result = _batch(shop_id)
    if result.busy:
        if not events_process_again_request(shop_id=shop_id):
            # Redis down: no way to leave the request, so wait for the holder's turn as before.
            result = _batch(shop_id, wait=True)
        else:
            result = _batch(shop_id)
            if result.busy:
                return 0
    if result.processed:
        follow_ups_enqueue(shop_id=shop_id)
    if result.has_more or events_process_again_take(shop_id=shop_id):
        events_process_task.delay(shop_id)
    return result.processed


def _batch(shop_id: int, *, wait: bool = False) -> ProcessResult:
    return events_process(
        shop_id=shop_id, now=timezone.now(), batch_size=settings.PIPELINE_BATCH_SIZE, wait=wait
    )


@shared_task
def events_process_sweep_task() -> int:
    """Safety net: a lost message or a broker outage never leaves events waiting for ever."""
    settled_before = timezone.now() - timedelta(seconds=settings.PIPELINE_SETTLE_SECONDS)
    shop_ids = selectors.shops_with_backlog(settled_before=settled_before)
    for shop_id in shop_ids:
        events_process_task.delay(shop_id)
    return len(shop_ids)


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def rejected_events_prune_task() -> int:
    return rejected_events_prune(
        now=timezone.now(), retention_days=settings.REJECTED_EVENT_RETENTION_DAYS
    )


@shared_task(
    autoretry_for=(OperationalError,), retry_backoff=True, retry_backoff_max=60, max_retries=8
)
def shopify_webhook_process_task(delivery_id: int) -> None:
    shopify_webhook_process(delivery_id=delivery_id, now=timezone.now())


@shared_task
def shopify_webhooks_sweep_task() -> int:
    """Safety net for deliveries whose task was lost; schedule it in CELERY_BEAT_SCHEDULE."""
    return shopify_webhooks_sweep(now=timezone.now())


@shared_task(
    autoretry_for=(OperationalError,), retry_backoff=True, retry_backoff_max=60, max_retries=8
)
def erasures_complete_task(shop_id: int) -> int:
    """Recompute what the shop's pending erasures touched; returns how many it completed."""
    return erasure.erasures_complete(shop_id=shop_id, now=timezone.now()).requests


@shared_task(
    autoretry_for=(OperationalError,), retry_backoff=True, retry_backoff_max=60, max_retries=8
)
def shop_sessions_rebuild_task(shop_id: int) -> int:
    """Re-sessionise a shop after its session timeout changed; returns the sessions created."""
    return shop_sessions_rebuild(shop_id=shop_id).sessions_created


@shared_task
def shop_sessions_rebuild_sweep_task() -> int:
    """Safety net: a rebuild whose message was lost (broker down at the change) is sent again.

    Only requests older than SESSIONS_REBUILD_SWEEP_AFTER_MINUTES, so that a rebuild still in the
    queue or running is not sent twice.
    """
    requested_before = timezone.now() - timedelta(
        minutes=settings.SESSIONS_REBUILD_SWEEP_AFTER_MINUTES
    )
    shop_ids = selectors.shops_awaiting_sessions_rebuild(requested_before=requested_before)
    for shop_id in shop_ids:
        shop_sessions_rebuild_task.delay(shop_id)
    return len(shop_ids)


@shared_task
def erasures_complete_sweep_task() -> int:
    """Safety net: an erasure whose recompute message was lost stays pending until this runs."""
    shop_ids = selectors.erasures_pending_shop_ids()
    for shop_id in shop_ids:
        erasures_complete_task.delay(shop_id)
    return len(shop_ids)
