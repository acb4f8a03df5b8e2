"""API-key authentication and role checks.

A key is sent as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Keys are stored hashed
in the gallery's key table; the service never logs them. Roles, from most to least powerful:

- ``admin``: everything, including API keys, deletions, events and attendance;
- ``enrol``: create, list, read and rename subjects and add faces to them, review strangers
  (their faces), plus recognition;
- ``recognise``: identify and verify only.

Who was seen where and when is an attendance log: the names (and subject ids) of the people
the cameras saw are for admin keys, as ``/v1/events`` and ``/v1/attendance`` are. Other keys
get the decisions (a known person, or a stranger) without names (:func:`may_see_names`);
strangers' faces are for the reviewers, enrol keys (:func:`may_see_strangers`). The whole
matrix is in docs/streams.md ("Who sees what").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from marginface.errors import ConfigError
from marginface.gallery import ApiKey, Gallery
from marginface.serve.deps import ServiceDep
from marginface.serve.errors import ApiError
from marginface.serve.settings import ServeSettings
from marginface.urls import redact_url

__all__ = [
    "ROLE_RANK",
    "CurrentKey",
    "admin_key_notice",
    "bootstrap_admin_key",
    "current_key",
    "may_force_mismatch",
    "may_see_candidates",
    "may_see_names",
    "may_see_strangers",
    "require_role",
]

log = logging.getLogger("marginface.serve")

#: A role may do everything the roles ranked below it may.
ROLE_RANK = {"recognise": 0, "enrol": 1, "admin": 2}

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key (admin, enrol or recognise)."
)
_bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def current_key(
    request: Request,
    service: ServiceDep,
    header_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The API key record of the caller; 401 when the key is missing or wrong."""
    secret = header_key or (bearer.credentials if bearer is not None else None)
    if not secret:
        raise _unauthorized("an API key is required (X-API-Key header or Bearer token)")
    secret = secret.strip()
    key = service.gallery.keys.authenticate(secret, touch=False)
    if key is None:
        raise _unauthorized("the API key is wrong or has been revoked")
    if service.should_touch(key.id):
        key = service.gallery.keys.authenticate(secret, touch=True) or key
    request.state.key_id = key.id  # for access logs: the key's id, never the key
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]


def require_role(role: str) -> Callable[[ApiKey], Awaitable[ApiKey]]:
    """A dependency that lets through keys of ``role`` or a more powerful one (else 403)."""
    needed = ROLE_RANK[role]

    async def check(key: CurrentKey) -> ApiKey:
        if ROLE_RANK.get(key.role, -1) < needed:
            raise ApiError(
                403, "forbidden", f"this needs a key with the {role!r} role; yours is {key.role!r}"
            )
        return key

    check.__name__ = f"require_{role}"
    return check


AdminKey = Annotated[ApiKey, Depends(require_role("admin"))]
EnrolKey = Annotated[ApiKey, Depends(require_role("enrol"))]
RecogniseKey = Annotated[ApiKey, Depends(require_role("recognise"))]


def may_see_candidates(key: ApiKey, settings: ServeSettings) -> bool:
    """Whether ``/v1/identify`` shows this key each face's runner-up names and scores: enrol
    and admin keys, and recognise keys only where ``recognise_candidates`` is set."""
    return ROLE_RANK.get(key.role, -1) >= ROLE_RANK["enrol"] or settings.recognise_candidates


def may_see_names(key: ApiKey) -> bool:
    """Whether this key learns who the cameras saw: the names and subject ids of visits and in
    a camera's live view (admin keys, like the events and the attendance they make)."""
    return ROLE_RANK.get(key.role, -1) >= ROLE_RANK["admin"]


def may_see_strangers(key: ApiKey) -> bool:
    """Whether this key sees strangers' faces and their visitor in the review queue (enrol and
    admin keys: the reviewers)."""
    return ROLE_RANK.get(key.role, -1) >= ROLE_RANK["enrol"]


def may_force_mismatch(key: ApiKey) -> bool:
    """Whether this key may force a photo that does not look like the subject it is added to
    (enrolment's ``mismatch``): admin keys only. Forcing a photo that matches another subject
    is left to enrol keys, whose job it is to enrol; storing a stranger's face under someone's
    name is the graver act, so it needs the role that may also erase."""
    return ROLE_RANK.get(key.role, -1) >= ROLE_RANK["admin"]


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by its owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def bootstrap_admin_key(gallery: Gallery, key_file: Path) -> str | None:
    """On a gallery with no admin key, create one and store it in ``key_file`` (mode 0600).

    Returns the new key (for the caller to print once), or None when an admin key exists.
    """
    created = gallery.keys.create_first_admin("first admin")  # one key, even if two start
    if created is None:
        return None
    record, secret = created
    try:
        _write_private(key_file, secret + "\n")
    except OSError as exc:
        gallery.keys.delete(record.id, allow_last_admin=True)  # nobody holds it
        raise ConfigError(f"cannot write the admin key file {key_file}: {exc}") from None
    log.info("created the first admin key %s; it is stored in %s", record.id, key_file)
    return secret


def admin_key_notice(gallery: Gallery, key_file: Path) -> str:
    """What start-up says about admin keys when none was created: the key file's, when it
    still holds a working admin key; otherwise the truth (the file is missing, or its key was
    revoked or is not an admin's) and how to get one. Nothing is printed of any key."""
    admins = gallery.keys.count("admin")
    create = f"marginface keys create --role admin --db {redact_url(str(gallery.url))}"
    try:
        held = key_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return (
            f"admin keys: {admins} exist; none is in {key_file} (there is no such file). Use "
            f"yours, or create one with `{create}`"
        )
    except (OSError, UnicodeDecodeError) as exc:
        return (
            f"admin keys: {admins} exist; {key_file} cannot be read ({exc}). Create one with "
            f"`{create}`"
        )
    key = gallery.keys.authenticate(held, touch=False)
    if key is not None and key.role == "admin":
        return f"admin key: in {key_file}"
    why = "was revoked" if key is None else f"is a {key.role!r} key, not an admin's"
    return (
        f"the admin key in {key_file} {why}; {admins} admin key(s) exist: use one of them, or "
        f"create one with `{create}`"
    )
