"""The Celery application; its configuration is the ``CELERY_*`` part of ``webapp.settings``.

A worker process, however it was started (``manage.py serve`` or ``celery -A webapp worker`` by
hand), caps its torch threads at ``GROUPWISE_WORKER_TORCH_THREADS`` before it takes any task
(``webapp.cores`` says why and the default's rule) and logs the number it trains with.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from celery import Celery, signals
from django.conf import settings

from webapp import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
broker.register()

app = Celery("groupwise")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)


@signals.worker_init.connect
def _cap_torch_threads(**_: Any) -> None:
    torch.set_num_threads(settings.GROUPWISE_WORKER_TORCH_THREADS)
    logger.info("torch threads: %d (GROUPWISE_WORKER_TORCH_THREADS)", torch.get_num_threads())
