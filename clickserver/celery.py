"""The Celery application: RabbitMQ in production, kombu's filesystem transport when embedded."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")

app = Celery("clickserver")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
