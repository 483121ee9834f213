"""The Celery application: RabbitMQ in production, kombu's filesystem transport when embedded."""

import os

from celery import Celery
from celery.signals import worker_init
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
