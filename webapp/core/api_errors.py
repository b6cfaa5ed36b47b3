"""The API's exception handler: DRF's, plus the request-body limits Django enforces itself.

Django refuses a body past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (or with more fields or files than
``DATA_UPLOAD_MAX_NUMBER_FIELDS`` / ``_FILES``) by raising a ``SuspiciousOperation`` while DRF
reads it. DRF's handler leaves those alone, so an API client got Django's HTML 400 page. Here they
are JSON like every other API error: 413 for a body too large, 400 for too many parts, each
naming the limit and the setting that raises it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": body_too_large(context)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    if isinstance(exc, TooManyFieldsSent):
        return _too_many("fields", "DATA_UPLOAD_MAX_NUMBER_FIELDS")
    if isinstance(exc, TooManyFilesSent):
        return _too_many("files", "DATA_UPLOAD_MAX_NUMBER_FILES")
    return drf_exception_handler(exc, context)


def body_too_large(context: dict[str, Any]) -> str:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    request = context.get("request")
    sent = request.META.get("CONTENT_LENGTH") if request is not None else None
    size = f"{int(sent):,} bytes" if sent and str(sent).isdigit() else "larger than that"
    return (
        f"The request body is {size}: the API accepts at most {limit:,} bytes "
        "(DATA_UPLOAD_MAX_MEMORY_SIZE)."
    )


def _too_many(what: str, setting: str) -> Response:
    limit = getattr(settings, setting)
    return Response(
        {"detail": f"The request has more {what} than the {limit:,} allowed ({setting})."},
        status=status.HTTP_400_BAD_REQUEST,
    )
