"""Per-batch follow-ups are coalesced per stage and shop: while one message waits in the queue
the next batches send none; the task's start lets the next batch send again (real Redis)."""

import threading

import pytest
from django.core.cache import caches
from django.db import connection

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


def test_a_send_that_fails_leaves_no_mark(queued, monkeypatch):
    """The broker away: nothing waits in the queue, so the next batch sends the stage again
    (a mark left behind held it back for its whole expiry after a RabbitMQ restart)."""
    from kombu.exceptions import OperationalError as BrokerError

    def broker_away(shop_id):
        raise BrokerError("connection refused")

    monkeypatch.setattr(scores_refresh_task, "delay", broker_away)
    with pytest.raises(BrokerError):
        follow_ups.follow_up_enqueue(scores_refresh_task, shop_id=7)
    monkeypatch.setattr(
        scores_refresh_task, "delay", lambda shop_id: queued.append(("sent", shop_id))
    )
    follow_ups.follow_up_enqueue(scores_refresh_task, shop_id=7)

    assert queued == [("sent", 7)]


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


def _claimed_elsewhere(shop_id: int) -> bool:
    """Whether a run in another worker process (its own database connection) gets the stage."""
    outcome: list[bool] = []

    def other_worker() -> None:
        try:
            with follow_ups.follow_up_run(scores_refresh_task, shop_id=shop_id) as runs:
                outcome.append(runs)
        finally:
            connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    thread.join(timeout=30)
    return outcome == [True]


@pytest.mark.django_db(transaction=True)
def test_one_run_of_a_stage_per_shop_at_a_time_and_the_holder_runs_again(queued, mysql_only):
    """A message that finds its stage running for the shop returns at once and leaves a
    request; the run going sends the stage once more when it ends (MariaDB lock, real Redis)."""
    with follow_ups.follow_up_run(scores_refresh_task, shop_id=7) as first:
        assert first is True
        assert _claimed_elsewhere(7) is False
        assert _claimed_elsewhere(8) is True
        assert queued == []
    assert queued == [(scores_refresh_task.name, 7)]  # shop 8's run was not asked again

    queued.clear()
    follow_ups.follow_up_started(scores_refresh_task.name, 7)  # that message left the queue
    with follow_ups.follow_up_run(scores_refresh_task, shop_id=7) as again:
        assert again is True
    assert queued == []  # nobody asked meanwhile: no further run


@pytest.mark.django_db(transaction=True)
def test_a_failing_or_killed_run_releases_its_stage(queued, mysql_only):
    with pytest.raises(RuntimeError), follow_ups.follow_up_run(scores_refresh_task, shop_id=7):
        raise RuntimeError("the database went away")
    assert _claimed_elsewhere(7) is True

    # A worker killed mid-run: its connection ends, and the server drops the lock with it.
    with follow_ups.follow_up_run(scores_refresh_task, shop_id=7) as runs:
        assert runs is True
        connection.close()
        assert _claimed_elsewhere(7) is True
