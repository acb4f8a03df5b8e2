"""The review queue of strangers: ``/v1/unknowns``.

Cameras decide each visit: a named subject, or unknown. Unknown visits of one person (their
faces agree at strict 1:1 thresholds, several faces over, not one mean) are grouped as one
*visitor*, across time and cameras, with its best faces. A reviewer lists the pending visitors
with their times and faces, then assigns each to an existing or a new subject (its faces are
enrolled at once, no retraining: the cameras recognise the person from then on), splits one
that holds two people, or dismisses it (its later visits are only counted, it does not come
back to the queue).

Any key reads the queue (recognise role: the page's review card); the face crops and the review
itself need an enrol key, the role that enrols people. Crops are kept for review unless the
service's ``review_crops`` is off; retention purges old faces and visitors
(``retention_days``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from marginface.errors import ConflictError, GalleryError, NotFoundError
from marginface.gallery import FacesUnlikeError
from marginface.serve.auth import EnrolKey, RecogniseKey, may_force_mismatch
from marginface.serve.deps import GalleryDep, ServiceDep
from marginface.serve.errors import ApiError
from marginface.serve.params import AUTH_ERRORS, BODY_ERRORS, MAX_ID, Offset, Responses
from marginface.serve.schemas import (
    ErrorOut,
    VisitorAssign,
    VisitorAssignedOut,
    VisitorListOut,
    VisitorOut,
    VisitorSplit,
    VisitorSplitOut,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["unknowns"], responses=AUTH_ERRORS)

VisitorId = Annotated[str, Path(min_length=1, max_length=64, description="The visitor's id.")]
VisitorFaceId = Annotated[int, Path(ge=1, le=MAX_ID, description="The face's id.")]

_NOT_FOUND: Responses = {404: {"model": ErrorOut, "description": "No visitor with this id."}}


@contextmanager
def _visitor_errors(visitor_id: str) -> Iterator[None]:
    try:
        yield
    except NotFoundError:
        raise ApiError(404, "visitor_not_found", f"no visitor with id {visitor_id!r}") from None


@router.get("/unknowns", response_model=VisitorListOut, summary="The strangers' review queue")
def list_unknowns(
    gallery: GalleryDep,
    _key: RecogniseKey,
    status: Annotated[
        Literal["pending", "assigned", "dismissed", "all"],
        Query(description="Which visitors: pending review (default), assigned, dismissed, all."),
    ] = "pending",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> Any:
    """Visitors, the most recently seen first: when each was first and last seen, how many
    unknown visits were grouped into it (`sightings`), by which cameras, and its best faces
    (`face_ids`; each crop at `/v1/unknowns/{visitor_id}/faces/{face_id}.png` when
    `has_crop`)."""
    which = None if status == "all" else status
    visitors = gallery.visitors.list(which, limit=limit, offset=offset)
    total = gallery.visitors.count(which)
    return {"visitors": visitors, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/unknowns/{visitor_id}",
    response_model=VisitorOut,
    responses=_NOT_FOUND,
    summary="One visitor",
)
def get_unknown(visitor_id: VisitorId, gallery: GalleryDep, _key: RecogniseKey) -> Any:
    """The visitor: status, times, sightings, cameras and kept faces (best first)."""
    with _visitor_errors(visitor_id):
        return gallery.visitors.get(visitor_id)


@router.get(
    "/unknowns/{visitor_id}/faces/{face_id}.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The aligned face crop (112x112)."},
        404: {
            "model": ErrorOut,
            "description": "No such visitor or face of it, or no crop is kept (the service "
            "keeps crops only with store_photos).",
        },
    },
    summary="A visitor's face crop",
)
def unknown_face(
    visitor_id: VisitorId, face_id: VisitorFaceId, gallery: GalleryDep, _key: EnrolKey
) -> Response:
    """The aligned crop of one of the visitor's faces, as PNG (enrol key: faces of people who
    have not been identified are for the reviewers)."""
    with _visitor_errors(visitor_id):
        visitor = gallery.visitors.get(visitor_id)
    if face_id not in visitor.face_ids:
        raise ApiError(404, "face_not_found", f"visitor {visitor_id!r} has no face {face_id}")
    try:
        crop = gallery.visitors.face_crop(face_id)
    except NotFoundError:
        crop = None
    if crop is None:
        raise ApiError(
            404,
            "crop_not_stored",
            "no crop is kept for this face (the service stores crops only with store_photos)",
        )
    return Response(crop, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post(
    "/unknowns/{visitor_id}/assign",
    response_model=VisitorAssignedOut,
    responses={
        **BODY_ERRORS,
        403: {
            "model": ErrorOut,
            "description": "The key's role may not do this; or force=true was asked for faces "
            "that do not look like the subject (photo_mismatch), which only an admin key may "
            "force (admin_required). Nothing is stored.",
        },
        404: {"model": ErrorOut, "description": "No such visitor, or no such subject."},
        409: {
            "model": ErrorOut,
            "description": "The visitor was assigned or dismissed already, or it looks like "
            "another enrolled subject (force=true assigns it anyway).",
        },
        422: {
            "model": ErrorOut,
            "description": "photo_mismatch: the faces do not look like the subject's own (best "
            "cosine below the 1:1 threshold; details give each face's score; an admin key may "
            "force them); faces_disagree: the visitor's faces do not look like each other (the "
            "camera grouped several people: assign the faces of one person with `faces`); "
            "exactly one of subject_id and name must be given; faces that are not the "
            "visitor's.",
        },
    },
    summary="Assign a visitor to a subject",
)
def assign_unknown(
    visitor_id: VisitorId,
    body: VisitorAssign,
    gallery: GalleryDep,
    service: ServiceDep,
    key: EnrolKey,
) -> Any:
    """Enrol the visitor's best faces (or the `faces` given) into the existing subject
    `subject_id`, or into a new subject named `name`, in one transaction: the cameras
    recognise the person from their next visit, with no retraining. The faces are held to the
    rule of every photo added to a subject: each must look like the subject's own faces (1:1
    threshold), else 422 `photo_mismatch` (force=true with an admin key stores them anyway),
    and they must look like each other (else 422 `faces_disagree`). Refused (409) when the
    visitor looks like another enrolled subject, unless `force`."""
    if (body.subject_id is None) == (body.name is None):
        raise ApiError(422, "invalid_request", "give exactly one of subject_id and name")
    with _visitor_errors(visitor_id):
        gallery.visitors.get(visitor_id)
    admin = may_force_mismatch(key)
    try:
        subject = service.recognizer.assign_visitor(
            visitor_id,
            subject_id=body.subject_id,
            name=body.name,
            faces=body.faces,
            force=body.force,
            force_mismatch=body.force and admin,
        )
    except FacesUnlikeError as exc:
        if exc.reason == "each_other":
            raise ApiError(422, "faces_disagree", str(exc), exc.details()) from None
        if body.force and not admin:
            raise ApiError(
                403, "admin_required", f"{exc}: an admin key must force it", exc.details()
            ) from None
        message = f"{exc}; an admin key can assign them anyway with force=true"
        raise ApiError(422, "photo_mismatch", message, exc.details()) from None
    except NotFoundError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except ConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    with _visitor_errors(visitor_id):
        visitor = gallery.visitors.get(visitor_id)
    return {"visitor": visitor, "subject": subject}


@router.post(
    "/unknowns/{visitor_id}/dismiss",
    response_model=VisitorOut,
    responses={
        **_NOT_FOUND,
        409: {"model": ErrorOut, "description": "The visitor was assigned already."},
    },
    summary="Dismiss a visitor",
)
def dismiss_unknown(visitor_id: VisitorId, gallery: GalleryDep, _key: EnrolKey) -> Any:
    """Take the visitor out of the review queue. Its later visits are still grouped with it
    and counted, without coming back to the queue; retention purges it in time."""
    with _visitor_errors(visitor_id):
        return gallery.visitors.dismiss(visitor_id)


@router.post(
    "/unknowns/{visitor_id}/split",
    response_model=VisitorSplitOut,
    responses={
        **BODY_ERRORS,
        **_NOT_FOUND,
        409: {"model": ErrorOut, "description": "The visitor is not pending review."},
        422: {
            "model": ErrorOut,
            "description": "faces that are not the visitor's, or all of them (a split leaves "
            "it one face at least).",
        },
    },
    summary="Split a visitor that is two people",
)
def split_unknown(
    visitor_id: VisitorId, body: VisitorSplit, gallery: GalleryDep, _key: EnrolKey
) -> Any:
    """The review queue grouped two people: the `faces` given are the other person's and
    become a new pending visitor (both keep the means of their own faces, so later visits of
    each group with the right one). Assign or dismiss each afterwards."""
    try:
        new = gallery.visitors.split(visitor_id, body.faces)
    except NotFoundError:
        raise ApiError(404, "visitor_not_found", f"no visitor with id {visitor_id!r}") from None
    except ConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except GalleryError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    with _visitor_errors(visitor_id):
        return {"visitor": gallery.visitors.get(visitor_id), "new": new}
