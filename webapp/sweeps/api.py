"""The sweeps API: launch a microgroup sweep from a run or a recipe, and read its results."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from engine.problems import RecipeError
from webapp.runs import services
from webapp.runs.api import INVALID, NOT_FOUND, Pages, too_many
from webapp.runs.models import Run
from webapp.runs.quota import RateLimited
from webapp.runs.serializers import DetailSerializer, problems_as_errors
from webapp.sweeps.models import Sweep
from webapp.sweeps.serializers import SweepCreateSerializer, SweepSerializer
from webapp.sweeps.services import create_sweep
from webapp.sweeps.views import visible_sweeps

TOO_MANY_SWEEPS = OpenApiResponse(
    DetailSerializer,
    description="Sweep-creation limit reached (GROUPWISE_SWEEP_CREATE_LIMIT); see Retry-After.",
)


class SweepViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = SweepSerializer
    pagination_class = Pages
    queryset = Sweep.objects.none()
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> Any:
        return visible_sweeps(self.request.user)

    @extend_schema(responses={200: SweepSerializer(many=True), 404: NOT_FOUND})
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: SweepSerializer, 404: NOT_FOUND})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(
        request=SweepCreateSerializer,
        responses={201: SweepSerializer, 400: INVALID, 429: TOO_MANY_SWEEPS},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = SweepCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        run = None
        try:
            if "run" in data:
                run = Run.objects.visible_to(request.user).filter(pk=data["run"]).first()
                if run is None:
                    raise ValidationError({"run": [f"you have no run #{data['run']}"]})
                recipe = services.build_recipe(recipe=run.recipe, overrides=data.get("overrides"))
            else:
                recipe = services.build_recipe(
                    preset=data.get("preset"),
                    recipe=data.get("recipe"),
                    overrides=data.get("overrides"),
                )
            sweep = create_sweep(
                request.user,
                recipe,
                sizes=data.get("sizes"),
                rollouts=data["rollouts"],
                update=data["update"],
                run=run,
            )
        except RecipeError as error:
            raise ValidationError(problems_as_errors(error)) from None
        except RateLimited as error:
            raise too_many(error) from None
        return Response(SweepSerializer(sweep).data, status=status.HTTP_201_CREATED)
