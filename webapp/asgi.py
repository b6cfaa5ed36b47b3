"""ASGI entry point: HTTP through Django, websockets through Channels, on one port."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# Django must be set up before the consumers (and the models they import) are imported.
django_http = get_asgi_application()
# Load the URL configuration now: it imports the views, the engine and torch (seconds), which
# would otherwise land on the first request, often a load balancer's or a test's /healthz.
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from webapp.core import watchdog  # noqa: E402
from webapp.routing import websocket_urlpatterns  # noqa: E402

# A web process notices dead workers' runs on its own, not only when asked (webapp.core.watchdog).
watchdog.start()

application = ProtocolTypeRouter(
    {
        "http": django_http,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
