"""API shapes of runs, events, samples and recipe requests."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from engine.problems import RecipeError
from webapp.runs import services
from webapp.runs.models import Event, Run, Sample


def problems_as_errors(error: RecipeError) -> dict[str, list[str]]:
    """Each problem under its dotted field path, the way DRF reports field errors."""
    errors: dict[str, list[str]] = {}
    for problem in error.problems:
        errors.setdefault(problem.field, []).append(problem.message)
    return errors


class RecipeRequestSerializer(serializers.Serializer):
    """A preset with overrides, or a whole recipe with overrides."""

    preset = serializers.CharField(
        required=False, allow_null=True, help_text="A preset name, e.g. tiny-color."
    )
    recipe = serializers.JSONField(
        required=False, allow_null=True, help_text="A whole recipe, nested by concern."
    )
    overrides = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="{name: value}: a vocabulary name or a dotted path per key; null: none.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            attrs["built"] = services.build_recipe(
                preset=attrs.get("preset"),
                recipe=attrs.get("recipe"),
                overrides=attrs.get("overrides"),
            )
        except RecipeError as error:
            raise serializers.ValidationError(problems_as_errors(error)) from None
        return attrs


class RunSettingsSerializer(serializers.Serializer):
    """What the owner may change on a run at any time."""

    notes = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    tags = serializers.ListField(
        child=serializers.CharField(max_length=50), required=False, max_length=20
    )
    notify_email = serializers.BooleanField(required=False)
    webhook_url = serializers.CharField(required=False, allow_blank=True, max_length=500)
    archived = serializers.BooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, list[str]] = {}
        for name, check in (
            ("tags", services.parse_tags),
            ("webhook_url", services.check_webhook_url),
        ):
            if name in attrs:
                try:
                    attrs[name] = check(attrs[name])
                except services.SettingsError as error:
                    errors.update(error.errors)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class RunCreateSerializer(RecipeRequestSerializer, RunSettingsSerializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = RunSettingsSerializer.validate(self, attrs)
        return RecipeRequestSerializer.validate(self, attrs)


class CloneSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    overrides = serializers.JSONField(
        required=False, allow_null=True, help_text="{name: value}; null or absent: none."
    )


class RunSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    # Empty when unset, which a "uri" format would refuse.
    webhook_url = serializers.CharField(read_only=True, help_text="Empty when unset.")
    links = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "name",
            "owner",
            "preset",
            "status",
            "step",
            "max_steps",
            "created_at",
            "started_at",
            "finished_at",
            "worker",
            "error",
            "attempts",
            "cloned_from",
            "recipe",
            "reproducibility",
            "notes",
            "tags",
            "notify_email",
            "webhook_url",
            "archived",
            "disk_bytes",
            "health",
            "queued_at",
            "links",
        ]
        read_only_fields = fields

    def get_links(self, run: Run) -> dict[str, str]:
        return {
            "page": reverse("run-detail-page", args=[run.pk]),
            "events": reverse("api-run-events", args=[run.pk]),
            "samples": reverse("api-run-samples", args=[run.pk]),
            "metrics": reverse("api-run-metrics", args=[run.pk]),
        }


class QueueEntrySerializer(serializers.Serializer):
    """A queued or running run; ``id`` and ``name`` are null for another user's run."""

    position = serializers.IntegerField(allow_null=True, help_text="1-based; null when running.")
    id = serializers.IntegerField(allow_null=True)
    name = serializers.CharField(allow_null=True)
    status = serializers.CharField()
    host = serializers.CharField(allow_blank=True)
    device = serializers.CharField(allow_null=True)
    waiting_for = serializers.CharField(allow_blank=True)

    def to_representation(self, entry: Any) -> dict[str, Any]:
        run = entry.run
        return {
            "position": entry.position,
            "id": run.pk if entry.visible else None,
            "name": run.name if entry.visible else None,
            "status": run.status,
            # The run records its worker's node name, name@host.
            "host": run.worker.rpartition("@")[2],
            "device": (run.reproducibility or {}).get("device"),
            "waiting_for": entry.waiting_for,
        }


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["seq", "type", "step", "time", "superseded", "payload"]
        read_only_fields = fields


class SampleSerializer(serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = Sample
        fields = [
            "id",
            "step",
            "rollout_index",
            "group_index",
            "prompt",
            "index_in_group",
            "seed",
            "reward",
            "components",
            "advantage",
            "superseded",
            "image_url",
            "thumbnail_url",
        ]
        read_only_fields = fields

    def get_image_url(self, sample: Sample) -> str:
        return settings.MEDIA_URL + sample.image

    def get_thumbnail_url(self, sample: Sample) -> str:
        return settings.MEDIA_URL + sample.thumbnail


class DetailSerializer(serializers.Serializer):
    """An error the client cannot fix field by field: 404, 409, 429."""

    detail = serializers.CharField()


class PresetSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    source = serializers.CharField()
    recipe = serializers.DictField(help_text="The preset's whole recipe.")
    layout = serializers.DictField(
        help_text="The derived layout of its first rollout, with the memory plan under memory."
    )


class EventPageSerializer(serializers.Serializer):
    results = EventSerializer(many=True)
    more = serializers.BooleanField(help_text="More events follow: ask again with the last seq.")


class ProblemSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="Dotted recipe path, e.g. layout.rollout_batch_size.")
    message = serializers.CharField()


class ValidationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    problems = ProblemSerializer(many=True)
    recipe = serializers.DictField(required=False, help_text="The validated recipe, when valid.")
    layout = serializers.DictField(
        required=False,
        help_text="Its derived layout, with the memory plan per GPU under memory, when valid.",
    )
