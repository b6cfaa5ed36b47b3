from django.apps import AppConfig


class RunsConfig(AppConfig):
    """Runs: their recipes, events, samples and checkpoints; the training task; the REST API."""

    name = "webapp.runs"
    label = "runs"

    def ready(self) -> None:
        from webapp.core.heartbeat import liveness_checked
        from webapp.core.status import visible_run_ids
        from webapp.runs.queue import on_visible_run_ids
        from webapp.runs.recovery import on_liveness_checked

        # Whenever a worker beats or someone checks health, runs of dead workers are recovered.
        liveness_checked.connect(on_liveness_checked, dispatch_uid="runs.recovery")
        # The status panel names the run a worker trains only to those who may see it.
        visible_run_ids.connect(on_visible_run_ids, dispatch_uid="runs.visibility")
