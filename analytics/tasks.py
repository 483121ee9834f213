from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from analytics import services
from events.selectors import active_shop_ids


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def rollups_refresh_task(shop_id: int) -> int:
    """Fold newly processed events, orders and refunds into the shop's rollups."""
    return services.rollups_refresh(shop_id=shop_id, now=timezone.now()).days


@shared_task
def rollups_refresh_sweep_task() -> int:
    """Safety net for a lost follow-up message: refresh every active shop."""
    shop_ids = active_shop_ids()
    for shop_id in shop_ids:
        rollups_refresh_task.delay(shop_id)
    return len(shop_ids)
