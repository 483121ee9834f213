"""What runs after the pipeline has processed events: one list, two ways to run it.

And what recomputes the aggregates once derived rows changed under them (an erasure, a shop's
sessions rebuilt): `settings.ERASURE_FOLLOW_UPS`, run by `recompute_run`.

The list is `settings.PIPELINE_FOLLOW_UPS`. The worker enqueues the per-batch stages after every
batch it processes (`follow_ups_enqueue`); `manage.py process_events` runs every stage in its own
process once it has caught up (`follow_ups_run`), so that a user who imports and processes history
reads current analytics straight away. The tasks live in apps that depend on events, so they are
resolved from their dotted paths here rather than imported.
"""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import Task
from django.conf import settings
from django.core.cache import caches
from django.db import DatabaseError
from django.utils.module_loading import import_string

from clickserver.sql import named_lock_release, named_lock_try

PER_BATCH = "batch"
CATCH_UP = "catch_up"
# What a recompute follow-up receives besides the shop id: the affected days, or nothing.
DAYS_SCOPE = "days"
SHOP_SCOPE = "shop"

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FollowUp:
    stage: str
    task_path: str
    # PIPELINE_FOLLOW_UPS: when it runs; ERASURE_FOLLOW_UPS (`recompute_run`): what it takes.
    kind: str

    @property
    def task(self) -> Task:
        return import_string(self.task_path)


@dataclass(frozen=True, slots=True)
class StageResult:
    stage: str
    result: Any
    seconds: float


def follow_ups_read(setting: str, *, kinds: tuple[str, ...]) -> list[FollowUp]:
    """A setting's list of (stage, task path, kind), checked before anything is sent."""
    stages = [FollowUp(*entry) for entry in getattr(settings, setting)]
    unknown = [stage.kind for stage in stages if stage.kind not in kinds]
    if unknown:
        raise ValueError(f"{setting}: unknown kind {unknown}, expected one of {list(kinds)}")
    return stages


def follow_ups() -> list[FollowUp]:
    return follow_ups_read("PIPELINE_FOLLOW_UPS", kinds=(PER_BATCH, CATCH_UP))


def follow_ups_enqueue(*, shop_id: int) -> None:
    """Send the per-batch stages; `delay` runs them inline when CELERY_TASK_ALWAYS_EAGER is set.

    Coalesced: a stage already waiting in the queue for this shop is not sent again. Each run
    covers everything processed before it starts, so one waiting message per stage and shop is
    enough; without this, a stage slower than the batches (the live scores of a shop at 2,000
    events/s) piled up a message per batch and fell further behind with every one.
    """
    for follow_up in follow_ups():
        if follow_up.kind == PER_BATCH:
            follow_up_enqueue(follow_up.task, shop_id=shop_id)


def follow_up_enqueue(task: Task, *, shop_id: int) -> None:
    """Send one stage for the shop unless a message of it is already waiting (see above); a
    stage that must follow another (campaign decisions after the live scores) is sent this way
    by the task it follows."""
    if not _waiting_claim(task.name, shop_id):
        return
    try:
        task.delay(shop_id)
    except Exception:
        # The broker is away: no message waits, so the next batch must be free to send one
        # (a mark left here held the stage back for its whole expiry after an outage).
        follow_up_started(task.name, shop_id)
        raise


def follow_up_started(task_name: str, shop_id: int) -> None:
    """Called first by every per-batch stage's task: its message has left the queue, so the
    next batch sends a new one (which then sees this batch and any later)."""
    try:
        caches["default"].delete(_waiting_key(task_name, shop_id))
    except Exception:
        logger.warning(
            "follow-up %s of shop %s: could not clear its waiting mark", task_name, shop_id
        )


