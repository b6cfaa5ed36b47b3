from django.urls import path

from webapp.sweeps import views

urlpatterns = [
    path("runs/<int:run_id>/sweep/", views.launch_sweep, name="run-sweep"),
    path("sweeps/", views.sweep_list, name="sweep-list"),
    path("sweeps/<int:sweep_id>/", views.sweep_detail, name="sweep-detail"),
    path("sweeps/<int:sweep_id>/launch/", views.launch_best, name="sweep-launch-best"),
]
