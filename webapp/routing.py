from django.urls import path, re_path

from webapp.core.consumers import StatusConsumer, UnknownPathConsumer
from webapp.runs.consumers import RunConsumer

websocket_urlpatterns = [
    path("ws/status/", StatusConsumer.as_asgi()),
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()),
    # Last: whatever else a client asks for is closed, not an exception in the router.
    re_path(r"", UnknownPathConsumer.as_asgi()),
]
