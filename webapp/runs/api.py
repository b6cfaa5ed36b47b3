"""The REST API: runs, their events, samples and metrics; presets; recipe validation.

Users see and act on their own runs (staff on all); anyone else gets 404, never a hint that the
run exists. Invalid recipes are 400 with each problem under its field, the same messages as the
form (both go through ``services.build_recipe``).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action, api_view, throttle_classes
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle

from engine.presets import PRESETS
from engine.problems import RecipeError
from engine.run.metrics_table import rows_as_json
from webapp.runs import export_views, housekeeping, services
from webapp.runs.event_pages import event_page
from webapp.runs.live_state import run_state
from webapp.runs.metrics import MAX_POINTS, run_metrics
from webapp.runs.models import MAX_ID, Run
from webapp.runs.queue import queue_entries
from webapp.runs.quota import RateLimited
from webapp.runs.serializers import (
    CloneSerializer,
    DetailSerializer,
    EventPageSerializer,
    PresetSerializer,
    QueueEntrySerializer,
    RecipeRequestSerializer,
    RunCreateSerializer,
    RunSerializer,
    RunSettingsSerializer,
    SampleSerializer,
    ValidationSerializer,
    problems_as_errors,
)

EVENTS_PAGE = 500

# The error answers, documented so that clients (and the schema tests) know every status.
INVALID = OpenApiResponse(
    OpenApiTypes.OBJECT, description="Every problem under its field: {field: [message, …]}."
)
NOT_FOUND = OpenApiResponse(
    DetailSerializer, description="No such run among those you may see, or no such page."
)
CONFLICT = OpenApiResponse(DetailSerializer, description="The run's status does not allow it.")
#: A zip download's answers; ``?format=zip`` renders errors as text under the zip media type.
ZIP_DOWNLOAD = {
    (200, "application/zip"): OpenApiTypes.BINARY,
    (400, "application/json"): INVALID,
    (404, "application/json"): NOT_FOUND,
    (400, "application/zip"): OpenApiTypes.STR,
    (404, "application/zip"): OpenApiTypes.STR,
}
TOO_MANY = OpenApiResponse(
    DetailSerializer,
    description="Run-creation limit reached (GROUPWISE_RUN_CREATE_LIMIT); see Retry-After.",
)


TOO_MANY_CHECKS = OpenApiResponse(
    DetailSerializer,
    description="Recipe-check limit reached (GROUPWISE_RECIPE_CHECK_LIMIT); see Retry-After.",
)


class RecipeCheckThrottle(UserRateThrottle):
    """``validate`` and ``layout`` draw on one budget per user, ``GROUPWISE_RECIPE_CHECK_LIMIT``
    (read per request, so a changed setting applies at once)."""

    scope = "recipe-check"

    def get_rate(self) -> str | None:
        limit = settings.GROUPWISE_RECIPE_CHECK_LIMIT
        return None if limit is None else limit.text

    def parse_rate(self, rate: str | None) -> tuple[int | None, int | None]:
        # DRF's parser knows one-unit periods only ("5/m"); ours also takes "100/3600s".
        limit = settings.GROUPWISE_RECIPE_CHECK_LIMIT
        return (None, None) if rate is None or limit is None else (limit.count, limit.seconds)


class Pages(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def _int_param(request: Request, name: str) -> int | None:
    """A whole-number query parameter, one the database can compare with (64-bit)."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: [f"{name}={raw[:40]!r} is not an integer"]}) from None
    if abs(value) > MAX_ID:
        raise ValidationError({name: [f"{name}={raw[:40]} is out of range: at most {MAX_ID}"]})
    return value


def _include_superseded(request: Request) -> bool:
    """Whether ``?superseded=`` asks for the records a resume superseded too."""
    return request.query_params.get("superseded") in ("1", "true", "yes")


