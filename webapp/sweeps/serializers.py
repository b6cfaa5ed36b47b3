"""API shapes of sweeps: a sweep with its measured rows and report, and a launch request."""

from __future__ import annotations

from rest_framework import serializers

from webapp.sweeps.models import Sweep
from webapp.sweeps.services import MAX_ROLLOUTS


class SweepSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    best_size = serializers.SerializerMethodField()

    class Meta:
        model = Sweep
        fields = [
            "id",
            "owner",
            "run",
            "status",
            "sizes",
            "rollouts",
            "update",
            "best_size",
            "rows",
            "report",
            "error",
            "worker",
            "created_at",
            "started_at",
            "finished_at",
            "recipe",
        ]
        read_only_fields = fields

    def get_best_size(self, sweep: Sweep) -> int | None:
        return (sweep.report or {}).get("best_size")


class SweepCreateSerializer(serializers.Serializer):
    """A run to sweep, or a preset / recipe with overrides; sizes default to every valid M."""

    run = serializers.IntegerField(required=False, help_text="Sweep this run's recipe.")
    preset = serializers.CharField(required=False)
    recipe = serializers.JSONField(required=False)
    overrides = serializers.JSONField(required=False)
    sizes = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=64
    )
    rollouts = serializers.IntegerField(min_value=1, max_value=MAX_ROLLOUTS, default=2)
    update = serializers.BooleanField(default=False)
