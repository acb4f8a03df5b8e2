"""Enrolment and stored faces: ``/v1/enroll``, ``/v1/subjects/{id}/faces[/{face_id}[/crop]]``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from marginface.gallery import EnrollResult, PhotoOutcome
from marginface.gallery.recognizer import EnrollmentError
from marginface.gallery.validate import clean_name, metadata_json
from marginface.serve.auth import AdminKey, EnrolKey
from marginface.serve.deps import GalleryDep, RecognizerDep, ServiceDep
from marginface.serve.errors import ApiError
from marginface.serve.params import AUTH_ERRORS, NOT_FOUND, PHOTO_ERRORS, FaceId, SubjectId
from marginface.serve.routers.common import (
    checked,
    read_photos,
    read_subject_photos,
    require_face,
    unknown_subject_is_404,
)
from marginface.serve.schemas import EnrollOut
from marginface.serve.service import Service
from marginface.serve.uploads import InMemoryUploadRoute

__all__ = ["router"]

router = APIRouter(
    prefix="/v1", tags=["faces"], responses=AUTH_ERRORS, route_class=InMemoryUploadRoute
)

Photos = Annotated[list[UploadFile], File(description="One or more photos of the person.")]


@router.post(
    "/enroll",
    response_model=EnrollOut,
    status_code=status.HTTP_201_CREATED,
    responses=PHOTO_ERRORS,
    summary="Enrol a new person from photos",
)
async def enroll(
    service: ServiceDep,
    recognizer: RecognizerDep,
    _key: EnrolKey,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    photos: Photos,
    metadata: Annotated[str | None, Form(description="A JSON object.")] = None,
) -> Any:
    """Create a subject and enrol its faces in one transaction. Each photo is reported:
    enrolled, no face, several faces, near duplicate or unreadable. When no photo can be
    enrolled nothing is created: 400 when none is a readable image, else 422, with the reason
    for each photo."""
    name = checked(clean_name, name)
    meta = _parse_metadata(metadata)
    files = await read_photos(service, photos)
    try:
        result = await service.run("enroll", recognizer.enroll, name, files, metadata=meta)
    except EnrollmentError as exc:
        raise _nothing_enrolled(service, str(exc), exc.photos) from None
    return _enrolled(service, result)


@router.post(
    "/subjects/{subject_id}/faces",
    response_model=EnrollOut,
    status_code=status.HTTP_201_CREATED,
    responses={**PHOTO_ERRORS, **NOT_FOUND},
    summary="Add photos to a subject",
)
async def add_faces(
    subject_id: SubjectId,
    service: ServiceDep,
    recognizer: RecognizerDep,
    _key: EnrolKey,
    photos: Photos,
) -> Any:
    """Enrol more photos of an existing subject in one transaction, with an outcome per photo.
    When none can be enrolled nothing changes (400 when none is a readable image, else 422,
    with the reasons)."""
    files = await read_subject_photos(service, subject_id, photos)
    with unknown_subject_is_404(subject_id):
        result = await service.run("enroll", recognizer.add_photos, subject_id, files)
    if result.enrolled == 0:
        reasons = "; ".join(f"{p.source}: {p.status.replace('_', ' ')}" for p in result.photos)
        raise _nothing_enrolled(service, f"no photo could be enrolled ({reasons})", result.photos)
    return _enrolled(service, result)


@router.delete(
    "/subjects/{subject_id}/faces/{face_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND,
    summary="Erase one face",
)
def delete_face(
    subject_id: SubjectId, face_id: FaceId, gallery: GalleryDep, _key: AdminKey
) -> Response:
    """Delete one stored face embedding (from the store and the index, at once)."""
    require_face(gallery, subject_id, face_id)
    gallery.delete_face(face_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/subjects/{subject_id}/faces/{face_id}/crop",
    responses={**NOT_FOUND, 200: {"content": {"image/png": {}}}},
    response_class=Response,
    summary="The stored face crop",
)
def face_crop(
    subject_id: SubjectId, face_id: FaceId, gallery: GalleryDep, _key: AdminKey
) -> Response:
    """The aligned face crop kept at enrolment (only when the service stores photos)."""
    require_face(gallery, subject_id, face_id)
    crop = gallery.face_crop(face_id)
    if crop is None:
        raise ApiError(404, "crop_not_stored", "no crop is stored for this face")
    return Response(crop, media_type="image/png", headers={"Cache-Control": "no-store"})


def _count_outcomes(service: Service, photos: Sequence[PhotoOutcome]) -> None:
    for outcome in photos:
        service.metrics.enrolments.labels(outcome.status).inc()


def _enrolled(service: Service, result: EnrollResult) -> dict[str, Any]:
    """The answer to an enrolment that stored at least one face."""
    _count_outcomes(service, result.photos)
    body = result.to_dict()
    body["enrolled"] = result.enrolled
    return body


def _nothing_enrolled(service: Service, message: str, photos: list[PhotoOutcome]) -> ApiError:
    """The error for an enrolment that stored nothing: 400 ``invalid_image`` when no photo was
    a readable image (as for every other photo route), else 422 ``no_face_enrolled``."""
    _count_outcomes(service, photos)
    details = [p.to_dict() for p in photos]
    if all(p.status == "unreadable" for p in photos):
        reasons = "; ".join(p.message for p in photos)
        return ApiError(
            400, "invalid_image", f"no photo is a readable image ({reasons})", details=details
        )
    return ApiError(422, "no_face_enrolled", message, details=details)


def _parse_metadata(text: str | None) -> dict[str, Any] | None:
    """The ``metadata`` form field as an object, checked by the gallery's rule before any photo
    is processed (422 when it is not one the gallery would store)."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except (RecursionError, ValueError):  # JSONDecodeError is a ValueError
        raise ApiError(422, "invalid_request", "metadata is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_request", "metadata must be a JSON object")
    checked(metadata_json, value)
    return value
