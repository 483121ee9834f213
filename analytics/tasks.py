"""Celery interfaces of the analytics app: rollup refresh, recompute of given days, sweep."""

from datetime import date

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from analytics.services.rollups import rollups_days_recompute, rollups_refresh
from events.selectors import active_shop_ids


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def rollups_refresh_task(shop_id: int) -> int:
    """Fold newly processed events, orders and refunds into the shop's rollups."""
    return rollups_refresh(shop_id=shop_id, now=timezone.now()).days


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def rollups_days_recompute_task(shop_id: int, days: list[str] | None) -> int:
    """Recompute the named local days (ISO dates; None: every day), e.g. after an erasure."""
    return rollups_days_recompute(
        shop_id=shop_id,
        days=None if days is None else [date.fromisoformat(day) for day in days],
        now=timezone.now(),
    )


@shared_task
def rollups_refresh_sweep_task() -> int:
    """Safety net for a lost follow-up message: refresh every active shop."""
    shop_ids = active_shop_ids()
    for shop_id in shop_ids:
        rollups_refresh_task.delay(shop_id)
    return len(shop_ids)
