"""The ``/v1`` REST API: subjects, faces, identify, verify, events, attendance and API keys."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile, status
from fastapi.responses import PlainTextResponse
from pydantic import AfterValidator

from marginface.errors import ConflictError, GalleryError, NotFoundError
from marginface.gallery import EnrollResult, RecognizedFace
from marginface.gallery.recognizer import EnrollmentError
from marginface.gallery.validate import clean_name, metadata_json
from marginface.serve.auth import ROLE_RANK, AdminKey, CurrentKey, EnrolKey, RecogniseKey
from marginface.serve.deps import GalleryDep, RecognizerDep, ServiceDep
from marginface.serve.errors import ApiError
from marginface.serve.schemas import (
    AttendanceOut,
    EnrollOut,
    ErrorOut,
    EventListOut,
    IdentifyOut,
    KeyCreate,
    KeyCreatedOut,
    KeyOut,
    SubjectCreate,
    SubjectDetailOut,
    SubjectListOut,
    SubjectOut,
    SubjectUpdate,
    VerifyOut,
)
from marginface.serve.uploads import InMemoryUploadRoute

__all__ = ["router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or wrong API key."},
    403: {"model": ErrorOut, "description": "The key's role may not do this."},
}
_PHOTO_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {
        "model": ErrorOut,
        "description": "No photo is a readable image (each is named, with the reason), or the "
        "multipart body is malformed.",
    },
    413: {"model": ErrorOut, "description": "The upload is larger than the limit."},
    422: {"model": ErrorOut, "description": "No face found, or invalid fields."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such subject (or face, or key)."}
}

router = APIRouter(prefix="/v1", responses=_ERRORS, route_class=InMemoryUploadRoute)

#: Ids and offsets are 64-bit integers in SQL; larger numbers are refused with 422, not 500.
_MAX_ID = 2**63 - 1
#: No listing is that long; a bound keeps OFFSET arithmetic far from any overflow.
_MAX_OFFSET = 10**9
#: Days and times the service can represent in every time zone (a day is a range of 24 h
#: around it, which must stay inside Python's years 1 to 9999).
_FIRST_DAY, _LAST_DAY = date(1970, 1, 2), date(9998, 12, 31)


def _day_in_range(day: date) -> date:
    if not _FIRST_DAY <= day <= _LAST_DAY:
        raise ValueError(f"must lie between {_FIRST_DAY} and {_LAST_DAY}")
    return day


def _time_in_range(when: datetime) -> datetime:
    _day_in_range(when.date())
    return when


Day = Annotated[date, AfterValidator(_day_in_range)]
Time = Annotated[datetime, AfterValidator(_time_in_range)]
SubjectId = Annotated[str, Path(min_length=1, max_length=64, description="The subject's id.")]
FaceId = Annotated[int, Path(ge=1, le=_MAX_ID, description="The face's id.")]
KeyId = Annotated[str, Path(min_length=1, max_length=64, description="The key's id.")]
Offset = Annotated[int, Query(ge=0, le=_MAX_OFFSET)]


def _subject_not_found(subject_id: str) -> ApiError:
    return ApiError(404, "subject_not_found", f"no subject with id {subject_id!r}")


def _require_subject(gallery: GalleryDep, subject_id: str) -> None:
    if not gallery.has_subject(subject_id):
        raise _subject_not_found(subject_id)


def _require_face(gallery: GalleryDep, subject_id: str, face_id: int) -> None:
    """404 unless the subject exists and ``face_id`` is one of its faces."""
    _require_subject(gallery, subject_id)
    try:
        face = gallery.get_face(face_id)
    except NotFoundError:
        face = None
    if face is None or face.subject_id != subject_id:
        raise ApiError(404, "face_not_found", f"subject {subject_id!r} has no face {face_id}")


def _checked(rule: Any, value: Any, **kwargs: Any) -> Any:
    """``rule(value)``, its :class:`GalleryError` as a 422 before any work is done."""
    try:
        return rule(value, **kwargs)
    except GalleryError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


async def _read_photos(service: ServiceDep, files: list[UploadFile]) -> list[tuple[str, bytes]]:
    """The uploaded files as ``(name, bytes)``, in memory only."""
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


def _enroll_out(service: ServiceDep, result: EnrollResult) -> dict[str, Any]:
    for outcome in result.photos:
        service.metrics.enrolments.labels(outcome.status).inc()
    body = result.to_dict()
    body["enrolled"] = result.enrolled
    return body


# -- who am I ---------------------------------------------------------------------------------
@router.get("/me", response_model=KeyOut, tags=["keys"], summary="The caller's API key")
def me(key: CurrentKey) -> Any:
    """The record of the key this request was made with (its secret is never returned)."""
    return key


# -- subjects ---------------------------------------------------------------------------------
@router.post(
    "/subjects",
    response_model=SubjectOut,
    status_code=status.HTTP_201_CREATED,
    tags=["subjects"],
    summary="Create a subject without faces",
)
def create_subject(body: SubjectCreate, gallery: GalleryDep, _key: EnrolKey) -> Any:
    """Create a person to add photos to later. Names may repeat; each subject gets its own id."""
    return gallery.create_subject(body.name, body.metadata)


@router.get("/subjects", response_model=SubjectListOut, tags=["subjects"], summary="List subjects")
def list_subjects(
    gallery: GalleryDep,
    _key: EnrolKey,
    name: Annotated[
        str | None, Query(max_length=200, description="Name contains this (taken literally)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> Any:
    """Subjects ordered by name, a page at a time, optionally filtered by name."""
    subjects = gallery.list_subjects(limit=limit, offset=offset, search=name or None)
    total = gallery.count_subjects(search=name or None)
    return {"subjects": subjects, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/subjects/{subject_id}",
    response_model=SubjectDetailOut,
    tags=["subjects"],
    responses=_NOT_FOUND,
    summary="One subject and its faces",
)
def get_subject(subject_id: SubjectId, gallery: GalleryDep, _key: EnrolKey) -> Any:
    """The subject and the list of its stored faces (no embeddings)."""
    _require_subject(gallery, subject_id)
    subject = gallery.get_subject(subject_id).to_dict()
    subject["faces"] = [f.to_dict() for f in gallery.faces(subject_id)]
    return subject


@router.patch(
    "/subjects/{subject_id}",
    response_model=SubjectOut,
    tags=["subjects"],
    responses=_NOT_FOUND,
    summary="Rename a subject or replace its metadata",
)
def update_subject(
    subject_id: SubjectId, body: SubjectUpdate, gallery: GalleryDep, _key: EnrolKey
) -> Any:
    """Change the display name and/or the metadata object."""
    _require_subject(gallery, subject_id)
    return gallery.update_subject(subject_id, name=body.name, metadata=body.metadata)


@router.delete(
    "/subjects/{subject_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["subjects"],
    responses=_NOT_FOUND,
    summary="Erase a subject",
)
def delete_subject(subject_id: SubjectId, gallery: GalleryDep, _key: AdminKey) -> Response:
    """Delete the subject, every face embedding of it (from the store and the index, at once)
    and its recognition events: the right to erasure."""
    _require_subject(gallery, subject_id)
    gallery.delete_subject(subject_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- faces ------------------------------------------------------------------------------------
@router.post(
    "/enroll",
    response_model=EnrollOut,
    status_code=status.HTTP_201_CREATED,
    tags=["faces"],
    responses=_PHOTO_ERRORS,
    summary="Enrol a new person from photos",
)
async def enroll(
    service: ServiceDep,
    recognizer: RecognizerDep,
    _key: EnrolKey,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    photos: Annotated[list[UploadFile], File(description="One or more photos of the person.")],
    metadata: Annotated[str | None, Form(description="A JSON object.")] = None,
) -> Any:
    """Create a subject and enrol its faces in one transaction. Each photo is reported:
    enrolled, no face, several faces, near duplicate or unreadable. When no photo can be
    enrolled nothing is created: 400 when none is a readable image, else 422, with the reason
    for each photo."""
    name = _checked(clean_name, name)
    meta = _parse_metadata(metadata)
    files = await _read_photos(service, photos)
    try:
        result = await service.run("enroll", recognizer.enroll, name, files, metadata=meta)
    except EnrollmentError as exc:
        raise _nothing_enrolled(service, str(exc), exc.photos) from None
    return _enroll_out(service, result)


@router.post(
    "/subjects/{subject_id}/faces",
    response_model=EnrollOut,
    status_code=status.HTTP_201_CREATED,
    tags=["faces"],
    responses={**_PHOTO_ERRORS, **_NOT_FOUND},
    summary="Add photos to a subject",
)
async def add_faces(
    subject_id: SubjectId,
    service: ServiceDep,
    recognizer: RecognizerDep,
    _key: EnrolKey,
    photos: Annotated[list[UploadFile], File(description="One or more photos of the person.")],
) -> Any:
    """Enrol more photos of an existing subject in one transaction, with an outcome per photo.
    When none can be enrolled nothing changes (400 when none is a readable image, else 422,
    with the reasons)."""
    _require_subject(service.gallery, subject_id)
    files = await _read_photos(service, photos)
    result = await service.run("enroll", recognizer.add_photos, subject_id, files)
    if result.enrolled == 0:
        reasons = "; ".join(f"{p.source}: {p.status.replace('_', ' ')}" for p in result.photos)
        raise _nothing_enrolled(service, f"no photo could be enrolled ({reasons})", result.photos)
    return _enroll_out(service, result)


def _nothing_enrolled(service: ServiceDep, message: str, photos: list[Any]) -> ApiError:
    """The error for an enrolment that stored nothing: 400 ``invalid_image`` when no photo was
    a readable image (as for every other photo route), else 422 ``no_face_enrolled``."""
    for outcome in photos:
        service.metrics.enrolments.labels(outcome.status).inc()
    details = [p.to_dict() for p in photos]
    if all(p.status == "unreadable" for p in photos):
        reasons = "; ".join(p.message for p in photos)
        return ApiError(
            400, "invalid_image", f"no photo is a readable image ({reasons})", details=details
        )
    return ApiError(422, "no_face_enrolled", message, details=details)


@router.delete(
    "/subjects/{subject_id}/faces/{face_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["faces"],
    responses=_NOT_FOUND,
    summary="Erase one face",
)
def delete_face(
    subject_id: SubjectId, face_id: FaceId, gallery: GalleryDep, _key: AdminKey
) -> Response:
    """Delete one stored face embedding (from the store and the index, at once)."""
    _require_face(gallery, subject_id, face_id)
    gallery.delete_face(face_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/subjects/{subject_id}/faces/{face_id}/crop",
    tags=["faces"],
    responses={**_NOT_FOUND, 200: {"content": {"image/png": {}}}},
    response_class=Response,
    summary="The stored face crop",
)
def face_crop(
    subject_id: SubjectId, face_id: FaceId, gallery: GalleryDep, _key: AdminKey
) -> Response:
    """The aligned face crop kept at enrolment (only when the service stores photos)."""
    _require_face(gallery, subject_id, face_id)
    crop = gallery.face_crop(face_id)
    if crop is None:
        raise ApiError(404, "crop_not_stored", "no crop is stored for this face")
    return Response(crop, media_type="image/png", headers={"Cache-Control": "no-store"})


# -- recognition ------------------------------------------------------------------------------
def _face_out(face: RecognizedFace, *, candidates: bool, max_candidates: int) -> dict[str, Any]:
    answer = face.answer(candidates=candidates)
    if answer["candidates"] is not None:
        answer["candidates"] = answer["candidates"][:max_candidates]
    return answer


@router.post(
    "/identify",
    response_model=IdentifyOut,
    tags=["recognition"],
    responses=_PHOTO_ERRORS,
    summary="Identify every face in a photo",
)
async def identify(
    service: ServiceDep,
    recognizer: RecognizerDep,
    key: RecogniseKey,
    photo: Annotated[UploadFile, File(description="The photo to search.")],
    source: Annotated[
        str | None,
        Form(max_length=100, description="Camera or door name recorded with the event."),
    ] = None,
) -> Any:
    """Find every face, then answer each one: the matching subject with its score, or unknown
    below the calibrated threshold. ``candidates`` (the nearest subjects, with names and scores)
    are given to enrol and admin keys; for a recognise key they are null unless the service
    is configured to show them. When events are on, each answer is logged with the time, the
    source (default ``api``) and the result. No face: 422 ``no_face``."""
    if source is not None and source.strip():
        source = _checked(clean_name, source, what="source", max_length=100)
    ((name, data),) = await _read_photos(service, [photo])
    log_source = (source or "api") if service.settings.events else None
    faces = await service.run("identify", recognizer.identify, (name, data), source=log_source)
    service.metrics.faces_detected.labels("identify").inc(len(faces))
    if not faces:
        raise ApiError(422, "no_face", f"no face found in {name}")
    for face in faces:
        result = "match" if face.identification.known else "unknown"
        service.metrics.identifications.labels(result).inc()
    settings = service.settings
    show = ROLE_RANK[key.role] >= ROLE_RANK["enrol"] or settings.recognise_candidates
    out = [_face_out(f, candidates=show, max_candidates=settings.max_matches) for f in faces]
    return {"faces": out, "source": log_source}


@router.post(
    "/verify",
    response_model=VerifyOut,
    tags=["recognition"],
    responses={**_PHOTO_ERRORS, **_NOT_FOUND},
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
        _require_subject(service.gallery, subject_id)
        ((name, data),) = await _read_photos(service, [photo])
        return await service.run("verify", recognizer.verify_subject, (name, data), subject_id)
    assert photo_b is not None
    (a, b) = await _read_photos(service, [photo, photo_b])
    return await service.run("verify", recognizer.verify, a, b)


# -- events and attendance --------------------------------------------------------------------
def _zone(tz: str | None) -> tzinfo:
    if not tz:
        zone = datetime.now().astimezone().tzinfo
        assert zone is not None
        return zone
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(422, "invalid_request", f"unknown time zone {tz!r}") from None


def _zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or zone.tzname(datetime.now()) or "local"


@router.get(
    "/events",
    response_model=EventListOut,
    tags=["events"],
    responses={200: {"content": {"text/csv": {}}}},
    summary="Recognition events",
)
def events(
    gallery: GalleryDep,
    _key: AdminKey,
    subject_id: Annotated[str | None, Query(description="Only this subject")] = None,
    source: Annotated[str | None, Query(description="Only this camera or door")] = None,
    decision: Annotated[Literal["match", "unknown"] | None, Query()] = None,
    since: Annotated[Time | None, Query(description="From this time (ISO 8601)")] = None,
    until: Annotated[Time | None, Query(description="Before this time (ISO 8601)")] = None,
    day: Annotated[
        Day | None, Query(alias="date", description="Only this day (YYYY-MM-DD, in tz)")
    ] = None,
    tz: Annotated[str | None, Query(description="IANA time zone; default the server's")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    offset: Offset = 0,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    """Logged identifications, newest first, filtered by subject, source, decision and time."""
    zone = _zone(tz)
    if day is not None:
        start_day = datetime(day.year, day.month, day.day, tzinfo=zone)
        since = max(since, start_day) if since else start_day
        end_day = start_day + timedelta(days=1)
        until = min(until, end_day) if until else end_day
    since = since.replace(tzinfo=zone) if since and since.tzinfo is None else since
    until = until.replace(tzinfo=zone) if until and until.tzinfo is None else until
    filters = {
        "subject": subject_id,
        "source": source,
        "decision": decision,
        "start": since,
        "end": until,
        "limit": limit,
        "offset": offset,
    }
    if format == "csv":
        return PlainTextResponse(
            gallery.events_csv(**filters),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="events.csv"'},
        )
    return {"events": gallery.events(**filters), "limit": limit, "offset": offset}


@router.get(
    "/attendance",
    response_model=AttendanceOut,
    tags=["events"],
    responses={200: {"content": {"text/csv": {}}}},
    summary="Attendance of one day",
)
def attendance(
    gallery: GalleryDep,
    _key: AdminKey,
    day: Annotated[Day | None, Query(alias="date", description="YYYY-MM-DD; default today")] = None,
    tz: Annotated[str | None, Query(description="IANA time zone; default the server's")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    """First and last sighting of each identified subject on one day, and how often and where
    they were seen. ``format=csv`` downloads it as a spreadsheet."""
    zone = _zone(tz)
    day = day or datetime.now(zone).date()
    if format == "csv":
        return PlainTextResponse(
            gallery.attendance_csv(day, tz=zone),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="attendance-{day}.csv"'},
        )
    return {
        "date": day.isoformat(),
        "timezone": _zone_name(zone),
        "rows": gallery.attendance(day, tz=zone),
    }


# -- API keys ---------------------------------------------------------------------------------
@router.get("/keys", response_model=list[KeyOut], tags=["keys"], summary="List API keys")
def list_keys(gallery: GalleryDep, _key: AdminKey) -> Any:
    """Every key's name, role and last use (never the keys themselves)."""
    return gallery.list_api_keys()


@router.post(
    "/keys",
    response_model=KeyCreatedOut,
    status_code=status.HTTP_201_CREATED,
    tags=["keys"],
    summary="Create an API key",
)
def create_key(body: KeyCreate, gallery: GalleryDep, _key: AdminKey) -> Any:
    """A new key for a person, camera or program. The secret is in this answer only."""
    record, secret = gallery.create_api_key(body.name, body.role)
    return {"key": record, "secret": secret}


@router.delete(
    "/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["keys"],
    responses={**_NOT_FOUND, 409: {"model": ErrorOut}},
    summary="Revoke an API key",
)
def delete_key(key_id: KeyId, gallery: GalleryDep, _key: AdminKey) -> Response:
    """Revoke a key at once. The last admin key cannot be revoked (409): the check and the
    revocation are one transaction, so concurrent revocations cannot remove every admin key."""
    try:
        gallery.delete_api_key(key_id)
    except NotFoundError:
        raise ApiError(404, "key_not_found", f"no API key with id {key_id!r}") from None
    except ConflictError as exc:
        raise ApiError(409, "last_admin_key", str(exc)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


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
    _checked(metadata_json, value)
    return value
