"""Cameras: ``/v1/cameras`` (configure, start, stop, watch) and ``/v1/visits`` (what they saw).

A camera is a stored resource (name, URL, settings, enabled) that the service watches in a worker
thread of its own while it is enabled; cameras restart with the service. Configuration needs an
admin key (a URL may carry the camera's password, and a camera records people); reading the
cameras and their status needs any key (recognise role). Who the cameras saw is an attendance
log: visits and the live view carry names for admin keys only (as /v1/events does); other keys
get the decisions, known or unknown, and a visit's face is a stranger's for enrol keys (the
reviewers) and anyone's for admin keys (``auth.may_see_names``, ``auth.may_see_strangers``;
docs/streams.md, "Who sees what"). Frames POSTed to a push camera need an enrol key: they write
visits and strangers' faces into the gallery, which a read-only recognise key may not.
Passwords in camera URLs are never shown back.

Every route here is ``def`` (FastAPI's threadpool) except the frame upload, which reads the body
on the loop and hands the frame over in a worker thread: the gallery is never called on the loop.

In a camera cluster any node answers: the cameras' status comes from the node running each
(published with its heartbeat), and what needs a camera's worker (its live view, pushed frames,
restarting it, a recent visit's face) is forwarded to that node (``serve/forward.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from marginface.errors import ConfigError, ImageError, NotFoundError
from marginface.gallery import ApiKey
from marginface.serve.auth import (
    AdminKey,
    EnrolKey,
    RecogniseKey,
    may_see_names,
    may_see_strangers,
)
from marginface.serve.deps import ServiceDep
from marginface.serve.errors import ApiError
from marginface.serve.forward import forward
from marginface.serve.params import AUTH_ERRORS, BODY_ERRORS, Responses
from marginface.serve.schemas import (
    CameraCreate,
    CameraListOut,
    CameraOut,
    CameraUpdate,
    ErrorOut,
    FrameAcceptedOut,
    VisitListOut,
)
from marginface.serve.uploads import InMemoryUploadRoute
from marginface.streams.manager import CameraElsewhereError

__all__ = ["router"]

router = APIRouter(
    prefix="/v1", tags=["cameras"], responses=AUTH_ERRORS, route_class=InMemoryUploadRoute
)

CameraId = Annotated[
    str, Path(min_length=1, max_length=64, description="The camera's id (from POST /v1/cameras).")
]
Limit = Annotated[int, Query(ge=1, le=500, description="Most visit events returned.")]

_NOT_FOUND: Responses = {404: {"model": ErrorOut, "description": "No camera with this id."}}
#: What forwarding to the node running a camera may answer (a camera cluster).
_FORWARDED: Responses = {
    409: {
        "model": ErrorOut,
        "description": "The camera runs on another node, which says it does not (it is moving "
        "between nodes): retry shortly.",
    },
    503: {
        "model": ErrorOut,
        "description": "The camera runs on another node, which does not answer.",
    },
}
_UNAVAILABLE: Responses = {
    503: {
        "model": ErrorOut,
        "description": "Camera streams are not installed in this service "
        "(pip install 'marginface[streams]').",
    }
}
_WRITE_ERRORS: Responses = {
    **BODY_ERRORS,
    **_UNAVAILABLE,
    409: {
        "model": ErrorOut,
        "description": "Another camera has this name, or the service holds its maximum number "
        "of cameras (max_cameras).",
    },
    422: {
        "model": ErrorOut,
        "description": "Invalid fields: an unsupported URL scheme, a malformed URL, or settings "
        "the camera refuses (each named with the reason).",
    },
}


@contextmanager
def _camera_errors(camera_id: str | None = None) -> Iterator[None]:
    """The manager's errors as the API answers them: 404 ``camera_not_found``, 503
    ``streams_unavailable``; the others (409, 422) by the service's error map."""
    try:
        yield
    except NotFoundError as exc:
        message = f"no camera with id {camera_id!r}" if camera_id is not None else str(exc)
        raise ApiError(404, "camera_not_found", message) from None
    except ConfigError as exc:
        raise ApiError(503, "streams_unavailable", str(exc)) from None


@router.post(
    "/cameras",
    response_model=CameraOut,
    status_code=status.HTTP_201_CREATED,
    responses=_WRITE_ERRORS,
    summary="Add a camera",
)
def create_camera(body: CameraCreate, service: ServiceDep, _key: AdminKey) -> Any:
    """Store a camera and, when `enabled` (the default), start watching it at once. The URL's
    scheme and the settings are checked (422 naming the problem) but the camera is not
    contacted: an unreachable camera is created, and its `status` shows `reconnecting` with
    the error. Each face the camera sees is tracked across frames and decided once per visit
    (`arrived`, then `left`), logged as an event with the camera's name as its `source`."""
    with _camera_errors():
        return service.cameras.create(body.name, body.url, body.settings.given(), body.enabled)


