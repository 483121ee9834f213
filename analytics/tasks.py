"""Celery interfaces of the analytics app: rollup refresh, recompute of given days, sweeps,
reports."""

from datetime import date

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from analytics.selectors.reports import reports_due_get
from analytics.services.reports import report_deliver
from analytics.services.rollups import rollups_days_recompute, rollups_refresh
from events.models import Shop
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


@shared_task(autoretry_for=(OperationalError, OSError), retry_backoff=True, max_retries=5)
def report_deliver_task(shop_id: int, kind: str, first: str) -> int:
    """Build the report of `kind` starting on `first` (ISO) unless stored, email it once."""
    return report_deliver(
        shop_id=shop_id, kind=kind, first=date.fromisoformat(first), now=timezone.now()
    )


@shared_task
def reports_sweep_task() -> int:
    """Hourly: send a task for each report whose shop-local period has ended and is not stored."""
    shops = list(Shop.objects.filter(pk__in=active_shop_ids()))
    due = reports_due_get(shops=shops, now=timezone.now())
    for shop_id, kind, first in due:
        report_deliver_task.delay(shop_id, kind, first.isoformat())
    return len(due)
