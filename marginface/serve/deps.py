"""FastAPI dependencies that hand routes the app's service, gallery and recogniser.

Tests replace any of them with ``app.dependency_overrides``. They only read ``app.state``, so
they are ``async`` (no thread hop per request).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from marginface.gallery import Gallery, Recognizer
from marginface.serve.errors import ApiError
from marginface.serve.service import Service

__all__ = [
    "GalleryDep",
    "RecognizerDep",
    "ServiceDep",
    "get_gallery",
    "get_recognizer",
    "get_service",
]


async def get_service(request: Request) -> Service:
    """The service of the app handling this request (503 before startup has finished)."""
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise ApiError(503, "unavailable", "the service is starting or stopping; retry shortly")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_gallery(service: ServiceDep) -> Gallery:
    """The gallery (subjects, faces, events, keys)."""
    return service.gallery


async def get_recognizer(service: ServiceDep) -> Recognizer:
    """The photo-level recogniser (pipeline + gallery)."""
    return service.recognizer


GalleryDep = Annotated[Gallery, Depends(get_gallery)]
RecognizerDep = Annotated[Recognizer, Depends(get_recognizer)]