@router.get("/cameras", response_model=CameraListOut, summary="List cameras with their status")
def list_cameras(service: ServiceDep, _key: RecogniseKey) -> Any:
    """Every camera, by name, each with its live `status`: state, frames/s read and processed,
    lag, frames dropped and corrupt, last error, faces tracked, visits, and the delivery status
    of the notifications."""
    cameras = service.cameras.list_cameras()
    return {"cameras": cameras, "total": len(cameras)}


@router.get(
    "/cameras/{camera_id}", response_model=CameraOut, responses=_NOT_FOUND, summary="One camera"
)
def get_camera(camera_id: CameraId, service: ServiceDep, _key: RecogniseKey) -> Any:
    """The camera (URL without its password) and its live `status`."""
    with _camera_errors(camera_id):
        return service.cameras.get(camera_id)


@router.patch(
    "/cameras/{camera_id}",
    response_model=CameraOut,
    responses={**_WRITE_ERRORS, **_NOT_FOUND},
    summary="Change a camera",
)
def update_camera(
    camera_id: CameraId, body: CameraUpdate, service: ServiceDep, _key: AdminKey
) -> Any:
    """Change the name, URL, settings (replaced whole) or `enabled`; a running camera restarts
    with the change. Renaming changes the `source` of its future events only."""
    with _camera_errors(camera_id):
        settings = body.settings.given() if body.settings is not None else None
        return service.cameras.update(
            camera_id, name=body.name, url=body.url, settings=settings, enabled=body.enabled
        )


@router.delete(
    "/cameras/{camera_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_NOT_FOUND,
    summary="Remove a camera",
)
def delete_camera(camera_id: CameraId, service: ServiceDep, _key: AdminKey) -> Response:
    """Stop watching the camera and forget it. Its visit events and strangers stay until the
    retention purge (or DELETE of the subjects concerned)."""
    with _camera_errors(camera_id):
        service.cameras.delete(camera_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/cameras/{camera_id}/start",
    response_model=CameraOut,
    responses={**_NOT_FOUND, **_UNAVAILABLE, **_FORWARDED},
    summary="Start watching a camera",
)
def start_camera(camera_id: CameraId, request: Request, service: ServiceDep, _key: AdminKey) -> Any:
    """Run the camera now and whenever the service starts (`enabled` becomes true). Starting
    a running camera changes nothing; a video file that ended plays again. When the service
    runs no camera workers (setting `cameras: false`) it is only marked enabled. In a cluster
    the node running the camera restarts it (the request is forwarded there)."""
    try:
        with _camera_errors(camera_id):
            return service.cameras.start_camera(camera_id)
    except CameraElsewhereError as exc:
        return forward(request, exc, b"", service.node.name)


@router.post(
    "/cameras/{camera_id}/stop",
    response_model=CameraOut,
    responses=_NOT_FOUND,
    summary="Stop watching a camera",
)
def stop_camera(camera_id: CameraId, service: ServiceDep, _key: AdminKey) -> Any:
    """Stop the camera's worker and keep it stopped across restarts (`enabled` becomes
    false). Visits still open when it stops are not recorded."""
    with _camera_errors(camera_id):
        return service.cameras.stop_camera(camera_id)


_FRAME_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One JPEG (or PNG) frame: the raw image as the body, or a multipart "
        "form with the image in the field `frame`.",
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"frame": {"type": "string", "format": "binary"}},
                    "required": ["frame"],
                }
            },
        },
    }
}


@router.post(
    "/cameras/{camera_id}/frames",
    response_model=FrameAcceptedOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **AUTH_ERRORS,
        **_NOT_FOUND,
        **_UNAVAILABLE,
        400: {"model": ErrorOut, "description": "The multipart body is malformed."},
        409: {
            "model": ErrorOut,
            "description": "The camera is not a push camera (its URL is not `push:`), or it is "
            "not running (POST .../start), or it is moving between nodes.",
        },
        503: _FORWARDED[503],
        413: {"model": ErrorOut, "description": "The frame is larger than the upload limit."},
        415: {"model": ErrorOut, "description": "The body is neither an image nor a form."},
        422: {
            "model": ErrorOut,
            "description": "The body is empty or not an image (counted as a corrupt frame).",
        },
    },
    openapi_extra=_FRAME_BODY,
    summary="Push a frame to a push camera",
)
async def push_frame(
    camera_id: CameraId, request: Request, service: ServiceDep, _key: EnrolKey
) -> Any:
    """For cameras that cannot stream but can POST a JPEG snapshot (a camera whose URL is
    `push:`): the frame is handed to the camera's worker, which processes the latest frame it
    has (frames arriving faster than its `fps` are dropped and counted, never queued). Needs an
    enrol key: the frames become visits and strangers' faces in the gallery. Answers 202 with
    the camera's status once the frame is queued (it is decoded and processed after)."""
    data = await _frame_bytes(request)
    if not data:
        raise ApiError(422, "invalid_frame", "the frame is empty: send a JPEG image")
    try:
        with _camera_errors(camera_id):
            state = await run_in_threadpool(service.cameras.push, camera_id, data)
    except ImageError as exc:
        raise ApiError(422, "invalid_frame", f"the frame is not an image: {exc}") from None
    except CameraElsewhereError as exc:  # the node running the camera takes the frame
        return await run_in_threadpool(forward, request, exc, data, service.node.name)
    return {"accepted": True, "status": state}


