"""A session-timeout change re-sessionises the shop, even when the broker lost the message."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from events import tasks
from events.models import Session, Shop
from events.services import sessions as sessions_module
from events.services.ingest import events_insert
from events.services.shops import shop_update
from events.tests.factories import event_in

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 1, 6, tzinfo=UTC)


def _two_events_twenty_minutes_apart(shop, process_all) -> None:
    events_insert(
        shop_id=shop.pk,
        events=[event_in("a", T0), event_in("b", T0 + timedelta(minutes=20))],
        received_at=RECEIVED,
    )
    process_all(shop)
    assert Session.objects.filter(shop=shop).count() == 1


@pytest.mark.django_db
def test_a_rebuild_lost_with_the_broker_is_sent_again_by_the_sweep(
    shop, process_all, celery_eager, monkeypatch, django_capture_on_commit_callbacks, settings
):
    _two_events_twenty_minutes_apart(shop, process_all)

    def broker_down(*args, **kwargs):
        raise BrokerError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(tasks.shop_sessions_rebuild_task, "delay", broker_down)
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            shop_update(shop=shop, data={"session_timeout_minutes": 10})

    shop.refresh_from_db()
    assert shop.session_timeout_minutes == 10
    assert shop.sessions_rebuild_requested_at is not None
    assert Session.objects.filter(shop=shop).count() == 1

    # A recent request may still be queued or running: the sweep leaves it alone.
    assert tasks.shop_sessions_rebuild_sweep_task() == 0
    assert Session.objects.filter(shop=shop).count() == 1

    Shop.objects.filter(pk=shop.pk).update(
        sessions_rebuild_requested_at=timezone.now()
        - timedelta(minutes=settings.SESSIONS_REBUILD_SWEEP_AFTER_MINUTES + 1)
    )
    assert tasks.shop_sessions_rebuild_sweep_task() == 1

    assert Session.objects.filter(shop=shop).count() == 2
    shop.refresh_from_db()
    assert shop.sessions_rebuild_requested_at is None
    assert tasks.shop_sessions_rebuild_sweep_task() == 0


@pytest.mark.django_db
def test_a_change_made_during_a_rebuild_keeps_its_request(shop, process_all, monkeypatch):
    _two_events_twenty_minutes_apart(shop, process_all)
    first = timezone.now() - timedelta(hours=1)
    Shop.objects.filter(pk=shop.pk).update(
        session_timeout_minutes=10, sessions_rebuild_requested_at=first
    )
    newer = timezone.now()
    real_sessions_rebuild = sessions_module.sessions_rebuild

    def rebuild_during_a_change(*, shop_id):
        # Another timeout change lands after the rebuild has read its request.
        Shop.objects.filter(pk=shop_id).update(sessions_rebuild_requested_at=newer)
        return real_sessions_rebuild(shop_id=shop_id)

    monkeypatch.setattr(sessions_module, "sessions_rebuild", rebuild_during_a_change)
    tasks.shop_sessions_rebuild_task(shop.pk)

    shop.refresh_from_db()
    assert shop.sessions_rebuild_requested_at == newer
    assert Session.objects.filter(shop=shop).count() == 2
