from django.urls import path

from webapp.core.consumers import StatusConsumer
from webapp.runs.consumers import RunConsumer

websocket_urlpatterns = [
    path("ws/status/", StatusConsumer.as_asgi()),
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()),
]
