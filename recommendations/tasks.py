"""Celery interfaces of the recommendations app: the item-to-item affinity rebuild and its sweep."""

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from events.selectors import active_shop_ids
from recommendations import services


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def affinity_rebuild_task(shop_id: int) -> None:
    services.affinity_rebuild(shop_id=shop_id, now=timezone.now())


@shared_task
def affinity_rebuild_sweep_task() -> int:
    """Daily: rebuild the affinity table of every active shop, one task per shop."""
    shop_ids = active_shop_ids()
    for shop_id in shop_ids:
        affinity_rebuild_task.delay(shop_id)
    return len(shop_ids)
