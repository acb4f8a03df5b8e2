"""Enrolment and stored faces: ``/v1/enroll``, ``/v1/subjects/{id}/faces[/{face_id}[/crop]]``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from marginface.gallery import EnrollResult, PhotoOutcome
from marginface.gallery.recognizer import (
    EnrollmentError,
    IdentityConflictError,
    MismatchForceError,
)
from marginface.gallery.validate import clean_name, metadata_json
from marginface.serve.auth import AdminKey, EnrolKey, may_force_mismatch
from marginface.serve.deps import GalleryDep, RecognizerDep, ServiceDep
from marginface.serve.errors import ApiError
from marginface.serve.params import (
    AUTH_ERRORS,
    ENROL_ERRORS,
    NOT_FOUND,
    FaceId,
    ForceField,
    MultipleFacesField,
    SubjectId,
)
from marginface.serve.routers.common import (
    checked,
    read_photos,
    read_subject_photos,
    require_face,
    unknown_subject_is_404,
)
from marginface.serve.schemas import NAME_SCHEMA, EnrollOut
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
    responses=ENROL_ERRORS,
    summary="Enrol a new person from photos",
)
async def enroll(
    service: ServiceDep,
    recognizer: RecognizerDep,
    _key: EnrolKey,
    name: Annotated[
        str,
        Form(
            min_length=1,
            max_length=200,
            description="The person's name (no control characters; something visible).",
            json_schema_extra=NAME_SCHEMA,
        ),
    ],
    photos: Photos,
    metadata: Annotated[str | None, Form(description="A JSON object.")] = None,
    multiple_faces: MultipleFacesField = None,
    force: ForceField = False,
) -> Any:
    """Create a subject and enrol its faces in one transaction. Each photo is reported:
    enrolled, no face, several faces, near duplicate, unreadable, or held back as someone
    else's: matches_other (its face is identified as another subject; the subject, score and
    threshold are given) or duplicate_photo (the same photo is stored for another subject).
    force=true enrols those anyway, with the warning kept in the photo's outcome. When no photo
    can be enrolled nothing is created: 400 when none is a readable image, 409 when the usable
    photos are all someone else's, else 422, with the reason for each photo."""
    name = checked(clean_name, name)
    meta = _parse_metadata(metadata)
    files = await read_photos(service, photos)
    try:
        result = await service.run(
            "enroll",
            recognizer.enroll,
            name,
            files,
            metadata=meta,
            multiple_faces=multiple_faces,
            force=force,
        )
    except (EnrollmentError, IdentityConflictError) as exc:
        raise _nothing_enrolled(service, str(exc), exc.photos) from None
    return _enrolled(service, result)


@router.post(
    "/subjects/{subject_id}/faces",
    response_model=EnrollOut,
    status_code=status.HTTP_201_CREATED,
    responses={**ENROL_ERRORS, **NOT_FOUND},
    summary="Add photos to a subject",
)
async def add_faces(
    subject_id: SubjectId,
    service: ServiceDep,
    recognizer: RecognizerDep,
    key: EnrolKey,
    photos: Photos,
    multiple_faces: MultipleFacesField = None,
    force: ForceField = False,
) -> Any:
    """Enrol more photos of an existing subject in one transaction, with an outcome per photo.
    Besides the outcomes of POST /v1/enroll, a photo whose face does not look like the
    subject's own faces (best cosine below the 1:1 verification threshold) is held back as
    mismatch, with its score and the threshold: probably another person. force=true enrols
    photos held back as someone else's; a mismatch only with an admin key (an enrol key asking
    to force one gets 403 and nothing is stored). When none can be enrolled nothing changes:
    400 when none is a readable image, 422 photo_mismatch when every usable photo is a
    mismatch, 409 when they are someone else's, else 422, with the reasons."""
    files = await read_subject_photos(service, subject_id, photos)
    try:
        with unknown_subject_is_404(subject_id):
            result = await service.run(
                "enroll",
                recognizer.add_photos,
                subject_id,
                files,
                multiple_faces=multiple_faces,
                force=force,
                force_mismatch=force and may_force_mismatch(key),
            )
    except MismatchForceError as exc:
        _count_outcomes(service, exc.photos)
        raise ApiError(
            403,
            "admin_required",
            f"{exc}: an admin key must force it",
            details=[p.to_dict() for p in exc.photos],
        ) from None
    if result.enrolled == 0:
        reasons = "; ".join(
            f"{p.source}: {p.message if p.forceable else p.status.replace('_', ' ')}"
            for p in result.photos
        )
        raise _nothing_enrolled(
            service, f"no photo could be enrolled ({reasons})", result.photos, force_hint=True
        )
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
    gallery.subjects.delete_face(face_id)
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
    crop = gallery.subjects.face_crop(face_id)
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


def _nothing_enrolled(
    service: Service, message: str, photos: list[PhotoOutcome], *, force_hint: bool = False
) -> ApiError:
    """The error for an enrolment that stored nothing: 400 ``invalid_image`` when no photo was
    a readable image (as for every other photo route); when photos were held back that
    ``force`` would enrol, 422 ``photo_mismatch`` if all of them look unlike the subject, else
    409 ``identity_conflict`` (they are someone else's; ``force_hint`` adds that force=true
    enrols them, for a message that does not say so); otherwise 422 ``no_face_enrolled``.
    ``details`` give each photo's outcome (subject, score and threshold of a conflict)."""
    _count_outcomes(service, photos)
    details = [p.to_dict() for p in photos]
    if all(p.status == "unreadable" for p in photos):
        reasons = "; ".join(p.message for p in photos)
        return ApiError(
            400, "invalid_image", f"no photo is a readable image ({reasons})", details=details
        )
    held = [p for p in photos if p.forceable]
    if held and all(p.status == "mismatch" for p in held):
        return ApiError(
            422,
            "photo_mismatch",
            f"{message}; an admin key can add them anyway with force=true",
            details=details,
        )
    if held:
        if force_hint:
            message += "; force=true enrols them anyway"
        return ApiError(409, "identity_conflict", message, details=details)
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
