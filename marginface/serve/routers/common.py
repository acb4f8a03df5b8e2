"""Helpers the ``/v1`` routers share: existence checks answered as 404, input rules answered as
422, and reading uploaded photos.

The existence checks call the gallery synchronously: sync (``def``) routes call them directly
(FastAPI runs those in its threadpool); ``async def`` routes must call them through
``run_in_threadpool`` (as :func:`read_subject_photos` does) so that no SQL runs on the event
loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from marginface.errors import GalleryError, NotFoundError
from marginface.gallery import Gallery
from marginface.serve.errors import ApiError
from marginface.serve.service import Service

__all__ = [
    "checked",
    "read_photos",
    "read_subject_photos",
    "require_face",
    "require_subject",
    "subject_not_found",
    "unknown_subject_is_404",
]

T = TypeVar("T")


def subject_not_found(subject_id: str) -> ApiError:
    return ApiError(404, "subject_not_found", f"no subject with id {subject_id!r}")


@contextmanager
def unknown_subject_is_404(subject_id: str) -> Iterator[None]:
    """Answer the gallery's :class:`NotFoundError` as 404 ``subject_not_found``.

    For gallery calls whose only "not found" is the subject: the gallery checks that the subject
    exists inside the same transaction as the work, so a route needs no check of its own.
    """
    try:
        yield
    except NotFoundError:
        raise subject_not_found(subject_id) from None


def require_subject(gallery: Gallery, subject_id: str) -> None:
    """404 unless the subject exists (blocking: off the event loop in async routes)."""
    if not gallery.subjects.exists(subject_id):
        raise subject_not_found(subject_id)


def require_face(gallery: Gallery, subject_id: str, face_id: int) -> None:
    """404 unless the subject exists and ``face_id`` is one of its faces.

    The gallery has no "face of this subject" operation yet, so the rule lives here, checked
    before the work and not in its transaction (see docs/architecture.md, ``marginface.serve``).
    """
    require_subject(gallery, subject_id)
    try:
        face = gallery.subjects.get_face(face_id)
    except NotFoundError:
        face = None
    if face is None or face.subject_id != subject_id:
        raise ApiError(404, "face_not_found", f"subject {subject_id!r} has no face {face_id}")


def checked(rule: Callable[..., T], value: Any, **kwargs: Any) -> T:
    """``rule(value)``, its :class:`GalleryError` as a 422 before any work is done."""
    try:
        return rule(value, **kwargs)
    except GalleryError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


async def read_photos(service: Service, files: list[UploadFile]) -> list[tuple[str, bytes]]:
    """The uploaded files as ``(name, bytes)``, in memory only (413 past ``max_photos``)."""
    if len(files) > service.settings.max_photos:
        raise ApiError(
            413,
            "too_many_photos",
            f"{len(files)} photos sent; at most {service.settings.max_photos} per request",
        )
    photos = []
    for i, upload in enumerate(files):
        data = await upload.read()
        await upload.close()
        photos.append((upload.filename or f"photo[{i}]", data))
    return photos


async def read_subject_photos(
    service: Service, subject_id: str, files: list[UploadFile]
) -> list[tuple[str, bytes]]:
    """:func:`read_photos` for work on one subject, once the subject is known to exist: 404
    first (checked in a worker thread, not on the event loop), so a request for an unknown
    subject never waits for a pipeline thread."""
    await run_in_threadpool(require_subject, service.gallery, subject_id)
    return await read_photos(service, files)