@contextmanager
def follow_up_run(task: Task, *, shop_id: int) -> Iterator[bool]:
    """Around a per-batch stage's work: its message has left the queue (`follow_up_started`),
    and one run of the stage per shop goes at a time. Yields False when another run of it is
    going: the task returns at once, and the run going sends the stage once more when it ends,
    so that what this message was sent for is still covered.

    Without this, a batch processed during a run sent the next message, which a free worker
    process started beside the first: two live-score runs of a busy shop upserted the same rows
    in another order (MariaDB deadlocks, retried) and two rollup refreshes queued on one lock,
    each holding a process. The request is left before a second try, as in the pipeline's
    `events_process_task`, so that it is never lost between the two runs. The run holds a
    MariaDB named lock (`clickserver.sql.named_lock_try`), which the server drops with the
    connection of a worker killed mid-run. Redis down: a run whose stage is going returns as
    above, and the run going sends the stage again anyway (every stage is idempotent)."""
    follow_up_started(task.name, shop_id)
    claimed = _running_claim(task.name, shop_id)
    if not claimed:
        _again_request(task.name, shop_id)
        claimed = _running_claim(task.name, shop_id)
    if not claimed:
        yield False
        return
    try:
        yield True
    finally:
        _running_release(task.name, shop_id)
        if _again_take(task.name, shop_id):
            follow_up_enqueue(task, shop_id=shop_id)


def _running_claim(task_name: str, shop_id: int) -> bool:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return True
    try:
        return named_lock_try(_running_name(task_name, shop_id))
    except DatabaseError:
        return True  # the stage's own query reports the database


def _running_release(task_name: str, shop_id: int) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return
    try:
        named_lock_release(_running_name(task_name, shop_id))
    except DatabaseError:  # the connection is gone, and its lock with it
        logger.warning("follow-up %s of shop %s: could not release its lock", task_name, shop_id)


def _again_request(task_name: str, shop_id: int) -> None:
    try:
        caches["default"].set(
            _again_key(task_name, shop_id), 1, timeout=settings.CELERY_TASK_TIME_LIMIT + 60
        )
    except Exception:
        logger.warning("follow-up %s of shop %s: could not ask for a rerun", task_name, shop_id)


def _again_take(task_name: str, shop_id: int) -> bool:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return False
    try:
        return bool(caches["default"].delete(_again_key(task_name, shop_id)))
    except Exception:
        return True


def _running_name(task_name: str, shop_id: int) -> str:
    return f"follow-up:running:{task_name}:{shop_id}"


def _again_key(task_name: str, shop_id: int) -> str:
    return f"follow-up:again:{task_name}:{shop_id}"


def _waiting_claim(task_name: str, shop_id: int) -> bool:
    """True when no message of this stage for this shop is waiting (and mark one as waiting).

    The mark expires after FOLLOW_UP_WAITING_SECONDS, so a lost message delays the stage at
    most that long. Redis down: send anyway (every stage is idempotent)."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return True
    try:
        return bool(
            caches["default"].add(
                _waiting_key(task_name, shop_id), 1, timeout=settings.FOLLOW_UP_WAITING_SECONDS
            )
        )
    except Exception:
        return True


def _waiting_key(task_name: str, shop_id: int) -> str:
    return f"follow-up:waiting:{task_name}:{shop_id}"


def follow_ups_run(
    *, shop_id: int, on_stage: Callable[[StageResult], None] | None = None
) -> list[StageResult]:
    """Run every stage in this process, in order; a failing stage raises."""
    results = []
    for follow_up in follow_ups():
        started = time.monotonic()
        outcome = follow_up.task.apply(args=[shop_id], throw=True)
        result = StageResult(
            stage=follow_up.stage, result=outcome.result, seconds=time.monotonic() - started
        )
        results.append(result)
        if on_stage is not None:
            on_stage(result)
    return results


def recompute_follow_ups() -> list[FollowUp]:
    return follow_ups_read("ERASURE_FOLLOW_UPS", kinds=(DAYS_SCOPE, SHOP_SCOPE))


def recompute_run(*, shop_id: int, days: list[str] | None) -> None:
    """Run every recompute stage in this process, in order, for these ISO local days (all of the
    shop's days when None); a failing stage raises."""
    for follow_up in recompute_follow_ups():
        args: list[Any] = [shop_id, days] if follow_up.kind == DAYS_SCOPE else [shop_id]
        follow_up.task.apply(args=args, throw=True)
