from django.apps import AppConfig


class RunsConfig(AppConfig):
    """Runs: their recipes, events, samples and checkpoints; the training task; the REST API."""

    name = "webapp.runs"
    label = "runs"
