from django.urls import path

from webapp.runs import export_views, views

urlpatterns = [
    path("runs/", views.run_list, name="run-list"),
    path("runs/new/", views.new_run, name="run-new"),
    path("runs/compare/", views.compare_runs, name="run-compare"),
    path("runs/queue/", views.run_queue, name="run-queue"),
    path("runs/<int:run_id>/", views.run_detail, name="run-detail-page"),
    path("runs/<int:run_id>/gallery/", views.run_gallery, name="run-gallery"),
    path("runs/<int:run_id>/settings/", views.run_settings, name="run-settings"),
    path(
        "runs/<int:run_id>/export/metrics.csv",
        export_views.export_metrics_csv,
        name="run-export-metrics-csv",
    ),
    path(
        "runs/<int:run_id>/export/metrics.json",
        export_views.export_metrics_json,
        name="run-export-metrics-json",
    ),
    path(
        "runs/<int:run_id>/export/samples.zip",
        export_views.export_samples,
        name="run-export-samples",
    ),
    path(
        "runs/<int:run_id>/export/weights.zip",
        export_views.export_weights_zip,
        name="run-export-weights",
    ),
    path("runs/<int:run_id>/<str:action>/", views.run_action, name="run-action"),
    path("media/runs/<int:run_id>/<path:path>", views.run_media, name="run-media"),
]
