"""The subject and face repository: enrolled people and their face embeddings in SQL, and their
export.

Every write checks its input first (:mod:`marginface.gallery.validate`, the model's
normalisation), runs in ONE transaction and, when it adds or removes faces, makes the same
change in the vector index through :class:`~marginface.gallery.sync.IndexSync`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from marginface.errors import ConflictError, GalleryError, NotFoundError
from marginface.gallery.db import Database
from marginface.gallery.model import EmbeddingModel
from marginface.gallery.sync import IndexSync
from marginface.gallery.types import FaceRecord, Subject, utc_from_ts
from marginface.gallery.validate import clean_name, metadata_json

__all__ = ["Guard", "SubjectStore"]

#: A check run inside an enrolment's write transaction, serialised with every other one; it
#: raises to refuse the write (see :meth:`SubjectStore.create`).
Guard = Callable[[], None]

_SUBJECT_COLS = (
    "s.id, s.name, s.metadata, s.created_at, s.updated_at, "
    "(SELECT COUNT(*) FROM faces f WHERE f.subject_id = s.id)"
)
_FACE_COLS = (
    "id, subject_id, model, dim, created_at, source_hash, CASE WHEN crop IS NULL THEN 0 ELSE 1 END"
)


def _subject(row: Sequence[Any]) -> Subject:
    return Subject(
        id=row[0],
        name=row[1],
        metadata=json.loads(row[2] or "{}"),
        created_at=utc_from_ts(row[3]),
        updated_at=utc_from_ts(row[4]),
        n_faces=int(row[5]),
    )


def _face(row: Sequence[Any]) -> FaceRecord:
    return FaceRecord(
        id=int(row[0]),
        subject_id=row[1],
        model=row[2],
        dim=int(row[3]),
        created_at=utc_from_ts(row[4]),
        source_hash=row[5],
        has_crop=bool(row[6]),
    )


def _like_pattern(search: str) -> str:
    """A case-insensitive substring pattern for ``LIKE ... ESCAPE '\\'``: the user's ``%`` and
    ``_`` are literal characters, not wildcards."""
    escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class SubjectStore:
    """The subjects of one gallery and their faces: ``gallery.subjects``.

    Every write checks its input first, runs in ONE transaction and, when it adds or removes
    faces, makes the same change in the vector index at once. Thread-safe; several processes
    may share the store (see :class:`~marginface.gallery.Gallery`).
    """

    def __init__(self, db: Database, model: EmbeddingModel, sync: IndexSync) -> None:
        self._db = db
        self._model = model
        self._sync = sync

    # -- subjects -------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        metadata: dict[str, Any] | None = None,
        *,
        embeddings: np.ndarray | None = None,
        source_hashes: Sequence[str | None] | None = None,
        crops: Sequence[bytes | None] | None = None,
        subject_id: str | None = None,
        guard: Guard | None = None,
    ) -> Subject:
        """Create a subject, optionally with its first faces, in ONE transaction.

        Display names may repeat (each subject gets its own id). A crash leaves either the whole
        subject with all its faces, or nothing. ``guard`` runs inside the transaction,
        serialised with every other guarded change of faces (across processes), and refuses
        the write by raising: how enrolment re-checks what concurrent enrolments stored.
        """
        name = clean_name(name or "")
        meta = metadata_json(metadata)
        sid = subject_id or secrets.token_hex(8)
        vecs = None if embeddings is None else self._model.normalise(embeddings)
        with self._sync.change() as change:
            self._guarded(guard)
            if self.exists(sid):
                raise ConflictError(f"subject id {sid!r} already exists")
            now = time.time()
            self._db.execute(
                "INSERT INTO subjects (id, name, metadata, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (sid, name, meta, now, now),
            )
            if vecs is not None and len(vecs):
                change.add(self._insert_faces(sid, vecs, source_hashes, crops), vecs)
        return self.get(sid)

    def get(self, subject_id: str) -> Subject:
        """The subject with this id; :class:`NotFoundError` when there is none."""
        row = self._db.query_one(
            f"SELECT {_SUBJECT_COLS} FROM subjects s WHERE s.id = ?", (subject_id,)
        )
        if row is None:
            raise NotFoundError(f"unknown subject {subject_id!r}")
        return _subject(row)

    def exists(self, subject_id: str) -> bool:
        """Whether a subject with this id exists."""
        return self._db.query_one("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)) is not None

    def find(self, name: str) -> list[Subject]:
        """Subjects whose display name equals ``name`` (there may be several)."""
        rows = self._db.query(
            f"SELECT {_SUBJECT_COLS} FROM subjects s WHERE s.name = ? ORDER BY s.created_at",
            (name,),
        )
        return [_subject(r) for r in rows]

    def count(self, search: str | None = None) -> int:
        """Number of subjects (whose names contain ``search``, as :meth:`list`)."""
        if search:
            return int(
                self._db.scalar(
                    "SELECT COUNT(*) FROM subjects WHERE LOWER(name) LIKE ? ESCAPE '\\'",
                    (_like_pattern(search),),
                )
            )
        return int(self._db.scalar("SELECT COUNT(*) FROM subjects"))

    def update(
        self, subject_id: str, *, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Subject:
        """Rename a subject and/or replace its metadata."""
        sets, params = [], []
        if name is not None:
            sets.append("name = ?")
            params.append(clean_name(name))
        if metadata is not None:
            sets.append("metadata = ?")
            params.append(metadata_json(metadata))
        with self._db.transaction():
            self.get(subject_id)
            if sets:
                self._db.execute(
                    f"UPDATE subjects SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
                    [*params, time.time(), subject_id],
                )
        return self.get(subject_id)

    def delete(self, subject_id: str, *, erase_events: bool = True) -> int:
        """Delete a subject, all its faces (SQL and index, immediately) and, by default, its
        recognition events (else they stay, without the subject), in ONE transaction. Returns
        the number of faces removed."""
        with self._sync.change() as change:
            self.get(subject_id)
            change.remove(
                r[0]
                for r in self._db.query("SELECT id FROM faces WHERE subject_id = ?", (subject_id,))
            )
            self._db.execute("DELETE FROM faces WHERE subject_id = ?", (subject_id,))
            self._db.execute("DELETE FROM subjects WHERE id = ?", (subject_id,))
            if erase_events:
                self._db.execute("DELETE FROM events WHERE subject_id = ?", (subject_id,))
            else:
                self._db.execute(
                    "UPDATE events SET subject_id = NULL, subject_name = NULL WHERE subject_id = ?",
                    (subject_id,),
                )
        self._db.checkpoint()
        return len(change.removed_ids)

    def _guarded(self, guard: Guard | None) -> None:
        """Inside a write transaction: serialise it with every other guarded change of faces
        (across processes), then let ``guard`` check what was stored meanwhile and refuse."""
        if guard is not None:
            self._db.lock_writes("faces")
            guard()

    # -- faces ----------------------------------------------------------------------------------
    def add_faces(
        self,
        subject_id: str,
        embeddings: np.ndarray,
        *,
        source_hashes: Sequence[str | None] | None = None,
        crops: Sequence[bytes | None] | None = None,
        guard: Guard | None = None,
    ) -> list[int]:
        """Add embeddings (N, dim) to an existing subject in ONE transaction; return face ids.
        ``guard`` as for :meth:`create`."""
        vecs = self._model.normalise(embeddings)
        if len(vecs) == 0:
            return []
        with self._sync.change() as change:
            self._guarded(guard)
            self.get(subject_id)
            ids = self._insert_faces(subject_id, vecs, source_hashes, crops)
            change.add(ids, vecs)
        return ids

    def _insert_faces(
        self,
        subject_id: str,
        vecs: np.ndarray,
        source_hashes: Sequence[str | None] | None,
        crops: Sequence[bytes | None] | None,
    ) -> list[int]:
        """Inside a transaction: store normalised vectors of a subject; return their ids."""
        model, dim = self._model.require()
        n = len(vecs)
        hashes = list(source_hashes) if source_hashes is not None else [None] * n
        crop_list = list(crops) if crops is not None else [None] * n
        if len(hashes) != n or len(crop_list) != n:
            raise GalleryError("source_hashes and crops must match the embeddings one to one")
        now = time.time()
        ids = []
        for vec, h, crop in zip(vecs, hashes, crop_list, strict=True):
            ids.append(
                int(
                    self._db.scalar(
                        "INSERT INTO faces (subject_id, model, dim, embedding, created_at, "
                        "source_hash, crop) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                        (subject_id, model, dim, vec.astype("<f4").tobytes(), now, h, crop),
                    )
                )
            )
        self._db.execute("UPDATE subjects SET updated_at = ? WHERE id = ?", (now, subject_id))
        return ids

    def faces(self, subject_id: str) -> list[FaceRecord]:
        """The faces of a subject (:class:`NotFoundError` for an unknown subject)."""
        self.get(subject_id)
        rows = self._db.query(
            f"SELECT {_FACE_COLS} FROM faces WHERE subject_id = ? ORDER BY id", (subject_id,)
        )
        return [_face(r) for r in rows]

    def get_face(self, face_id: int) -> FaceRecord:
        """One face record (:class:`NotFoundError` when unknown)."""
        row = self._db.query_one(f"SELECT {_FACE_COLS} FROM faces WHERE id = ?", (int(face_id),))
        if row is None:
            raise NotFoundError(f"unknown face {face_id}")
        return _face(row)

    def face_crop(self, face_id: int) -> bytes | None:
        """The stored aligned crop (PNG bytes) of a face, when crops are kept
        (:class:`NotFoundError` for an unknown face)."""
        row = self._db.query_one("SELECT crop FROM faces WHERE id = ?", (int(face_id),))
        if row is None:
            raise NotFoundError(f"unknown face {face_id}")
        return bytes(row[0]) if row[0] is not None else None

    def embeddings(self, subject_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(face ids (N,), embeddings (N, dim))`` of one subject, normalised
        (:class:`NotFoundError` for an unknown subject)."""
        self.get(subject_id)
        rows = self._db.query(
            "SELECT id, embedding FROM faces WHERE subject_id = ? ORDER BY id", (subject_id,)
        )
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, self._model.dim or 0), np.float32)
        ids = np.asarray([r[0] for r in rows], dtype=np.int64)
        mat = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4").reshape(len(rows), -1)
        return ids, mat.astype(np.float32)

    def delete_face(self, face_id: int) -> FaceRecord:
        """Delete one face from SQL and from the index, immediately; return its record."""
        with self._sync.change() as change:
            rec = self.get_face(face_id)
            self._db.execute("DELETE FROM faces WHERE id = ?", (int(face_id),))
            self._db.execute(
                "UPDATE subjects SET updated_at = ? WHERE id = ?", (time.time(), rec.subject_id)
            )
            change.remove([rec.id])
        self._db.checkpoint()
        return rec

    def count_faces(self) -> int:
        """Number of stored faces."""
        return int(self._db.scalar("SELECT COUNT(*) FROM faces"))

    def faces_per_subject(self) -> dict[int, int]:
        """Faces per subject -> how many subjects have that many (subjects with faces only):
        the gallery's composition, which its operating point is derived for."""
        rows = self._db.query(
            "SELECT n, COUNT(*) FROM (SELECT COUNT(*) AS n FROM faces GROUP BY subject_id) c "
            "GROUP BY n"
        )
        return {int(n): int(c) for n, c in rows}

    def faces_with_source_hashes(self, source_hashes: Sequence[str]) -> dict[str, list[FaceRecord]]:
        """The stored faces enrolled from photos with these SHA-256 hashes
        (:attr:`FaceRecord.source_hash`), by hash (a hash no face has is left out; each list in
        the order the faces were stored): how enrolment finds a photo that is stored already,
        and for which subject."""
        found: dict[str, list[FaceRecord]] = {}
        for rows in self._db.query_in(
            f"SELECT {_FACE_COLS} FROM faces WHERE source_hash IN ({{marks}}) ORDER BY id",
            sorted(set(source_hashes)),
        ):
            for row in rows:
                face = _face(row)
                found.setdefault(str(face.source_hash), []).append(face)
        return found

    def max_face_id(self) -> int:
        """The highest face id so far (0 for none); ids are never reused, so the faces stored
        after a moment are those above its ``max_face_id``."""
        return int(self._db.scalar("SELECT COALESCE(MAX(id), 0) FROM faces"))

    def faces_after(self, face_id: int) -> list[tuple[FaceRecord, str, np.ndarray]]:
        """The faces stored after ``face_id`` (see :meth:`max_face_id`): each record, its
        subject's name and its normalised embedding."""
        rows = self._db.query(
            "SELECT f.id, f.subject_id, f.model, f.dim, f.created_at, f.source_hash, "
            "CASE WHEN f.crop IS NULL THEN 0 ELSE 1 END, s.name, f.embedding "
            "FROM faces f JOIN subjects s ON s.id = f.subject_id WHERE f.id > ? ORDER BY f.id",
            (int(face_id),),
        )
        return [
            (_face(r[:7]), r[7], np.frombuffer(bytes(r[8]), dtype="<f4").astype(np.float32))
            for r in rows
        ]

    # -- export ---------------------------------------------------------------------------------
    def export(self, *, include_embeddings: bool = False) -> list[dict[str, Any]]:
        """Every subject (as :meth:`list` orders them) with its faces, JSON-ready
        (embeddings only when asked: they are biometric data); the ``subjects`` of
        :meth:`Gallery.export <marginface.gallery.Gallery.export>`."""
        subjects = []
        for s in self.list():
            entry = s.to_dict()
            faces = [f.to_dict() for f in self.faces(s.id)]
            if include_embeddings:
                ids, mat = self.embeddings(s.id)
                emb = {int(i): v for i, v in zip(ids, mat, strict=True)}
                for f in faces:
                    f["embedding"] = [round(float(x), 7) for x in emb[f["id"]]]
            entry["faces"] = faces
            subjects.append(entry)
        return subjects

    # Last in the class: below this method, `list` in an annotation would name it (mypy).
    def list(
        self, *, limit: int | None = None, offset: int = 0, search: str | None = None
    ) -> list[Subject]:
        """Subjects ordered by name then creation; ``search`` filters names (case-insensitive
        substring, taken literally)."""
        sql = f"SELECT {_SUBJECT_COLS} FROM subjects s"
        params: list[Any] = []
        if search:
            sql += " WHERE LOWER(s.name) LIKE ? ESCAPE '\\'"
            params.append(_like_pattern(search))
        sql += " ORDER BY s.name, s.created_at, s.id"
        clause, bounds = self._db.page(limit, offset)
        sql += clause
        params += bounds
        return [_subject(r) for r in self._db.query(sql, params)]
