from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Site-wide pieces: worker heartbeats, health status, login, media and the home page."""

    name = "webapp.core"
    label = "core"

    def ready(self) -> None:
        # Registers the system checks, and connects the Celery worker signals that write
        # heartbeats (inert in the web process).
        from webapp.core import checks, heartbeat  # noqa: F401
