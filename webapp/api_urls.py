"""URLs under /api/. DRF views authenticate themselves (token or session) and answer 401/403 as
JSON: DRF marks them exempt from Django's login redirect. The Swagger page is for browsers, so
an anonymous visitor is sent to the login page like everywhere else."""

from django.contrib.auth.decorators import login_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from webapp.runs import api
from webapp.sweeps import api as sweep_api

router = SimpleRouter()
router.register("runs", api.RunViewSet, basename="api-run")
router.register("sweeps", sweep_api.SweepViewSet, basename="api-sweep")

urlpatterns = [
    *router.urls,
    path("queue/", api.run_queue, name="api-queue"),
    path("presets/", api.presets, name="api-presets"),
    path("recipes/validate/", api.validate_recipe, name="api-recipe-validate"),
    path("recipes/layout/", api.recipe_layout, name="api-recipe-layout"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "docs/",
        login_required(SpectacularSwaggerView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
]
