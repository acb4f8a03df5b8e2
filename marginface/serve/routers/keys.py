"""API keys: ``/v1/me`` (the caller's key) and ``/v1/keys`` (admin: list, create, revoke)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from marginface.errors import ConflictError, NotFoundError
from marginface.serve.auth import AdminKey, CurrentKey
from marginface.serve.deps import GalleryDep
from marginface.serve.errors import ApiError
from marginface.serve.params import AUTH_ERRORS, BODY_ERRORS, NOT_FOUND, KeyId
from marginface.serve.schemas import ErrorOut, KeyCreate, KeyCreatedOut, KeyOut

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["keys"], responses=AUTH_ERRORS)


@router.get("/me", response_model=KeyOut, summary="The caller's API key")
def me(key: CurrentKey) -> Any:
    """The record of the key this request was made with (its secret is never returned)."""
    return key


@router.get("/keys", response_model=list[KeyOut], summary="List API keys")
def list_keys(gallery: GalleryDep, _key: AdminKey) -> Any:
    """Every key's name, role and last use (never the keys themselves)."""
    return gallery.keys.list()


@router.post(
    "/keys",
    response_model=KeyCreatedOut,
    status_code=status.HTTP_201_CREATED,
    responses=BODY_ERRORS,
    summary="Create an API key",
)
def create_key(body: KeyCreate, gallery: GalleryDep, _key: AdminKey) -> Any:
    """A new key for a person, camera or program. The secret is in this answer only."""
    name = body.name or f"{body.role} key (API)"  # optional, as in `marginface keys create`
    record, secret = gallery.keys.create(name, body.role)
    return {"key": record, "secret": secret}


@router.delete(
    "/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, 409: {"model": ErrorOut}},
    summary="Revoke an API key",
)
def delete_key(key_id: KeyId, gallery: GalleryDep, _key: AdminKey) -> Response:
    """Revoke a key at once. The last admin key cannot be revoked (409): the check and the
    revocation are one transaction, so concurrent revocations cannot remove every admin key."""
    try:
        gallery.keys.delete(key_id)
    except NotFoundError:
        raise ApiError(404, "key_not_found", f"no API key with id {key_id!r}") from None
    except ConflictError as exc:
        raise ApiError(409, "last_admin_key", str(exc)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)
