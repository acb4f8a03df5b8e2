"""Strangers seen by cameras, grouped as visitors for a person to review.

An unknown visit (a track no enrolled subject matched) is recorded as a *sighting*: its faces'
embeddings, quality scores and, when the gallery keeps crops, their aligned crops. Sightings
that look alike are grouped into one *visitor*, whatever the camera or the day:

* only on strong, consistent evidence: the sighting's quality-weighted mean embedding must
  reach the visitor's mean at a strict 1:1 threshold (the model's at FAR 1e-4), **and** most
  of the sighting's faces (at least 60 %, and two when it has two) must each match one of the
  visitor's kept faces at the 1:1 threshold at FAR 1e-3. A single mean above the operating
  point is not enough: it merged two women in one visitor on real footage. The most similar
  such visitor takes the sighting, else a new ``pending`` visitor is made;
* a ``pending`` visitor's mean follows its sightings (a running mean weighted by faces) and it
  keeps its ``keep_faces`` best faces by quality;
* a ``dismissed`` visitor only counts the sighting and moves its ``last_seen``: a person
  dismissed from the review queue does not come back to it at their next visit. The rows stay
  until the retention purge (:meth:`Gallery.purge_stream_data
  <marginface.gallery.Gallery.purge_stream_data>`) deletes them: once a dismissed
  visitor's faces are older than the retention age and it has not been seen for that long, it
  goes, and a later sighting makes a new pending visitor;
* ``assigned`` visitors (enrolled into a subject, which then identifies the person) take no
  more sightings.

Review: a visitor is assigned to an existing or a new subject (by the gallery,
:meth:`Gallery.assign_visitor <marginface.gallery.Gallery.assign_visitor>`: its stored faces
are enrolled through the subjects' ordinary path, with its index, generation counter and guard,
and the visitor is marked in the same transaction), dismissed, or **split**: faces that are
another person's go to a new pending visitor. Every write is one committed transaction.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from marginface.embed import l2_normalize
from marginface.errors import ConflictError, GalleryError, NotFoundError
from marginface.gallery.cluster import check_lease
from marginface.gallery.db import Database
from marginface.gallery.events import to_timestamp
from marginface.gallery.model import EmbeddingModel
from marginface.gallery.types import (
    VISITOR_STATUSES,
    LeaseRef,
    StrangerSighting,
    Visitor,
    VisitorFace,
    utc_from_ts,
)
from marginface.gallery.validate import clean_name
from marginface.imaging import encode_png

__all__ = ["AGREE_FRACTION", "ASSIGN_FACES", "GROUP_FAR", "KEEP_FACES", "PAIR_FAR", "VisitorStore"]

#: Faces a visitor keeps, the best by quality.
KEEP_FACES = 8
#: Faces an assignment enrols by default: the visitor's best.
ASSIGN_FACES = 5
#: The 1:1 false-accept rate a sighting's mean must reach a visitor's mean at to join it.
GROUP_FAR = "1e-4"
#: The 1:1 false-accept rate at which one of the sighting's faces matches a visitor's face.
PAIR_FAR = "1e-3"
#: The share of a sighting's faces that must match the visitor's faces.
AGREE_FRACTION = 0.6

#: PostgreSQL advisory lock serialising the grouping of sightings (SQLite's single writer
#: already does): two processes must not both create a visitor for one person.
_PG_VISITORS_LOCK = 715530

_PNG = b"\x89PNG\r\n\x1a\n"
_VISITOR_COLS = (
    "id, status, subject_id, first_seen, last_seen, sightings, cameras, created_at, updated_at"
)
_FACE_COLS = "id, visitor_id, ts, camera, quality, CASE WHEN crop IS NULL THEN 0 ELSE 1 END"


def _blob(v: np.ndarray) -> bytes:
    return np.asarray(v, dtype="<f4").tobytes()


def _vector(blob: Any) -> np.ndarray:
    return np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32)


def _mean_of(rows: Sequence[Sequence[Any]]) -> np.ndarray:
    """The quality-weighted mean of visitor-face rows ``(id, ts, camera, quality, embedding)``,
    normalised."""
    vecs = np.vstack([_vector(r[4]) for r in rows])
    weights = np.asarray([float(r[3]) for r in rows]) + 1e-6
    return l2_normalize((weights[:, None] * vecs).sum(axis=0))


def _face(row: Sequence[Any]) -> VisitorFace:
    return VisitorFace(
        id=int(row[0]),
        visitor_id=row[1],
        ts=utc_from_ts(row[2]),
        camera=row[3],
        quality=float(row[4]),
        has_crop=bool(row[5]),
    )


def _png(crop: Any) -> bytes | None:
    """A crop as PNG bytes: an RGB uint8 array is encoded, PNG bytes are kept, None stays."""
    if crop is None:
        return None
    if isinstance(crop, bytes | bytearray | memoryview):
        data = bytes(crop)
        if not data.startswith(_PNG):
            raise GalleryError("a visitor face crop given as bytes must be a PNG image")
        return data
    arr = np.asarray(crop)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise GalleryError(
            f"a face crop must be an RGB uint8 image (H, W, 3), got {arr.dtype} {arr.shape}"
        )
    return encode_png(arr)


def _status(status: str | None) -> str | None:
    if status is not None and status not in VISITOR_STATUSES:
        raise GalleryError(
            f"unknown visitor status {status!r}: use one of {', '.join(VISITOR_STATUSES)}"
        )
    return status


class VisitorStore:
    """Strangers seen by cameras, grouped as visitors for review: ``gallery.visitors``.
    ``threshold_at(far)`` is the model's 1:1 threshold at a false-accept rate (from the
    gallery's card), where the grouping's thresholds come from by default.

    Assigning a visitor to a subject enrols into the subjects and asks identification, so it
    is the gallery's (:meth:`Gallery.assign_visitor
    <marginface.gallery.Gallery.assign_visitor>`, with :meth:`faces_to_enrol` and
    :meth:`mark_assigned` from here), and so is the retention purge, which also deletes events
    (:meth:`Gallery.purge_stream_data <marginface.gallery.Gallery.purge_stream_data>`, with
    :meth:`delete_seen_before`)."""

    def __init__(
        self, db: Database, model: EmbeddingModel, threshold_at: Callable[[str], float]
    ) -> None:
        self._db = db
        self._model = model
        self._threshold_at = threshold_at

    # -- recording ------------------------------------------------------------------------------
    def _lock(self) -> None:
        """Inside a transaction: serialise it with every other grouping of sightings."""
        if self._db.dialect == "postgresql":
            self._db.execute("SELECT pg_advisory_xact_lock(?)", (_PG_VISITORS_LOCK,))

    def record(
        self,
        camera: str,
        first_seen: datetime | float,
        last_seen: datetime | float,
        embeddings: np.ndarray,
        qualities: Sequence[float],
        crops: Sequence[np.ndarray | bytes | None] | None = None,
        threshold: float | None = None,
        *,
        pair_threshold: float | None = None,
        keep_faces: int = KEEP_FACES,
        lease: LeaseRef | None = None,
    ) -> StrangerSighting:
        """Record an unknown visit (a track no subject matched) and group it with the visitor
        it looks like, in ONE transaction (serialised with every other one, across processes).

        ``embeddings`` (N, dim) are the visit's faces, ``qualities`` their quality scores
        (:attr:`marginface.align.quality.FaceQuality.score`), ``crops`` their aligned crops
        (RGB uint8 arrays, or PNG bytes; None for faces without). Pass crops only when the
        gallery keeps them (the service's ``store_photos``, ``Recognizer.store_crops``).
        The visit joins the most similar ``pending`` or ``dismissed`` visitor only on strong,
        consistent evidence: its quality-weighted mean embedding has cosine >= ``threshold``
        with the visitor's mean (default: the model's 1:1 threshold at FAR 1e-4,
        :data:`GROUP_FAR`) **and** most of its faces match one of the visitor's kept faces at
        ``pair_threshold`` (default: ``threshold`` when that is given, else the 1:1 threshold
        at FAR 1e-3); else it starts a new pending visitor. A pending visitor's mean follows
        its visits and it keeps its ``keep_faces`` best faces by quality. A dismissed visitor
        only counts the visit and moves ``last_seen``: a dismissed person does not come back to
        the review queue, until the retention purge removes the visitor
        (:meth:`Gallery.purge_stream_data <marginface.gallery.Gallery.purge_stream_data>`). A
        dimension unlike the gallery's is :class:`GalleryError`.
        """
        if threshold is None:
            threshold = self._threshold_at(GROUP_FAR)
            if pair_threshold is None:
                pair_threshold = self._threshold_at(PAIR_FAR)
        _, dim = self._model.require()
        camera = clean_name(camera, what="camera", max_length=100)
        vecs = self._model.normalise(embeddings)  # (N, dim) unit rows, or GalleryError
        n = len(vecs)
        if n == 0:
            raise GalleryError("a stranger's sighting needs at least one face")
        q = np.asarray(list(qualities), dtype=np.float64)
        if q.shape != (n,):
            raise GalleryError(f"{n} embeddings need {n} quality scores, got {q.size}")
        if not np.all(np.isfinite(q)) or np.any(q < 0):
            raise GalleryError("quality scores must be finite and not negative")
        if crops is not None and len(crops) != n:
            raise GalleryError(f"{n} embeddings need {n} crops (or None), got {len(crops)}")
        t0, t1 = to_timestamp(first_seen), to_timestamp(last_seen)
        if not (math.isfinite(t0) and math.isfinite(t1)) or t1 < t0:
            raise GalleryError("a sighting's last_seen must not be before its first_seen")
        threshold = float(threshold)
        pair = threshold if pair_threshold is None else float(pair_threshold)
        if not (math.isfinite(threshold) and math.isfinite(pair)):
            raise GalleryError("the grouping threshold must be a finite cosine")
        keep = int(keep_faces)
        if keep < 1:
            raise GalleryError("keep_faces must be at least 1")
        weights = q + 1e-6
        total = (weights[:, None] * vecs).sum(axis=0)
        mean = l2_normalize(total) if np.linalg.norm(total) > 1e-6 else vecs[int(np.argmax(q))]
        # the sighting's own best faces (only these can be among the visitor's best)
        order = sorted(range(n), key=lambda i: -q[i])[:keep]
        pngs = [_png(crops[i]) if crops is not None else None for i in order]
        now = time.time()
        with self._db.transaction():
            check_lease(self._db, lease)
            self._lock()
            close: list[tuple[float, str, str]] = []  # (score, id, status)
            for vid, status, blob in self._db.query(
                "SELECT id, status, embedding FROM visitors "
                "WHERE status IN ('pending', 'dismissed') AND dim = ?",
                (dim,),
            ):
                score = float(np.dot(_vector(blob), mean))
                if score >= threshold:
                    close.append((score, vid, status))
            best = next(
                (c for c in sorted(close, reverse=True) if self._agrees(c[1], vecs, pair)), None
            )
            if best is None:
                vid = secrets.token_hex(8)
                self._db.execute(
                    "INSERT INTO visitors (id, status, subject_id, first_seen, last_seen, "
                    "sightings, cameras, dim, weight, embedding, created_at, updated_at) "
                    "VALUES (?, 'pending', NULL, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                    (vid, t0, t1, json.dumps([camera]), dim, float(n), _blob(mean), now, now),
                )
                self._add_faces(vid, camera, t1, vecs, q, order, pngs, keep)
                return StrangerSighting(visitor_id=vid, new=True, score=-1.0, status="pending")
            score, vid, status = best
            row = self._db.query_one(
                "SELECT first_seen, last_seen, sightings, cameras, weight, embedding "
                "FROM visitors WHERE id = ?",
                (vid,),
            )
            assert row is not None  # selected above, in this transaction
            cams = list(json.loads(row[3] or "[]"))
            if camera not in cams:
                cams.append(camera)
            sets = "first_seen = ?, last_seen = ?, sightings = ?, cameras = ?, updated_at = ?"
            params: list[Any] = [
                min(float(row[0]), t0),
                max(float(row[1]), t1),
                int(row[2]) + 1,
                json.dumps(cams),
                now,
            ]
            if status == "pending":
                weight = float(row[4])
                merged = _vector(row[5]) * weight + mean * n
                sets += ", weight = ?, embedding = ?"
                params += [
                    weight + n,
                    _blob(l2_normalize(merged) if np.linalg.norm(merged) > 1e-6 else mean),
                ]
            self._db.execute(f"UPDATE visitors SET {sets} WHERE id = ?", [*params, vid])
            if status == "pending":
                self._add_faces(vid, camera, t1, vecs, q, order, pngs, keep)
        return StrangerSighting(visitor_id=vid, new=False, score=score, status=status)

    def _agrees(self, visitor_id: str, vecs: np.ndarray, pair: float) -> bool:
        """Inside the transaction: whether most of a sighting's faces (``vecs``) each match
        one of the visitor's kept faces at ``pair`` (a visitor whose faces were purged is
        judged by its mean alone)."""
        faces = [
            _vector(r[0])
            for r in self._db.query(
                "SELECT embedding FROM visitor_faces WHERE visitor_id = ?", (visitor_id,)
            )
        ]
        if not faces:
            return True
        best = (vecs @ np.vstack(faces).T).max(axis=1)
        matched = int((best >= pair).sum())
        return matched >= min(2, len(vecs)) and matched >= AGREE_FRACTION * len(vecs)

    def _add_faces(
        self,
        vid: str,
        camera: str,
        ts: float,
        vecs: np.ndarray,
        q: np.ndarray,
        order: list[int],
        pngs: list[bytes | None],
        keep: int,
    ) -> None:
        """Inside the transaction: store the sighting's best faces, then keep the visitor's
        ``keep`` best (by quality; the newer of equals)."""
        for i, png in zip(order, pngs, strict=True):
            self._db.execute(
                "INSERT INTO visitor_faces (visitor_id, ts, camera, quality, embedding, crop) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (vid, ts, camera, float(q[i]), _blob(vecs[i]), png),
            )
        ids = [
            int(r[0])
            for r in self._db.query(
                "SELECT id FROM visitor_faces WHERE visitor_id = ? ORDER BY quality DESC, id DESC",
                (vid,),
            )
        ]
        extra = ids[keep:]
        for start in range(0, len(extra), 500):
            part = extra[start : start + 500]
            self._db.execute(
                f"DELETE FROM visitor_faces WHERE id IN ({','.join('?' * len(part))})", part
            )

    # -- reading --------------------------------------------------------------------------------
    def _faces_of(self, visitor_ids: Sequence[str]) -> dict[str, list[VisitorFace]]:
        found: dict[str, list[VisitorFace]] = {vid: [] for vid in visitor_ids}
        for rows in self._db.query_in(
            f"SELECT {_FACE_COLS} FROM visitor_faces WHERE visitor_id IN ({{marks}}) "
            "ORDER BY quality DESC, id DESC",
            list(visitor_ids),
        ):
            for row in rows:
                found[row[1]].append(_face(row))
        return found

    def _visitors(self, rows: Sequence[Sequence[Any]]) -> list[Visitor]:
        faces = self._faces_of([r[0] for r in rows])
        return [
            Visitor(
                id=r[0],
                status=r[1],
                subject_id=r[2],
                first_seen=utc_from_ts(r[3]),
                last_seen=utc_from_ts(r[4]),
                sightings=int(r[5]),
                cameras=list(json.loads(r[6] or "[]")),
                faces=faces[r[0]],
                created_at=utc_from_ts(r[7]),
                updated_at=utc_from_ts(r[8]),
            )
            for r in rows
        ]

    def embeddings(self, visitor_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The visitor's kept faces as (qualities (N,), embeddings (N, dim)), best first: what
        a camera taking over a stranger's visit compares new faces with. :class:`NotFoundError`
        when unknown."""
        faces = self._db.query(
            "SELECT quality, embedding FROM visitor_faces WHERE visitor_id = ? "
            "ORDER BY quality DESC, id DESC",
            (str(visitor_id),),
        )
        if not faces:
            if self._db.query_one("SELECT 1 FROM visitors WHERE id = ?", (str(visitor_id),)):
                return np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
            raise NotFoundError(f"unknown visitor {visitor_id!r}")
        return (
            np.asarray([float(r[0]) for r in faces], np.float32),
            np.vstack([_vector(r[1]) for r in faces]),
        )

    def get(self, visitor_id: str) -> Visitor:
        """One visitor, with its kept faces (best first); :class:`NotFoundError` when
        unknown."""
        row = self._db.query_one(
            f"SELECT {_VISITOR_COLS} FROM visitors WHERE id = ?", (str(visitor_id),)
        )
        if row is None:
            raise NotFoundError(f"unknown visitor {visitor_id!r}")
        return self._visitors([row])[0]

    def count(self, status: str | None = "pending") -> int:
        """Number of visitors of one status (None: all)."""
        if _status(status) is None:
            return int(self._db.scalar("SELECT COUNT(*) FROM visitors"))
        return int(self._db.scalar("SELECT COUNT(*) FROM visitors WHERE status = ?", (status,)))

    def face_crop(self, face_id: int) -> bytes | None:
        """A visitor face's aligned crop (PNG bytes), None when none was kept;
        :class:`NotFoundError` for an unknown face."""
        row = self._db.query_one("SELECT crop FROM visitor_faces WHERE id = ?", (int(face_id),))
        if row is None:
            raise NotFoundError(f"unknown visitor face {face_id}")
        return bytes(row[0]) if row[0] is not None else None

    # -- review ---------------------------------------------------------------------------------
    def faces_to_enrol(
        self, visitor: Visitor, faces: Sequence[int] | None = None
    ) -> tuple[list[int], np.ndarray, list[bytes | None] | None]:
        """The faces an assignment of ``visitor`` enrols: ``faces`` (ids of its own faces) or
        its best, up to :data:`ASSIGN_FACES`. Returns their ids, their embeddings (N, dim) and
        their crops (None when none was kept). :class:`GalleryError` for faces not its own or
        none at all, :class:`ConflictError` when they were purged meanwhile."""
        if faces is None:
            chosen = visitor.face_ids[:ASSIGN_FACES]
        else:
            chosen = [int(f) for f in faces]
            strange = sorted(set(chosen) - set(visitor.face_ids))
            if strange:
                raise GalleryError(f"faces {strange} are not faces of visitor {visitor.id}")
            chosen = list(dict.fromkeys(chosen))
        if not chosen:
            raise GalleryError(f"visitor {visitor.id} has no stored face to enrol")
        rows: dict[int, tuple[Any, Any]] = {}
        for part in self._db.query_in(
            "SELECT id, embedding, crop FROM visitor_faces WHERE id IN ({marks})", chosen
        ):
            rows.update((int(r[0]), (r[1], r[2])) for r in part)
        if len(rows) != len(chosen):  # purged meanwhile
            raise ConflictError(f"faces of visitor {visitor.id} changed meanwhile; try again")
        vecs = np.vstack([_vector(rows[f][0]) for f in chosen])
        crop_list = [bytes(rows[f][1]) if rows[f][1] is not None else None for f in chosen]
        return chosen, vecs, crop_list if any(c is not None for c in crop_list) else None

    def mean(self, visitor_id: str) -> np.ndarray:
        """The visitor's mean embedding (normalised; quality-weighted over its visits);
        :class:`NotFoundError` when unknown."""
        row = self._db.query_one("SELECT embedding FROM visitors WHERE id = ?", (visitor_id,))
        if row is None:
            raise NotFoundError(f"unknown visitor {visitor_id!r}")
        return _vector(row[0])

    def mark_assigned(self, visitor_id: str, subject_id: str) -> None:
        """Mark a pending visitor ``assigned`` to ``subject_id``: the last step of
        :meth:`Gallery.assign_visitor <marginface.gallery.Gallery.assign_visitor>`, run inside
        the transaction that enrols its faces. :class:`ConflictError` when the visitor is no
        longer pending (reviewed meanwhile)."""
        with self._db.transaction():
            changed = self._db.execute(
                "UPDATE visitors SET status = 'assigned', subject_id = ?, updated_at = ? "
                "WHERE id = ? AND status = 'pending'",
                (subject_id, time.time(), visitor_id),
            )
            if changed != 1:
                raise ConflictError(f"visitor {visitor_id} was reviewed meanwhile")

    def dismiss(self, visitor_id: str) -> Visitor:
        """Take a visitor out of the review queue (status ``dismissed``). Its later visits are
        still grouped with it and only counted (see :meth:`record`). Dismissing twice changes
        nothing; an assigned visitor is :class:`ConflictError`."""
        with self._db.transaction():
            visitor = self.get(visitor_id)
            if visitor.status == "assigned":
                raise ConflictError(f"visitor {visitor.id} is assigned already")
            self._db.execute(
                "UPDATE visitors SET status = 'dismissed', updated_at = ? WHERE id = ?",
                (time.time(), visitor.id),
            )
        return self.get(visitor.id)

    def split(self, visitor_id: str, faces: Sequence[int]) -> Visitor:
        """Move ``faces`` of a pending visitor to a new pending visitor, in ONE transaction:
        the review queue grouped two people, and a person says which faces are the other's.
        Both visitors keep the means of their own faces. Returns the new visitor;
        :class:`ConflictError` for a visitor not pending, :class:`GalleryError` for faces not
        its own or all of them."""
        chosen = list(dict.fromkeys(int(f) for f in faces))
        if not chosen:
            raise GalleryError("name the faces to split off (faces: [id, ...])")
        with self._db.transaction():
            self._lock()
            visitor = self.get(visitor_id)
            if visitor.status != "pending":
                raise ConflictError(
                    f"visitor {visitor.id} is {visitor.status}: only a pending one splits"
                )
            strange = sorted(set(chosen) - set(visitor.face_ids))
            if strange:
                raise GalleryError(f"faces {strange} are not faces of visitor {visitor.id}")
            if set(chosen) == set(visitor.face_ids):
                raise GalleryError("a split leaves the visitor at least one face")
            rows = {
                int(r[0]): r
                for part in self._db.query_in(
                    "SELECT id, ts, camera, quality, embedding FROM visitor_faces "
                    "WHERE id IN ({marks})",
                    visitor.face_ids,
                )
                for r in part
            }
            moved = [rows[f] for f in chosen]
            kept = [rows[f] for f in visitor.face_ids if f not in set(chosen)]
            now = time.time()
            new = secrets.token_hex(8)
            cams = sorted({str(r[2]) for r in moved})
            self._db.execute(
                "INSERT INTO visitors (id, status, subject_id, first_seen, last_seen, "
                "sightings, cameras, dim, weight, embedding, created_at, updated_at) "
                "VALUES (?, 'pending', NULL, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                (
                    new,
                    min(float(r[1]) for r in moved),
                    max(float(r[1]) for r in moved),
                    json.dumps(cams),
                    len(_vector(moved[0][4])),
                    float(len(moved)),
                    _blob(_mean_of(moved)),
                    now,
                    now,
                ),
            )
            for part in range(0, len(chosen), 500):
                ids = chosen[part : part + 500]
                marks = ",".join("?" * len(ids))
                self._db.execute(
                    f"UPDATE visitor_faces SET visitor_id = ? WHERE id IN ({marks})", [new, *ids]
                )
            self._db.execute(
                "UPDATE visitors SET weight = ?, embedding = ?, updated_at = ? WHERE id = ?",
                (float(len(kept)), _blob(_mean_of(kept)), now, visitor.id),
            )
        return self.get(new)

    # -- retention ------------------------------------------------------------------------------
    def delete_seen_before(self, cutoff: float) -> dict[str, int]:
        """Visitor faces (with their crops) seen before ``cutoff`` (epoch seconds), then the
        visitors left without faces and not seen since (assigned ones stay), in one
        transaction; how many of each went (``{"visitor_faces", "visitors"}``). A step of
        :meth:`Gallery.purge_stream_data <marginface.gallery.Gallery.purge_stream_data>`,
        which runs it with the camera visits' events in one transaction."""
        with self._db.transaction():
            faces = self._db.execute("DELETE FROM visitor_faces WHERE ts < ?", (cutoff,))
            visitors = self._db.execute(
                "DELETE FROM visitors WHERE status <> 'assigned' AND last_seen < ? AND NOT EXISTS "
                "(SELECT 1 FROM visitor_faces f WHERE f.visitor_id = visitors.id)",
                (cutoff,),
            )
        return {"visitor_faces": faces, "visitors": visitors}

    # Last in the class: below this method, `list` in an annotation would name it (mypy).
    def list(
        self, status: str | None = "pending", *, limit: int | None = 100, offset: int = 0
    ) -> list[Visitor]:
        """Visitors of one status (``pending``, ``assigned``, ``dismissed``; None: all), the
        most recently seen first, each with its kept faces (best first)."""
        sql = f"SELECT {_VISITOR_COLS} FROM visitors"
        params: list[Any] = []
        if _status(status) is not None:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY last_seen DESC, id"
        clause, bounds = self._db.page(limit, offset)
        sql += clause
        params += bounds
        return self._visitors(self._db.query(sql, params))
