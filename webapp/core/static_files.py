"""WhiteNoise's static files, streamed under ASGI like every other file the dashboard sends.

WhiteNoise answers with a ``FileResponse`` over a synchronous file, which Django's ASGI handler
would read whole in a thread, warning each time; ``StaticFiles`` is WhiteNoise's middleware with
its answer built as a ``webapp.core.streaming`` response instead, headers exactly as WhiteNoise
sets them.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from whitenoise.middleware import WhiteNoiseFileResponse, WhiteNoiseMiddleware

from webapp.core.streaming import FileDownload


class _StaticFileResponse(FileDownload, WhiteNoiseFileResponse):
    """Only WhiteNoise's headers (``WhiteNoiseFileResponse`` sets none of its own)."""


class StaticFiles(WhiteNoiseMiddleware):
    """``whitenoise.middleware.WhiteNoiseMiddleware`` whose files stream under ASGI."""

    @staticmethod
    def serve(static_file: Any, request: HttpRequest) -> _StaticFileResponse:
        answer = static_file.get_response(request.method, request.META)
        response = _StaticFileResponse(answer.file or (), status=int(answer.status))
        del response["Content-Type"]
        for key, value in answer.headers:
            response[key] = value
        return response
