from django.apps import AppConfig


class SweepsConfig(AppConfig):
    """Sweeps: one recipe's rollouts measured at every microgroup size M; pages, API and task."""

    name = "webapp.sweeps"
    label = "sweeps"

    def ready(self) -> None:
        from webapp.core.heartbeat import liveness_checked
        from webapp.sweeps.recovery import on_liveness_checked

        # Whenever a worker beats or someone checks health, sweeps of dead workers are failed.
        liveness_checked.connect(on_liveness_checked, dispatch_uid="sweeps.recovery")