class CsvErrorRenderer(BaseRenderer):
    """Lets a client ask for CSV (``?format=csv``, ``Accept: text/csv``). The CSV itself is
    streamed by the view; only an error's detail is rendered here, as one line."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> Any:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        return f"{detail}\n".encode()


class ZipErrorRenderer(CsvErrorRenderer):
    """Lets a client send ``Accept: application/zip``; errors come back as one line of text."""

    media_type = "application/zip"
    format = "zip"


class RunViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = RunSerializer
    pagination_class = Pages
    # For the schema's path parameter type; requests go through get_queryset.
    queryset = Run.objects.none()
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> Any:
        runs = Run.objects.visible_to(self.request.user).select_related("owner")
        if self.action != "list":
            return runs.prefetch_related("tags")
        params = self.request.query_params
        status_filter = params.get("status")
        if status_filter:
            valid = {s.value for s in Run.Status}
            if status_filter not in valid:
                raise ValidationError({"status": [f"use one of {', '.join(sorted(valid))}"]})
        if params.get("archived", "") not in ("", "yes", "all", "no"):
            raise ValidationError({"archived": ["use yes, no or all"]})
        owner = params.get("owner")
        if owner:
            runs = runs.filter(owner__username=owner)
        return runs.filtered(params).prefetch_related("tags")

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, description="Only runs with this status."),
            OpenApiParameter("owner", str, description="Only this user's runs (staff)."),
            OpenApiParameter("q", str, description="Name, notes or a tag containing this text."),
            OpenApiParameter("tag", str, description="Only runs with this tag."),
            OpenApiParameter(
                "archived",
                str,
                enum=["no", "yes", "all"],
                description="Archived runs: hidden (no, the default), only them, or all.",
            ),
        ],
        responses={200: RunSerializer(many=True), 400: INVALID, 404: NOT_FOUND},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: RunSerializer, 404: NOT_FOUND})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(
        request=RunSettingsSerializer,
        responses={200: RunSerializer, 400: INVALID, 404: NOT_FOUND, 409: CONFLICT},
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        """Change notes, tags, notifications or the archived flag."""
        run = self.get_object()
        body = RunSettingsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        archived = data.pop("archived", None)
        try:
            if archived is not None:
                housekeeping.set_archived(run, archived)
            run = services.update_settings(run, **data)
        except housekeeping.HousekeepingError as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(RunSerializer(run).data)

    @extend_schema(request=None, responses={204: None, 404: NOT_FOUND, 409: CONFLICT})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        """Delete a run that is not active, with its images and checkpoints."""
        try:
            housekeeping.delete_run(self.get_object())
        except housekeeping.HousekeepingError as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=RunCreateSerializer, responses={201: RunSerializer, 400: INVALID, 429: TOO_MANY}
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = RunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            run = services.create_run(
                request.user,
                data["name"],
                data["built"],
                preset=data.get("preset") or "",
                notify={k: data[k] for k in ("notify_email", "webhook_url") if k in data},
                notes=data.get("notes"),
                tags=data.get("tags"),
            )
        except RateLimited as error:
            raise too_many(error) from None
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: RunSerializer, 404: NOT_FOUND, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        return self._transition(services.cancel_run)

    @extend_schema(request=None, responses={200: RunSerializer, 404: NOT_FOUND, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        return self._transition(services.resume_run)

    @extend_schema(
        request=CloneSerializer,
        responses={201: RunSerializer, 400: INVALID, 404: NOT_FOUND, 429: TOO_MANY},
    )
    @action(detail=True, methods=["post"])
    def clone(self, request: Request, pk: str | None = None) -> Response:
        body = CloneSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run = services.clone_run(
                self.get_object(),
                request.user,
                name=body.validated_data["name"],
                overrides=body.validated_data.get("overrides"),
            )
        except RecipeError as error:
            raise ValidationError(problems_as_errors(error)) from None
        except RateLimited as error:
            raise too_many(error) from None
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="Only events with seq greater than this."),
            OpenApiParameter(
                "superseded", bool, description="Include events a resume superseded (default no)."
            ),
            OpenApiParameter("type", str, description="Only events of this type."),
            OpenApiParameter("step", int, description="Only events of this step."),
        ],
        responses={200: EventPageSerializer, 400: INVALID, 404: NOT_FOUND},
    )
    @action(
        detail=True, methods=["get"], url_path="events", url_name="events", pagination_class=None
    )
    def events(self, request: Request, pk: str | None = None) -> Response:
        """Up to 500 events after ``after``, in order; ask again with the last seq for more."""
        run = self.get_object()
        events = run.events.filter(seq__gt=_int_param(request, "after") or 0)
        if not _include_superseded(request):
            events = events.filter(superseded=False)
        if request.query_params.get("type"):
            events = events.filter(type=request.query_params["type"][:40])
        step = _int_param(request, "step")
        if step is not None:
            events = events.filter(step=step)
        # The stored payloads go out as stored (``event_pages``): the page is written as text.
        page, more = event_page(events, EVENTS_PAGE, full=True)
        body = f'{{"results": {page.json}, "more": {json.dumps(more)}}}'
        return HttpResponse(body, content_type="application/json")

    @extend_schema(
        parameters=[
            OpenApiParameter("step", int, description="Samples of the rollout before this step."),
            OpenApiParameter("group", int, description="Only this prompt group."),
            OpenApiParameter("prompt", str, description="Prompts containing this text."),
            OpenApiParameter(
                "superseded", bool, description="Include samples a resume superseded (default no)."
            ),
        ],
        responses={200: SampleSerializer(many=True), 400: INVALID, 404: NOT_FOUND},
    )
    @action(detail=True, methods=["get"], url_path="samples", url_name="samples")
    def samples(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        samples = run.samples.all()
        if not _include_superseded(request):
            samples = samples.filter(superseded=False)
        step, group = _int_param(request, "step"), _int_param(request, "group")
        if step is not None:
            samples = samples.filter(step=step)
        if group is not None:
            samples = samples.filter(group_index=group)
        if request.query_params.get("prompt"):
            samples = samples.filter(prompt__icontains=request.query_params["prompt"])
        paginator = Pages()
        page = paginator.paginate_queryset(
            # A superseded sample comes before the one that replaced it (stored earlier).
            samples.order_by("step", "group_index", "index_in_group", "pk"),
            request,
        )
        return paginator.get_paginated_response(SampleSerializer(page, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "points",
                int,
                description="At most this many points per series (1 to "
                f"{MAX_POINTS}): longer series are downsampled, each point merging consecutive "
                "steps (first_step, span). Default: every point.",
            ),
            OpenApiParameter("from", int, description="Only steps from this one on (a zoom)."),
            OpenApiParameter("to", int, description="Only steps up to this one (a zoom)."),
        ],
        responses={200: OpenApiTypes.OBJECT, 400: INVALID, 404: NOT_FOUND},
    )
    @action(detail=True, methods=["get"], url_path="metrics", url_name="metrics")
    def metrics(self, request: Request, pk: str | None = None) -> Response:
        """Per-step series: reward mean/std per rollout, train metrics, evaluations, throughput."""
        run = self.get_object()
        points = _int_param(request, "points")
        if points is not None and not 1 <= points <= MAX_POINTS:
            raise ValidationError({"points": [f"points={points}: use 1 to {MAX_POINTS}"]})
        first, last = _int_param(request, "from"), _int_param(request, "to")
        return Response(run_metrics(run, points=points, first=first, last=last))

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 404: NOT_FOUND})
    @action(detail=True, methods=["get"], url_path="state", url_name="state")
    def state(self, request: Request, pk: str | None = None) -> HttpResponse:
        """What the run page opens with: the run's status, the last event's seq (follow the
        socket or the events from there), the latest rollout's prompt groups, the latest
        evaluation and health report, every evaluation's step and the last log lines."""
        return HttpResponse(run_state(self.get_object()), content_type="application/json")

    @extend_schema(responses={200: dict, 404: NOT_FOUND})
    @action(detail=True, methods=["get"], url_path="export", url_name="export")
    def export(self, request: Request, pk: str | None = None) -> Response:
        """What can be downloaded: checkpoint steps (newest first), the snippet that loads the
        latest one's weights, and the download URLs."""
        run = self.get_object()
        context = export_views.export_context(run)
        return Response(
            {
                "checkpoints": context["checkpoint_steps"],
                "snippet": context["snippet"],
                "links": {
                    "metrics": reverse("api-run-export-metrics", args=[run.pk]),
                    "samples": reverse("api-run-export-samples", args=[run.pk]),
                    "weights": reverse("api-run-export-weights", args=[run.pk]),
                },
            }
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=["json", "csv"], description="Default json.")
        ],
        responses={
            (200, "application/json"): inline_serializer(
                "MetricRow",
                fields={
                    "step": serializers.IntegerField(),
                    "rollout_index": serializers.IntegerField(),
                },
                many=True,
            ),
            (200, "text/csv"): OpenApiTypes.BINARY,
            (404, "application/json"): NOT_FOUND,
            # ?format=csv renders errors as text too.
            (404, "text/csv"): OpenApiTypes.STR,
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="export/metrics",
        url_name="export-metrics",
        pagination_class=None,
        renderer_classes=[JSONRenderer, CsvErrorRenderer],
    )
    def export_metrics(self, request: Request, pk: str | None = None) -> Any:
        """One row per optimizer step: train metrics, the rollout's reward mean/std and the
        evaluation reward where there was one; superseded records left out."""
        run = self.get_object()
        if request.accepted_renderer.format == "csv":
            return export_views.metrics_csv(run)
        return Response(rows_as_json(export_views.metric_rows(run)))

    @extend_schema(
        parameters=[OpenApiParameter("step", int, description="Only the rollout of this step.")],
        responses=ZIP_DOWNLOAD,
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="export/samples",
        url_name="export-samples",
        renderer_classes=[JSONRenderer, ZipErrorRenderer],
    )
    def export_samples(self, request: Request, pk: str | None = None) -> Any:
        """A zip of the run's sample images with manifest.csv (prompt, seed, reward, ...)."""
        return export_views.samples_zip(self.get_object(), _int_param(request, "step"))

    @extend_schema(
        parameters=[
            OpenApiParameter("step", int, description="The checkpoint's step (default latest).")
        ],
        responses=ZIP_DOWNLOAD,
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="export/weights",
        url_name="export-weights",
        renderer_classes=[JSONRenderer, ZipErrorRenderer],
    )
    def export_weights(self, request: Request, pk: str | None = None) -> Any:
        """A zip of a checkpoint's weights (LoRA adapter or full) with a loading README."""
        return export_views.weights_zip(self.get_object(), _int_param(request, "step"))

    def _transition(self, change: Any) -> Response:
        try:
            run = change(self.get_object())
        except services.TransitionError as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(RunSerializer(run).data)


