"""Celery interfaces of the segments app: refresh the materialised memberships, and the sweep."""

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from events.selectors import active_shop_ids
from segments.services import customers
from segments.services import segments as services


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def segments_refresh_task(shop_id: int) -> None:
    services.segments_refresh(shop_id=shop_id, now=timezone.now())


@shared_task
def segments_refresh_sweep_task() -> int:
    """Hourly: refresh the segments of every active shop, one task per shop."""
    shop_ids = active_shop_ids()
    for shop_id in shop_ids:
        segments_refresh_task.delay(shop_id)
    return len(shop_ids)


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def customer_predictions_refresh_task(shop_id: int) -> None:
    customers.customer_predictions_refresh(shop_id=shop_id, now=timezone.now())


@shared_task
def customer_predictions_refresh_sweep_task() -> int:
    """Nightly: refit every active shop's customer model, one task per shop."""
    shop_ids = active_shop_ids()
    for shop_id in shop_ids:
        customer_predictions_refresh_task.delay(shop_id)
    return len(shop_ids)
