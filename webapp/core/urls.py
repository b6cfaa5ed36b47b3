from django.urls import path

from webapp.core import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("status.json", views.status_json, name="status-json"),
    path("status/ping", views.ping_worker, name="ping-worker"),
]
