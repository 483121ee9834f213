"""Celery interfaces of the analytics app: rollup refresh, recompute of given days, sweeps;
anomaly detection after a refresh and on beat, alert dispatch and delivery; reports."""

from datetime import date, timedelta

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from analytics.selectors.anomalies import alert_deliveries_lost, shops_detection_due
from analytics.selectors.reports import reports_due_get
from analytics.services.alerts import DeliveryRetry, alert_deliver, alerts_dispatch
from analytics.services.detection import (
    anomalies_detect,
    anomalies_detect_schedule,
    detection_run_claim,
    detection_run_release,
)
from analytics.services.reports import report_deliver
from analytics.services.rollups import rollups_days_recompute, rollups_refresh
from events.follow_ups import follow_up_run
from events.models import Shop
from events.selectors import active_shop_ids


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def rollups_refresh_task(shop_id: int) -> int:
    """Fold newly processed events, orders and refunds into the shop's rollups; when a day
    changed, detection follows within seconds."""
    with follow_up_run(rollups_refresh_task, shop_id=shop_id) as runs:
        if not runs:
            return 0
        days = rollups_refresh(shop_id=shop_id, now=timezone.now()).days
    if days:
        anomalies_detect_schedule(shop_id=shop_id)
    return days


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


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def anomalies_detect_task(shop_id: int) -> int:
    """Run the detectors for one shop; returns the anomalies opened.

    While another run of the shop is going, this one asks for a run after the debounce instead
    (so what changed meanwhile is still judged) and returns at once."""
    if not detection_run_claim(shop_id=shop_id):
        anomalies_detect_schedule(shop_id=shop_id)
        return 0
    try:
        return len(anomalies_detect(shop_id=shop_id, now=timezone.now()).opened)
    finally:
        detection_run_release(shop_id=shop_id)


@shared_task
def anomalies_detect_sweep_task() -> int:
    """Beat: detection for shops whose rollups moved since (or not detected this hour), and a
    resend of deliveries whose message was lost."""
    now = timezone.now()
    shop_ids = shops_detection_due(now=now)
    for shop_id in shop_ids:
        anomalies_detect_task.delay(shop_id)
    for delivery_id in alert_deliveries_lost(older_than=now - timedelta(minutes=5)):
        alert_deliver_task.delay(delivery_id)
    return len(shop_ids)


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def alerts_dispatch_task(anomaly_ids: list[int]) -> int:
    """Log a delivery for each rule the new anomalies match; returns how many are sent."""
    return len(alerts_dispatch(anomaly_ids=anomaly_ids, now=timezone.now()).pending)


@shared_task(
    autoretry_for=(DeliveryRetry, OperationalError),
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=False,
    max_retries=10,
)
def alert_deliver_task(delivery_id: int) -> str:
    """Send one alert; transient failures retry with backoff (the service counts attempts and
    fails the delivery after ALERT_DELIVERY_ATTEMPTS)."""
    return alert_deliver(delivery_id=delivery_id, now=timezone.now()).status
