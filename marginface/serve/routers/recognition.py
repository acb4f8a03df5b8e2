"""Recognition: ``/v1/identify`` (every face in a photo) and ``/v1/verify`` (one face)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from marginface.gallery import RecognizedFace
from marginface.gallery.validate import clean_name
from marginface.serve.auth import RecogniseKey, may_see_candidates
from marginface.serve.deps import RecognizerDep, ServiceDep
from marginface.serve.errors import ApiError
from marginface.serve.params import AUTH_ERRORS, NOT_FOUND, PHOTO_ERRORS
from marginface.serve.routers.common import (
    checked,
    read_photos,
    read_subject_photos,
    unknown_subject_is_404,
)
from marginface.serve.schemas import NAME_SCHEMA, IdentifyOut, VerifyOut
from marginface.serve.uploads import InMemoryUploadRoute

__all__ = ["router"]

router = APIRouter(
    prefix="/v1", tags=["recognition"], responses=AUTH_ERRORS, route_class=InMemoryUploadRoute
)


@router.post(
    "/identify",
    response_model=IdentifyOut,
    responses=PHOTO_ERRORS,
    summary="Identify every face in a photo",
)
async def identify(
    service: ServiceDep,
    recognizer: RecognizerDep,
    key: RecogniseKey,
    photo: Annotated[UploadFile, File(description="The photo to search.")],
    source: Annotated[
        str | None,
        Form(
            max_length=100,
            description="Camera or door name recorded with the event.",
            json_schema_extra=NAME_SCHEMA,
        ),
    ] = None,
    fpir: Annotated[
        float | None,
        Form(
            gt=0.0,
            lt=1.0,
            description="Target false positive identification rate for this "
            "request (default: the service's, normally 0.01): the share of people who are "
            "not enrolled that would be identified as someone. Lower is stricter.",
        ),
    ] = None,
) -> Any:
    """Find every face, then answer each one: the matching subject with its score, or unknown
    below the threshold of the operating point. ``operating_point`` says how it was decided:
    the threshold in force, the target FPIR and the gallery size it was derived for.
    ``candidates`` (the nearest subjects, with names and scores) are given to enrol and admin
    keys; for a recognise key they are null unless the service is configured to show them.
    When events are on, each answer is logged with the time, the source (default ``api``) and
    the result. No face: 422 ``no_face``."""
    # A blank source means the default, decided here: nothing may fail after the photo's work.
    if source is not None and not source.strip():
        source = None
    if source is not None:
        source = checked(clean_name, source, what="source", max_length=100)
    ((name, data),) = await read_photos(service, [photo])
    settings = service.settings
    log_source = (source or "api") if settings.events else None
    faces = await service.run(
        "identify", recognizer.identify, (name, data), source=log_source, fpir=fpir
    )
    service.metrics.faces_detected.labels("identify").inc(len(faces))
    if not faces:
        raise ApiError(422, "no_face", f"no face found in {name}")
    for face in faces:
        result = "match" if face.identification.known else "unknown"
        service.metrics.identifications.labels(result).inc()
    show = may_see_candidates(key, settings)
    out = [_face_out(f, candidates=show, max_candidates=settings.max_matches) for f in faces]
    return {"faces": out, "source": log_source}


@router.post(
    "/verify",
    response_model=VerifyOut,
    responses={**PHOTO_ERRORS, **NOT_FOUND},
    summary="Verify a face",
)
async def verify(
    service: ServiceDep,
    recognizer: RecognizerDep,
    _key: RecogniseKey,
    photo: Annotated[UploadFile, File(description="The photo to check.")],
    photo_b: Annotated[
        UploadFile | None, File(description="A second photo to compare with.")
    ] = None,
    subject_id: Annotated[
        str | None, Form(description="Or: the enrolled subject to compare with.")
    ] = None,
) -> Any:
    """Whether the largest face of ``photo`` is the same person as the largest face of
    ``photo_b``, or as the enrolled subject ``subject_id`` (give exactly one)."""
    if (photo_b is None) == (subject_id is None):
        raise ApiError(422, "invalid_request", "give exactly one of photo_b and subject_id")
    if subject_id is not None:
        ((name, data),) = await read_subject_photos(service, subject_id, [photo])
        with unknown_subject_is_404(subject_id):
            return await service.run("verify", recognizer.verify_subject, (name, data), subject_id)
    assert photo_b is not None
    (a, b) = await read_photos(service, [photo, photo_b])
    return await service.run("verify", recognizer.verify, a, b)


def _face_out(face: RecognizedFace, *, candidates: bool, max_candidates: int) -> dict[str, Any]:
    answer = face.answer(candidates=candidates)
    if answer["candidates"] is not None:
        answer["candidates"] = answer["candidates"][:max_candidates]
    return answer
