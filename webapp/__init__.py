"""Groupwise's Django project: forms, views, REST API, Channels consumers and Celery tasks.

The Celery app is imported here so that ``celery -A webapp`` and Django share one configuration.
"""

from webapp.celery import app as celery_app

__all__ = ["celery_app"]
