"""The Celery application; its configuration is the ``CELERY_*`` part of ``webapp.settings``."""

from __future__ import annotations

import os

from celery import Celery

from webapp import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
broker.register()

app = Celery("groupwise")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