def too_many(error: RateLimited) -> Throttled:
    """429 with ``Retry-After`` (DRF sets the header from ``wait``) and the limit explained."""
    return Throttled(wait=error.retry_after, detail=str(error))


@extend_schema(responses={200: QueueEntrySerializer(many=True)})
@api_view(["GET"])
def run_queue(request: Request) -> Response:
    """Running runs, then queued ones in the order workers take them."""
    return Response(QueueEntrySerializer(queue_entries(request.user), many=True).data)


@extend_schema(responses={200: PresetSerializer(many=True)})
@api_view(["GET"])
def presets(request: Request) -> Response:
    """Every preset with its description, source, recipe and layout."""
    return Response(
        [
            {
                "name": p.name,
                "description": p.description,
                "source": p.source,
                "recipe": p.recipe.to_dict(),
                "layout": services.layout_dict(p.recipe),
            }
            for p in PRESETS.values()
        ]
    )


@extend_schema(
    request=RecipeRequestSerializer,
    responses={200: ValidationSerializer, 400: INVALID, 429: TOO_MANY_CHECKS},
)
@api_view(["POST"])
@throttle_classes([RecipeCheckThrottle])
def validate_recipe(request: Request) -> Response:
    """200 for any recipe: ``valid``, every problem with its field, and the layout when valid;
    400 only for a body that is not a JSON request at all (malformed, too deep, not UTF-8)."""
    body = RecipeRequestSerializer(data=request.data)
    if body.is_valid():
        recipe = body.validated_data["built"]
        return Response(
            {
                "valid": True,
                "problems": [],
                "recipe": recipe.to_dict(),
                "layout": services.layout_dict(recipe),
            }
        )
    return Response(
        {
            "valid": False,
            "problems": [
                {"field": field, "message": str(message)}
                for field, messages in body.errors.items()
                for message in messages
            ],
        }
    )


@extend_schema(
    request=RecipeRequestSerializer,
    responses={200: OpenApiTypes.OBJECT, 400: INVALID, 429: TOO_MANY_CHECKS},
)
@api_view(["POST"])
@throttle_classes([RecipeCheckThrottle])
def recipe_layout(request: Request) -> Response:
    """The derived layout of a valid recipe; 400 with the problems otherwise."""
    body = RecipeRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    return Response(services.layout_dict(body.validated_data["built"]))
