"""``/v1/subjects``: create, list, read, rename and erase subjects (their faces: ``faces``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from marginface.serve.auth import AdminKey, EnrolKey
from marginface.serve.deps import GalleryDep
from marginface.serve.params import AUTH_ERRORS, BODY_ERRORS, NOT_FOUND, Offset, SubjectId
from marginface.serve.routers.common import unknown_subject_is_404
from marginface.serve.schemas import (
    SubjectCreate,
    SubjectDetailOut,
    SubjectListOut,
    SubjectOut,
    SubjectUpdate,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["subjects"], responses=AUTH_ERRORS)


@router.post(
    "/subjects",
    response_model=SubjectOut,
    status_code=status.HTTP_201_CREATED,
    responses=BODY_ERRORS,
    summary="Create a subject without faces",
)
def create_subject(body: SubjectCreate, gallery: GalleryDep, _key: EnrolKey) -> Any:
    """Create a person to add photos to later. Names may repeat; each subject gets its own id."""
    return gallery.subjects.create(body.name, body.metadata)


@router.get("/subjects", response_model=SubjectListOut, summary="List subjects")
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
    subjects = gallery.subjects.list(limit=limit, offset=offset, search=name or None)
    total = gallery.subjects.count(search=name or None)
    return {"subjects": subjects, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/subjects/{subject_id}",
    response_model=SubjectDetailOut,
    responses=NOT_FOUND,
    summary="One subject and its faces",
)
def get_subject(subject_id: SubjectId, gallery: GalleryDep, _key: EnrolKey) -> Any:
    """The subject and the list of its stored faces (no embeddings)."""
    with unknown_subject_is_404(subject_id):
        subject = gallery.subjects.get(subject_id).to_dict()
        subject["faces"] = [f.to_dict() for f in gallery.subjects.faces(subject_id)]
    return subject


@router.patch(
    "/subjects/{subject_id}",
    response_model=SubjectOut,
    responses={**BODY_ERRORS, **NOT_FOUND},
    summary="Rename a subject or replace its metadata",
)
def update_subject(
    subject_id: SubjectId, body: SubjectUpdate, gallery: GalleryDep, _key: EnrolKey
) -> Any:
    """Change the display name and/or the metadata object."""
    with unknown_subject_is_404(subject_id):
        return gallery.subjects.update(subject_id, name=body.name, metadata=body.metadata)


@router.delete(
    "/subjects/{subject_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND,
    summary="Erase a subject",
)
def delete_subject(subject_id: SubjectId, gallery: GalleryDep, _key: AdminKey) -> Response:
    """Delete the subject, every face embedding of it (from the store and the index, at once)
    and its recognition events: the right to erasure."""
    with unknown_subject_is_404(subject_id):
        gallery.subjects.delete(subject_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