async def _frame_bytes(request: Request) -> bytes:
    """The frame from the body: a raw image, or the ``frame`` field of a multipart form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        frame = form.get("frame")
        if frame is None:
            raise ApiError(422, "invalid_frame", "the form has no `frame` field")
        if isinstance(frame, str):
            return frame.encode("utf-8", "surrogateescape")
        data = await frame.read()
        await frame.close()
        return data
    if content_type.startswith("image/") or content_type in ("application/octet-stream", ""):
        return await request.body()
    raise ApiError(
        415,
        "unsupported_media_type",
        f"send the frame as image/jpeg or as a multipart form, not {content_type!r}",
    )


@router.get(
    "/cameras/{camera_id}/snapshot.jpg",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The latest annotated frame."},
        404: {
            "model": ErrorOut,
            "description": "No camera with this id, or it has processed no frame yet.",
        },
        **_FORWARDED,
    },
    summary="The camera's latest frame, annotated",
)
def snapshot(
    camera_id: CameraId, request: Request, service: ServiceDep, key: RecogniseKey
) -> Response:
    """The latest processed frame as a JPEG, with a box around each tracked face and its name
    (or `unknown`) drawn: the camera's live view (poll it). Names are drawn for admin keys;
    other keys see `known` in their place. 404 `no_frame` until the camera has processed a
    frame."""
    with _camera_errors(camera_id):
        service.cameras.require(camera_id)
    try:
        jpeg = service.cameras.snapshot(camera_id, names=may_see_names(key))
    except NotFoundError as exc:
        raise ApiError(404, "no_frame", str(exc)) from None
    except CameraElsewhereError as exc:
        return forward(request, exc, None, service.node.name)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get(
    "/cameras/{camera_id}/visits",
    response_model=VisitListOut,
    responses=_NOT_FOUND,
    summary="A camera's recent visits",
)
def camera_visits(
    camera_id: CameraId, service: ServiceDep, key: RecogniseKey, limit: Limit = 50
) -> Any:
    """The camera's newest visit events, newest first: `arrived` when a visit was decided
    (`known`: a named person, or a stranger) and `left` when it ended (dwell time). Admin keys
    get the subject's `name` and `subject_id` (the attendance log); enrol keys a stranger's
    `visitor_id` in /v1/unknowns and its face; recognise keys the decisions only."""
    with _camera_errors(camera_id):
        visits = service.cameras.recent_visits(camera_id, limit)
    return {"visits": [_visit_for(key, v) for v in visits], "limit": limit}


@router.get("/visits", response_model=VisitListOut, summary="Recent visits of every camera")
def visits(service: ServiceDep, key: RecogniseKey, limit: Limit = 50) -> Any:
    """The newest visit events of all cameras, newest first (as /v1/cameras/{id}/visits, with
    the same fields for each role)."""
    visits = service.cameras.recent_visits(None, limit)
    return {"visits": [_visit_for(key, v) for v in visits], "limit": limit}


def _visit_for(key: ApiKey, visit: dict[str, Any]) -> dict[str, Any]:
    """A visit as ``key`` may see it: names for admin keys, strangers for enrol keys, the
    decision for every key."""
    out = {**visit, "known": visit.get("subject_id") is not None}
    if not may_see_names(key):
        out.update(subject_id=None, name=None)
        if out["known"]:
            out["face"] = False  # an enrolled person's face: for admin keys
    if not may_see_strangers(key):
        out.update(visitor_id=None, face=False)
    return out


@router.get(
    "/visits/{event_id}/face.jpg",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The visit's best face."},
        403: {
            "model": ErrorOut,
            "description": "The key's role may not see this face: strangers' faces need an "
            "enrol key, an enrolled person's an admin key.",
        },
        404: {"model": ErrorOut, "description": "No thumbnail is kept for this visit event."},
        **_FORWARDED,
    },
    summary="A recent visit's face",
)
def visit_face(
    event_id: Annotated[int, Path(ge=1, le=2**62, description="The visit event's id.")],
    request: Request,
    service: ServiceDep,
    key: EnrolKey,
) -> Response:
    """The aligned crop of the best face of a recent visit event (`face: true` in the
    visits), as a JPEG thumbnail: a stranger's for enrol keys (the reviewers, as
    /v1/unknowns/.../faces), anyone's for admin keys. Thumbnails are kept in memory for the
    latest 200 visit events only, never stored; older visits and visits from before a restart
    answer 404 `face_not_found`."""
    try:
        jpeg, known = service.cameras.visit_face(event_id)
    except NotFoundError as exc:
        raise ApiError(404, "face_not_found", str(exc)) from None
    except CameraElsewhereError as exc:  # the thumbnail is in the memory of the node that saw it
        return forward(request, exc, None, service.node.name)
    if known and not may_see_names(key):
        raise ApiError(
            403, "forbidden", "the face of an enrolled person's visit needs an admin key"
        )
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private"})
