"""Per-batch follow-ups are coalesced per stage and shop: while one message waits in the queue
the next batches send none; the task's start lets the next batch send again (real Redis)."""

import pytest
from django.core.cache import caches

from events import follow_ups
from notifications.tasks import scores_refresh_task


@pytest.fixture
def queued(settings, monkeypatch):
    """Run with a worker's settings (not eager) and record what would be sent to the broker."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    caches["default"].clear()
    sent: list[tuple[str, int]] = []
    for follow_up in follow_ups.follow_ups():
        monkeypatch.setattr(
            follow_up.task,
            "delay",
            lambda shop_id, name=follow_up.task.name: sent.append((name, shop_id)),
        )
    return sent


def test_a_waiting_stage_is_sent_once_and_again_after_it_started(queued):
    follow_ups.follow_ups_enqueue(shop_id=7)
    follow_ups.follow_ups_enqueue(shop_id=7)
    follow_ups.follow_ups_enqueue(shop_id=8)
    batch_stages = [f.task.name for f in follow_ups.follow_ups() if f.kind == follow_ups.PER_BATCH]

    assert queued == [(name, 7) for name in batch_stages] + [(name, 8) for name in batch_stages]

    follow_ups.follow_up_started(scores_refresh_task.name, 7)
    follow_ups.follow_ups_enqueue(shop_id=7)

    assert queued[-1] == (scores_refresh_task.name, 7)
    assert len(queued) == 2 * len(batch_stages) + 1


def test_the_waiting_mark_expires(queued, settings):
    settings.FOLLOW_UP_WAITING_SECONDS = 1
    follow_ups.follow_ups_enqueue(shop_id=7)
    caches["default"].delete(f"follow-up:waiting:{scores_refresh_task.name}:7")  # as if expired
    follow_ups.follow_ups_enqueue(shop_id=7)

    assert queued.count((scores_refresh_task.name, 7)) == 2


@pytest.mark.django_db
def test_every_batch_stage_clears_its_mark_when_it_starts(queued, shop):
    """A stage that never cleared its mark would run at most once a minute."""
    follow_ups.follow_ups_enqueue(shop_id=shop.pk)
    for follow_up in follow_ups.follow_ups():
        if follow_up.kind == follow_ups.PER_BATCH:
            follow_up.task.apply(args=[shop.pk], throw=True)  # a worker runs the message
    follow_ups.follow_ups_enqueue(shop_id=shop.pk)

    batch_stages = [f.task.name for f in follow_ups.follow_ups() if f.kind == follow_ups.PER_BATCH]
    sent_by_batches = [entry for entry in queued if entry[0] in batch_stages]
    assert sent_by_batches == [(name, shop.pk) for name in batch_stages] * 2


@pytest.mark.django_db
def test_the_live_scores_send_the_decisions_once_while_one_waits(queued, shop):
    from notifications.tasks import campaign_decisions_task

    scores_refresh_task.apply(args=[shop.pk], throw=True)
    scores_refresh_task.apply(args=[shop.pk], throw=True)
    assert queued.count((campaign_decisions_task.name, shop.pk)) == 1

    campaign_decisions_task.apply(args=[shop.pk], throw=True)
    scores_refresh_task.apply(args=[shop.pk], throw=True)
    assert queued.count((campaign_decisions_task.name, shop.pk)) == 2
