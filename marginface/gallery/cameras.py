"""The camera repository: the cameras a service watches, kept with the gallery so that they
restart with it and every process sharing the gallery sees the same ones.

A camera's ``settings`` are a JSON object the gallery stores as given (the streams layer
validates them); its ``name`` follows the rules of every name in the gallery
(:func:`~marginface.gallery.validate.clean_name`) and is unique: it is the ``source`` of the
camera's events. Every write is one committed transaction.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

from marginface.errors import ConflictError, GalleryError, NotFoundError
from marginface.gallery.cluster import check_lease
from marginface.gallery.db import Database
from marginface.gallery.types import Camera, LeaseRef, utc_from_ts
from marginface.gallery.validate import clean_name, metadata_json

__all__ = ["MAX_CAMERA_NAME_LENGTH", "MAX_CAMERA_URL_LENGTH", "CameraStore"]

#: A camera's name is its events' ``source``, which holds at most 100 characters.
MAX_CAMERA_NAME_LENGTH = 100
#: Longest camera URL kept.
MAX_CAMERA_URL_LENGTH = 2000

_COLS = "id, name, url, settings, enabled, created_at, updated_at"
#: ``meta`` key of a camera's reading position (a file read to this presentation time).
_POSITION_KEY = "camera_position:"


def _url_digest(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def _camera(row: Sequence[Any]) -> Camera:
    return Camera(
        id=row[0],
        name=row[1],
        url=row[2],
        settings=json.loads(row[3] or "{}"),
        enabled=bool(row[4]),
        created_at=utc_from_ts(row[5]),
        updated_at=utc_from_ts(row[6]),
    )


def _name(name: str) -> str:
    return clean_name(name, what="camera name", max_length=MAX_CAMERA_NAME_LENGTH)


def _url(url: str) -> str:
    if not isinstance(url, str):
        raise GalleryError("the camera URL must be text")
    text = url.strip()
    if any(ch.isspace() for ch in text):
        raise GalleryError("the camera URL contains white space")
    return clean_name(text, what="camera URL", max_length=MAX_CAMERA_URL_LENGTH)


class CameraStore:
    """The cameras a service watches, kept with one gallery: ``gallery.cameras``. A camera is
    found by its id, else its name. URLs may carry passwords: show them with
    ``Camera.to_dict()``, which redacts them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _find(self, id_or_name: str) -> Camera | None:
        row = self._db.query_one(f"SELECT {_COLS} FROM cameras WHERE id = ?", (id_or_name,))
        if row is None:
            row = self._db.query_one(f"SELECT {_COLS} FROM cameras WHERE name = ?", (id_or_name,))
        return _camera(row) if row is not None else None

    def get(self, id_or_name: str) -> Camera:
        """The camera with this id, else this name; :class:`NotFoundError` when none."""
        camera = self._find(str(id_or_name))
        if camera is None:
            raise NotFoundError(f"unknown camera {id_or_name!r}")
        return camera

    def count(self) -> int:
        """Number of cameras."""
        return int(self._db.scalar("SELECT COUNT(*) FROM cameras"))

    def _name_taken(self, name: str, other_than: str | None) -> None:
        row = self._db.query_one("SELECT id FROM cameras WHERE name = ?", (name,))
        if row is not None and row[0] != other_than:
            raise ConflictError(f"a camera named {name!r} exists already")

    def create(
        self, name: str, url: str, settings: dict[str, Any] | None = None, enabled: bool = True
    ) -> Camera:
        """Add a camera: a unique ``name`` (the ``source`` of its events; the rules of subject
        names, at most 100 characters), the ``url`` it is read from and its ``settings`` (a
        JSON object stored as given: the streams layer validates it). A name in use is
        :class:`ConflictError`."""
        name, url = _name(name), _url(url)
        settings_text = metadata_json(settings)
        camera_id = secrets.token_hex(8)
        now = time.time()
        try:
            with self._db.transaction():
                self._name_taken(name, None)
                self._db.execute(
                    f"INSERT INTO cameras ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (camera_id, name, url, settings_text, int(bool(enabled)), now, now),
                )
                # held by no node yet (epoch 0): a node claims it (gallery.cluster)
                self._db.execute(
                    "INSERT INTO camera_leases (camera_id, epoch) VALUES (?, 0)", (camera_id,)
                )
        except ConflictError:  # the unique name, taken by a concurrent process meanwhile
            raise ConflictError(f"a camera named {name!r} exists already") from None
        return self.get(camera_id)

    def update(
        self,
        camera_id: str,
        *,
        name: str | None = None,
        url: str | None = None,
        settings: dict[str, Any] | None = None,
        enabled: bool | None = None,
    ) -> Camera:
        """Change what is given of a camera (found by id, else name); ``settings`` replace the
        stored ones whole. :class:`NotFoundError` for an unknown camera, :class:`ConflictError`
        for a name another camera has."""
        sets: list[str] = []
        params: list[Any] = []
        if name is not None:
            name = _name(name)
            sets.append("name = ?")
            params.append(name)
        if url is not None:
            sets.append("url = ?")
            params.append(_url(url))
        if settings is not None:
            sets.append("settings = ?")
            params.append(metadata_json(settings))
        if enabled is not None:
            sets.append("enabled = ?")
            params.append(int(bool(enabled)))
        try:
            with self._db.transaction():
                camera = self.get(camera_id)
                if name is not None:
                    self._name_taken(name, camera.id)
                if sets:
                    self._db.execute(
                        f"UPDATE cameras SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
                        [*params, time.time(), camera.id],
                    )
        except ConflictError:
            raise ConflictError(f"a camera named {name!r} exists already") from None
        return self.get(camera.id)

    def delete(self, camera_id: str) -> Camera:
        """Remove a camera (found by id, else name) and return its record; its events and
        visitors stay (until :meth:`Gallery.purge_stream_data
        <marginface.gallery.Gallery.purge_stream_data>`). :class:`NotFoundError` when
        unknown."""
        with self._db.transaction():
            camera = self.get(camera_id)
            self._db.execute("DELETE FROM cameras WHERE id = ?", (camera.id,))
            self._db.execute("DELETE FROM meta WHERE key = ?", (_POSITION_KEY + camera.id,))
        return camera

    # -- reading positions ----------------------------------------------------------------------
    def position(self, camera_id: str) -> float | None:
        """Where the camera's reading of its URL stopped: the presentation time (seconds) of
        the last frame it processed of a video file, so that a restart goes on from there
        instead of recording the file's visits again. None when unknown, or when the camera's
        URL changed since (a new file is read from its start)."""
        row = self._db.query_one(
            "SELECT value FROM meta WHERE key = ?", (_POSITION_KEY + camera_id,)
        )
        camera = self._find(camera_id)
        if row is None or camera is None:
            return None
        try:
            stored = json.loads(row[0])
            position = float(stored["position_s"])
        except (ValueError, KeyError, TypeError):
            return None
        if stored.get("url") != _url_digest(camera.url) or not math.isfinite(position):
            return None  # the camera reads another file now: from its start
        return position

    def set_position(
        self, camera_id: str, position_s: float | None, lease: LeaseRef | None = None
    ) -> None:
        """Remember where the camera's reading of its current URL stopped (None: forget it,
        the next reading starts at the beginning), under the camera's ``lease`` when a cluster
        node writes it. :class:`NotFoundError` for an unknown camera; deleting a camera forgets
        its position."""
        key = _POSITION_KEY + camera_id
        if position_s is not None and not (math.isfinite(position_s) and position_s >= 0):
            raise GalleryError("a reading position is a finite number of seconds, >= 0")
        with self._db.transaction():
            camera = self.get(camera_id)
            check_lease(self._db, lease)
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
            if position_s is not None:
                value = json.dumps({"url": _url_digest(camera.url), "position_s": position_s})
                self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))

    # Last in the class: below this method, `list` in an annotation would name it (mypy).
    def list(self) -> list[Camera]:
        """Every camera, by name."""
        return [
            _camera(r)
            for r in self._db.query(f"SELECT {_COLS} FROM cameras ORDER BY name, created_at, id")
        ]
