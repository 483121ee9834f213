import logging

from celery import shared_task
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from events.follow_ups import follow_up_enqueue, follow_up_run
from events.models import Shop
from events.selectors import active_shop_ids
from notifications import services
from notifications.campaigns import decisions, deliveries
from notifications.campaigns import selectors as campaign_selectors
from notifications.experiments import exposures, results
from notifications.models import DeliveryStatus
from notifications.monitor import services as monitor_services

logger = logging.getLogger(__name__)


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def scores_refresh_task(shop_id: int) -> int:
    """Score the live sessions with new events, then decide the campaigns on those scores."""
    with follow_up_run(scores_refresh_task, shop_id=shop_id) as runs:
        if not runs:
            return 0
        scored = services.scores_refresh(shop_id=shop_id, now=timezone.now())
    # Sent after the scores rather than beside them, so that a session whose score moved into a
    # campaign's band is decided on this run's score, not the next batch's.
    follow_up_enqueue(campaign_decisions_task, shop_id=shop_id)
    return scored


@shared_task(
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
    time_limit=3600,
    soft_time_limit=3500,
)
def conversion_model_train_task(shop_id: int | None = None) -> int | None:
    """Weekly retraining; without a shop id (the beat entry) it fans out to every active shop."""
    if shop_id is None:
        for active_id in active_shop_ids():
            conversion_model_train_task.delay(active_id)
        return None
    shop = Shop.objects.get(pk=shop_id)
    try:
        return services.conversion_model_train(shop=shop, now=timezone.now()).version
    except ValueError as error:
        # Too little data (an empty split) is a normal state for a new shop, not a failure to retry.
        logger.info("conversion model not trained for %s: %s", shop.domain, error)
        return None


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def model_health_check_task(shop_id: int | None = None) -> str | None:
    """Daily: the live scores against the outcomes; without a shop id (the beat entry) it fans
    out to every active shop. Returns the active version's status."""
    if shop_id is None:
        for active_id in active_shop_ids():
            model_health_check_task.delay(active_id)
        return None
    return monitor_services.model_health_check(shop_id=shop_id, now=timezone.now()).status


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def experiments_refresh_task(shop_id: int) -> int:
    """Fold new exposure events and recompute stale results; returns the results computed."""
    with follow_up_run(experiments_refresh_task, shop_id=shop_id) as runs:
        if not runs:
            return 0
        return results.experiments_refresh(shop_id=shop_id, now=timezone.now()).results


@shared_task
def experiments_refresh_sweep_task() -> int:
    """Beat: every shop with a running (or recently stopped) experiment, so results stay fresh
    when no new events arrive to trigger the pipeline follow-up."""
    shop_ids = results.shops_with_experiments(now=timezone.now())
    for shop_id in shop_ids:
        experiments_refresh_task.delay(shop_id)
    return len(shop_ids)


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def experiment_exposures_repair_task(shop_id: int) -> int:
    """After an erasure or a session rebuild: drop exposures of erased persons, re-link the rest."""
    return exposures.exposures_repair_run(shop_id=shop_id)


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def campaign_decisions_task(shop_id: int) -> int:
    """After the live scores of a batch: decide the running campaigns for the live sessions."""
    with follow_up_run(campaign_decisions_task, shop_id=shop_id) as runs:
        if not runs:
            return 0
        return decisions.campaign_decisions_run(shop_id=shop_id, now=timezone.now()).decisions


@shared_task
def campaign_decisions_sweep_task() -> int:
    """Beat: every shop with a running campaign, so a cart idle for N minutes is noticed when
    no new batch of that shop triggers the follow-up."""
    shop_ids = campaign_selectors.shops_with_running_campaigns()
    for shop_id in shop_ids:
        campaign_decisions_task.delay(shop_id)
    return len(shop_ids)


@shared_task(bind=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def campaign_delivery_send_task(self, delivery_id: int) -> str:
    """Send one campaign email or webhook at most once; a transient failure comes back at the
    row's `next_attempt_at` (exponential backoff, counted and capped by the service)."""
    delivery = deliveries.campaign_delivery_send(delivery_id=delivery_id, now=timezone.now())
    if (
        delivery.status == DeliveryStatus.PENDING
        and delivery.next_attempt_at is not None
        # Inline (tests, `process_events`) a retry would run at once, before it is due; the
        # sweep sends it when it is.
        and not self.request.is_eager
    ):
        wait = max((delivery.next_attempt_at - timezone.now()).total_seconds(), 0.0)
        # The service counts and caps the attempts; this bound only keeps Celery's in step.
        raise self.retry(countdown=wait, max_retries=settings.CAMPAIGN_DELIVERY_ATTEMPTS)
    return delivery.status


@shared_task
def campaign_deliveries_sweep_task() -> int:
    """Beat: mark rows a killed worker left claimed as uncertain; send due rows whose message
    or retry was lost. Returns how many were sent for."""
    result = deliveries.campaign_deliveries_sweep(now=timezone.now())
    if result.uncertain:
        logger.warning("%d campaign deliveries marked uncertain (worker lost)", result.uncertain)
    for delivery_id in result.due:
        campaign_delivery_send_task.delay(delivery_id)
    return len(result.due)
