"""The Celery application: RabbitMQ in production, kombu's filesystem transport when embedded."""

import os
import time

from celery import Celery
from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_shutdown,
)
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")

app = Celery("clickserver")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def metrics_serve_in_worker(**kwargs: object) -> None:
    """The worker's own /metrics (the pipeline's counters), from its main process."""
    if not (settings.METRICS_WORKER_BIND and settings.METRICS_TOKEN):
        return
    # Imported here, after settings have read .env: prometheus_client picks its value store
    # (PROMETHEUS_MULTIPROC_DIR or not) when first imported.
    from clickserver.metrics import metrics_serve

    metrics_serve(bind=settings.METRICS_WORKER_BIND, token=settings.METRICS_TOKEN)


# Task metrics (clickserver.metrics), by task name: bounded, our own code names them.
# Instrumentation only; no domain flow rides on these signals. Start times are per process, keyed
# by task id.
_started: dict[str, float] = {}


@task_prerun.connect
def metrics_task_started(task_id: str = "", **kwargs: object) -> None:
    _started[task_id] = time.perf_counter()


@task_postrun.connect
def metrics_task_finished(task_id: str = "", task=None, state: str = "", **kwargs: object) -> None:
    from clickserver.metrics import CELERY_TASK_DURATION, CELERY_TASKS, process_sample

    name = getattr(task, "name", "unknown")
    started = _started.pop(task_id, None)
    if started is not None:
        CELERY_TASK_DURATION.labels(task=name).observe(time.perf_counter() - started)
    # FAILURE and RETRY are counted by their own signals, which carry the exception.
    if state == "SUCCESS":
        CELERY_TASKS.labels(task=name, outcome="success").inc()
    process_sample()


@task_failure.connect
def metrics_task_failed(sender=None, **kwargs: object) -> None:
    from clickserver.metrics import CELERY_TASKS

    CELERY_TASKS.labels(task=getattr(sender, "name", "unknown"), outcome="failure").inc()


@task_retry.connect
def metrics_task_retried(sender=None, **kwargs: object) -> None:
    from clickserver.metrics import CELERY_TASKS

    CELERY_TASKS.labels(task=getattr(sender, "name", "unknown"), outcome="retry").inc()


@worker_process_shutdown.connect
def metrics_process_dead(pid: int | None = None, **kwargs: object) -> None:
    """A pool process that exits drops its live gauges (CPU, memory), as gunicorn's child_exit
    does for web workers; its counters stay summed."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
