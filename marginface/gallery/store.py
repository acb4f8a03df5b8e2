"""The :class:`Gallery`: subjects, faces, events and API keys in SQL, vectors in an index."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import date as date_cls
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from marginface.errors import ConflictError, GalleryError, ModelError, NotFoundError, StorageError
from marginface.gallery.csvtext import csv_text
from marginface.gallery.db import Database
from marginface.gallery.index import VectorIndex, create_index
from marginface.gallery.types import (
    ROLES,
    ApiKey,
    AttendanceRow,
    Candidate,
    Event,
    FaceRecord,
    Hit,
    Identification,
    Subject,
    utc_from_ts,
)
from marginface.gallery.validate import clean_name, metadata_json
from marginface.gallery.vote import knn_vote

if TYPE_CHECKING:
    from marginface.card import ModelCard

__all__ = ["DEFAULT_K", "GALLERY_URL_ENV", "Gallery", "default_gallery_url", "resolve_threshold"]

log = logging.getLogger(__name__)

#: Environment variable naming the gallery (a SQLite path, sqlite:///..., or postgresql://...).
GALLERY_URL_ENV = "MARGINFACE_GALLERY_URL"
#: Neighbours fetched per query for the k-NN vote.
DEFAULT_K = 5
_KEY_PREFIX = "mfk"


def default_gallery_url() -> str:
    """``$MARGINFACE_GALLERY_URL``, else ``$XDG_DATA_HOME/marginface/gallery.db``
    (``~/.local/share/marginface/gallery.db``)."""
    env = os.environ.get(GALLERY_URL_ENV, "").strip()
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return str(Path(base) / "marginface" / "gallery.db")


def resolve_threshold(
    card: ModelCard | None, threshold: float | None = None, far: str | None = None
) -> float:
    """The decision threshold: ``threshold`` if given, else the card's calibrated one for
    ``far`` (default: the card's ``default_far``).

    Raises :class:`GalleryError` when neither exists: a model without calibration is never used
    with a silent magic number.
    """
    if threshold is not None:
        t = float(threshold)
        if not -1.0 <= t <= 1.0:
            raise GalleryError(f"threshold {t} is outside the cosine range [-1, 1]")
        return t
    if card is None:
        raise GalleryError(
            "no decision threshold: give one explicitly (e.g. --threshold 0.35) or use a model "
            "whose card has a calibration (marginface calibrate)"
        )
    if card.calibration is None or not card.calibration.thresholds:
        raise GalleryError(
            f"model {card.name!r} has no calibrated threshold in its card: run "
            "`marginface calibrate` on a verification set, or give a threshold explicitly"
        )
    try:
        return float(card.calibration.threshold(far))
    except ModelError as exc:
        raise GalleryError(f"model {card.name!r}: {exc}") from None


def _now() -> float:
    return time.time()


def _new_subject_id() -> str:
    return secrets.token_hex(8)


def _like_pattern(search: str) -> str:
    """A case-insensitive substring pattern for ``LIKE ... ESCAPE '\\'``: the user's ``%`` and
    ``_`` are literal characters, not wildcards."""
    escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Gallery:
    """Enrolled subjects and their face embeddings, with recognition events and API keys.

    Open it with :meth:`open`. All methods are thread-safe. Several processes may share one
    gallery (SQLite in WAL mode, or PostgreSQL): each keeps its in-process index in step with
    the SQL store through a generation counter checked before every search.
    """

    def __init__(
        self,
        db: Database,
        index: str,
        *,
        model_name: str | None,
        dim: int | None,
        card: ModelCard | None = None,
        threshold: float | None = None,
        far: str | None = None,
        index_options: dict[str, Any] | None = None,
        url: str = "",
    ) -> None:
        self._db = db
        self._lock = threading.RLock()
        self.url = url
        self.card = card
        self.default_threshold = threshold
        self.far = far
        self.index_kind = index.lower()
        self._index_options = dict(index_options or {})
        self._index: VectorIndex | None = None
        self._generation = -1
        self._closed = False
        self._model, self._dim = self._check_model(model_name, dim)
        if self._dim is not None:
            self._start_index()

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str | Path | None = None,
        model_name: str | None = None,
        dim: int | None = None,
        index: str = "exact",
        *,
        card: ModelCard | None = None,
        threshold: float | None = None,
        far: str | None = None,
        index_options: dict[str, Any] | None = None,
        create: bool = True,
    ) -> Gallery:
        """Open the gallery at ``url``, creating it unless ``create`` is False (then a SQLite
        file that does not exist is :class:`NotFoundError`, so a mistyped path is not taken
        for an empty gallery).

        ``url``: a SQLite file path, ``sqlite:///path``, or ``postgresql://user@host/db``;
        default :func:`default_gallery_url`. ``model_name``/``dim`` name the embedding model;
        a gallery holding faces of another model is refused with :class:`GalleryError`. Leave
        them out to adopt the gallery's recorded model (read-only uses such as listing).
        ``index``: ``exact``, ``faiss`` or ``milvus`` (``index_options`` go to
        :func:`marginface.gallery.create_index`; Milvus defaults to a Milvus Lite file beside
        a SQLite gallery). Use ``faiss`` for large galleries: by default it is
        :class:`FaissBinaryIndex` (2-4 ms a query at a million faces, the same answers as
        exact search for enrolled people, rebuilt from SQL at start in seconds plus the read).
        ``card``/``threshold``/``far`` set the identification threshold
        (:func:`resolve_threshold`); when ``card`` is given and ``model_name`` is not, the
        card's name and dimension are used.
        """
        if card is not None:
            model_name = model_name or card.name
            dim = dim or card.embedding_dim
        url_s = str(url) if url is not None else default_gallery_url()
        db = Database(url_s, create=create)
        options = dict(index_options or {})
        if index.lower() == "milvus" and "uri" not in options:
            if db.dialect != "sqlite":
                db.close()
                raise GalleryError("a Milvus index beside PostgreSQL needs index_options['uri']")
            options["uri"] = str(Path(db.target).with_suffix(".milvus.db"))
        try:
            return cls(db, index, model_name=model_name, dim=dim, card=card, threshold=threshold,
                       far=far, index_options=options, url=url_s)
        except BaseException:
            db.close()
            raise

    def _check_model(
        self, model_name: str | None, dim: int | None
    ) -> tuple[str | None, int | None]:
        rows = dict(self._db.query("SELECT key, value FROM meta WHERE key IN ('model', 'dim')"))
        stored_model, stored_dim = rows.get("model"), rows.get("dim")
        stored_dim_i = int(stored_dim) if stored_dim is not None else None
        if model_name is None and dim is None:
            return stored_model, stored_dim_i
        if model_name is None or dim is None:
            raise GalleryError("give both model_name and dim (or neither)")
        dim = int(dim)
        if stored_model is not None and (stored_model != model_name or stored_dim_i != dim):
            n = self._db.query_one("SELECT COUNT(*) FROM faces")[0]
            if n:
                raise ConflictError(
                    f"this gallery holds {n} faces embedded with model {stored_model!r} "
                    f"({stored_dim}-d); refusing model {model_name!r} ({dim}-d): embeddings of "
                    "different models are not comparable. Use another gallery (--db) or delete "
                    "its subjects and enrol again"
                )
        if stored_model != model_name or stored_dim_i != dim:
            with self._db.transaction():
                for key, value in (("model", model_name), ("dim", str(dim))):
                    self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
                    self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        return model_name, dim

    def _start_index(self) -> None:
        assert self._dim is not None
        self._index = create_index(self.index_kind, self._dim, **self._index_options)
        self._generation = self._read_generation()
        if self._index.persistent:
            self._reconcile()
        else:
            self._rebuild()

    # -- properties -----------------------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        """The embedding model this gallery's faces come from (None while unset)."""
        return self._model

    @property
    def dim(self) -> int | None:
        """The embedding dimension (None while unset)."""
        return self._dim

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.dialect

    @property
    def index(self) -> VectorIndex | None:
        """The vector index (None until the model is known)."""
        return self._index

    def close(self) -> None:
        """Release the database connection and the index."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._index is not None:
                self._index.close()
            self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- index upkeep ---------------------------------------------------------------------------
    def _read_generation(self) -> int:
        row = self._db.query_one("SELECT generation FROM state WHERE id = 1")
        return int(row[0]) if row else 0

    def _bump_generation(self) -> None:
        """Inside a transaction: mark the store changed (other processes resync their index)."""
        row = self._db.query_one(
            "UPDATE state SET generation = generation + 1 WHERE id = 1 RETURNING generation")
        new = int(row[0])
        # our index stays current only if nobody else changed the store in between
        self._pending_generation = new if new == self._generation + 1 else -1

    def _commit_generation(self) -> None:
        pending = getattr(self, "_pending_generation", -1)
        self._generation = pending if pending >= 0 else -1

    def _load_vectors(self, ids: Sequence[int] | None = None):
        """Yield ``(ids, matrix)`` batches from SQL (all faces, or the given ids)."""
        if ids is None:
            batches = self._db.iterate("SELECT id, embedding FROM faces ORDER BY id")
        else:
            ids = list(ids)

            def gen():
                for start in range(0, len(ids), 1000):
                    part = ids[start:start + 1000]
                    marks = ",".join("?" * len(part))
                    yield self._db.query(
                        f"SELECT id, embedding FROM faces WHERE id IN ({marks})", part)
            batches = gen()
        for rows in batches:
            if not rows:
                continue
            fids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            mat = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4")
            yield fids, mat.reshape(len(rows), -1).astype(np.float32, copy=False)

    def _rebuild(self) -> None:
        """Fill the in-process index from SQL."""
        assert self._index is not None
        self._index.clear()
        parts = list(self._load_vectors())
        if not parts:
            return
        ids = np.concatenate([p[0] for p in parts])
        mat = np.vstack([p[1] for p in parts])
        build = getattr(self._index, "build", None)
        if build is not None:
            build(ids, mat)
        else:
            self._index.add(ids, mat)

    def _reconcile(self) -> None:
        """Make the index hold exactly the faces in SQL (add missing, remove extra)."""
        assert self._index is not None
        sql_ids = np.asarray([r[0] for r in self._db.query("SELECT id FROM faces")],
                             dtype=np.int64)
        idx_ids = self._index.ids()
        extra = np.setdiff1d(idx_ids, sql_ids)
        missing = np.setdiff1d(sql_ids, idx_ids)
        if len(extra):
            log.info("gallery index: removing %d vectors not in SQL", len(extra))
            self._index.remove(extra)
        if len(missing):
            log.info("gallery index: adding %d vectors missing from the index", len(missing))
            for fids, mat in self._load_vectors(missing.tolist()):
                self._index.add(fids, mat)

    def _refresh(self) -> None:
        """Resync the index when another process (or a failed index call) changed the store."""
        gen = self._read_generation()
        if gen != self._generation:
            self._reconcile()
            self._generation = gen

    def refresh(self) -> None:
        """Bring the index in step with SQL now (normally automatic before each search)."""
        with self._lock:
            if self._index is not None:
                self._refresh()

    def _require_model(self) -> tuple[str, int]:
        if self._model is None or self._dim is None:
            raise GalleryError(
                "this gallery has no embedding model yet: open it with model_name and dim")
        return self._model, self._dim

    def _normalise(self, embeddings: np.ndarray) -> np.ndarray:
        _, dim = self._require_model()
        e = np.asarray(embeddings, dtype=np.float32)
        if e.ndim == 1:
            e = e[None, :]
        if e.ndim != 2 or e.shape[1] != dim:
            raise GalleryError(
                f"embeddings must have shape (N, {dim}) for model {self._model!r}, "
                f"got {tuple(e.shape)}")
        if not np.all(np.isfinite(e)):
            raise GalleryError("embeddings contain NaN or infinite values")
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        if np.any(norms < 1e-12):
            raise GalleryError("an embedding is all zeros")
        return np.ascontiguousarray(e / norms, dtype=np.float32)

    # -- subjects -------------------------------------------------------------------------------
    _SUBJECT_COLS = ("s.id, s.name, s.metadata, s.created_at, s.updated_at, "
                     "(SELECT COUNT(*) FROM faces f WHERE f.subject_id = s.id)")

    @staticmethod
    def _subject(row: Sequence[Any]) -> Subject:
        return Subject(id=row[0], name=row[1], metadata=json.loads(row[2] or "{}"),
                       created_at=utc_from_ts(row[3]), updated_at=utc_from_ts(row[4]),
                       n_faces=int(row[5]))

    def create_subject(
        self,
        name: str,
        metadata: dict[str, Any] | None = None,
        *,
        embeddings: np.ndarray | None = None,
        source_hashes: Sequence[str | None] | None = None,
        crops: Sequence[bytes | None] | None = None,
        subject_id: str | None = None,
    ) -> Subject:
        """Create a subject, optionally with its first faces, in ONE transaction.

        Display names may repeat (each subject gets its own id). A crash leaves either the whole
        subject with all its faces, or nothing.
        """
        name = clean_name(name or "")
        meta = metadata_json(metadata)
        sid = subject_id or _new_subject_id()
        vecs = None if embeddings is None else self._normalise(embeddings)
        with self._lock:
            with self._db.transaction():
                if self._db.query_one("SELECT 1 FROM subjects WHERE id = ?", (sid,)):
                    raise ConflictError(f"subject id {sid!r} already exists")
                now = _now()
                self._db.execute(
                    "INSERT INTO subjects (id, name, metadata, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?)", (sid, name, meta, now, now))
                face_ids = (self._insert_faces(sid, vecs, source_hashes, crops)
                            if vecs is not None and len(vecs) else [])
                if face_ids:
                    self._bump_generation()
            if face_ids:
                self._commit_generation()
                self._index_add(face_ids, vecs)
            return self.get_subject(sid)

    def get_subject(self, subject_id: str) -> Subject:
        """The subject with this id; :class:`GalleryError` when there is none."""
        row = self._db.query_one(
            f"SELECT {self._SUBJECT_COLS} FROM subjects s WHERE s.id = ?", (subject_id,))
        if row is None:
            raise NotFoundError(f"unknown subject {subject_id!r}")
        return self._subject(row)

    def has_subject(self, subject_id: str) -> bool:
        """Whether a subject with this id exists."""
        return self._db.query_one("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)) is not None

    def find_subjects(self, name: str) -> list[Subject]:
        """Subjects whose display name equals ``name`` (there may be several)."""
        rows = self._db.query(
            f"SELECT {self._SUBJECT_COLS} FROM subjects s WHERE s.name = ? ORDER BY s.created_at",
            (name,))
        return [self._subject(r) for r in rows]

    def list_subjects(
        self, *, limit: int | None = None, offset: int = 0, search: str | None = None
    ) -> list[Subject]:
        """Subjects ordered by name then creation; ``search`` filters names (case-insensitive
        substring, taken literally)."""
        sql = f"SELECT {self._SUBJECT_COLS} FROM subjects s"
        params: list[Any] = []
        if search:
            sql += " WHERE LOWER(s.name) LIKE ? ESCAPE '\\'"
            params.append(_like_pattern(search))
        sql += " ORDER BY s.name, s.created_at, s.id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        elif offset:
            sql += " LIMIT -1 OFFSET ?" if self._db.dialect == "sqlite" else " OFFSET ?"
            params.append(int(offset))
        return [self._subject(r) for r in self._db.query(sql, params)]

    def count_subjects(self, search: str | None = None) -> int:
        """Number of subjects (whose names contain ``search``, as :meth:`list_subjects`)."""
        if search:
            return int(self._db.query_one(
                "SELECT COUNT(*) FROM subjects WHERE LOWER(name) LIKE ? ESCAPE '\\'",
                (_like_pattern(search),))[0])
        return int(self._db.query_one("SELECT COUNT(*) FROM subjects")[0])

    def count_faces(self) -> int:
        """Number of stored faces."""
        return int(self._db.query_one("SELECT COUNT(*) FROM faces")[0])

    def update_subject(
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
        with self._lock, self._db.transaction():
            self.get_subject(subject_id)
            if sets:
                self._db.execute(
                    f"UPDATE subjects SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
                    [*params, _now(), subject_id])
        return self.get_subject(subject_id)

    def delete_subject(self, subject_id: str, *, erase_events: bool = True) -> int:
        """Delete a subject, all its faces (SQL and index, immediately) and, by default, its
        recognition events. Returns the number of faces removed."""
        with self._lock:
            with self._db.transaction():
                self.get_subject(subject_id)
                face_ids = [r[0] for r in self._db.query(
                    "SELECT id FROM faces WHERE subject_id = ?", (subject_id,))]
                self._db.execute("DELETE FROM faces WHERE subject_id = ?", (subject_id,))
                self._db.execute("DELETE FROM subjects WHERE id = ?", (subject_id,))
                if erase_events:
                    self._db.execute("DELETE FROM events WHERE subject_id = ?", (subject_id,))
                else:
                    self._db.execute(
                        "UPDATE events SET subject_id = NULL, subject_name = NULL "
                        "WHERE subject_id = ?", (subject_id,))
                if face_ids:
                    self._bump_generation()
            if face_ids:
                self._commit_generation()
                self._index_remove(face_ids)
            self._vacuum_hint()
            return len(face_ids)

    # -- faces ----------------------------------------------------------------------------------
    def _insert_faces(
        self,
        subject_id: str,
        vecs: np.ndarray,
        source_hashes: Sequence[str | None] | None,
        crops: Sequence[bytes | None] | None,
    ) -> list[int]:
        model, dim = self._require_model()
        n = len(vecs)
        hashes = list(source_hashes) if source_hashes is not None else [None] * n
        crop_list = list(crops) if crops is not None else [None] * n
        if len(hashes) != n or len(crop_list) != n:
            raise GalleryError("source_hashes and crops must match the embeddings one to one")
        now = _now()
        ids = []
        for vec, h, crop in zip(vecs, hashes, crop_list, strict=True):
            row = self._db.query_one(
                "INSERT INTO faces (subject_id, model, dim, embedding, created_at, source_hash, "
                "crop) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (subject_id, model, dim, vec.astype("<f4").tobytes(), now, h, crop))
            ids.append(int(row[0]))
        self._db.execute("UPDATE subjects SET updated_at = ? WHERE id = ?", (now, subject_id))
        return ids

    def _index_add(self, ids: list[int], vecs: np.ndarray) -> None:
        assert self._index is not None
        try:
            self._index.add(np.asarray(ids, dtype=np.int64), vecs)
        except Exception as exc:
            self._generation = -1  # the next search reconciles
            raise StorageError(f"faces stored, but the vector index failed: {exc}") from exc

    def _index_remove(self, ids: list[int]) -> None:
        if self._index is None:
            return
        try:
            self._index.remove(np.asarray(ids, dtype=np.int64))
        except Exception as exc:
            self._generation = -1
            raise StorageError(
                f"faces deleted from SQL, but the vector index failed ({exc}); they are never "
                "returned and the index is reconciled at the next search") from exc

    def add_faces(
        self,
        subject_id: str,
        embeddings: np.ndarray,
        *,
        source_hashes: Sequence[str | None] | None = None,
        crops: Sequence[bytes | None] | None = None,
    ) -> list[int]:
        """Add embeddings (N, dim) to an existing subject in ONE transaction; return face ids."""
        vecs = self._normalise(embeddings)
        if len(vecs) == 0:
            return []
        with self._lock:
            with self._db.transaction():
                self.get_subject(subject_id)
                ids = self._insert_faces(subject_id, vecs, source_hashes, crops)
                self._bump_generation()
            self._commit_generation()
            self._index_add(ids, vecs)
            return ids

    _FACE_COLS = ("id, subject_id, model, dim, created_at, source_hash, "
                  "CASE WHEN crop IS NULL THEN 0 ELSE 1 END")

    @staticmethod
    def _face(row: Sequence[Any]) -> FaceRecord:
        return FaceRecord(id=int(row[0]), subject_id=row[1], model=row[2], dim=int(row[3]),
                          created_at=utc_from_ts(row[4]), source_hash=row[5],
                          has_crop=bool(row[6]))

    def faces(self, subject_id: str) -> list[FaceRecord]:
        """The faces of a subject (:class:`GalleryError` for an unknown subject)."""
        self.get_subject(subject_id)
        rows = self._db.query(
            f"SELECT {self._FACE_COLS} FROM faces WHERE subject_id = ? ORDER BY id", (subject_id,))
        return [self._face(r) for r in rows]

    def get_face(self, face_id: int) -> FaceRecord:
        """One face record (:class:`GalleryError` when unknown)."""
        row = self._db.query_one(f"SELECT {self._FACE_COLS} FROM faces WHERE id = ?",
                                 (int(face_id),))
        if row is None:
            raise NotFoundError(f"unknown face {face_id}")
        return self._face(row)

    def face_crop(self, face_id: int) -> bytes | None:
        """The stored aligned crop (PNG bytes) of a face, when crops are kept."""
        row = self._db.query_one("SELECT crop FROM faces WHERE id = ?", (int(face_id),))
        if row is None:
            raise NotFoundError(f"unknown face {face_id}")
        return bytes(row[0]) if row[0] is not None else None

    def subject_embeddings(self, subject_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(face ids (N,), embeddings (N, dim))`` of one subject."""
        self.get_subject(subject_id)
        rows = self._db.query(
            "SELECT id, embedding FROM faces WHERE subject_id = ? ORDER BY id", (subject_id,))
        dim = self._dim or 0
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        ids = np.asarray([r[0] for r in rows], dtype=np.int64)
        mat = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4").reshape(len(rows), -1)
        return ids, mat.astype(np.float32)

    def delete_face(self, face_id: int) -> FaceRecord:
        """Delete one face from SQL and from the index, immediately; return its record."""
        with self._lock:
            with self._db.transaction():
                rec = self.get_face(face_id)
                self._db.execute("DELETE FROM faces WHERE id = ?", (int(face_id),))
                self._db.execute("UPDATE subjects SET updated_at = ? WHERE id = ?",
                                 (_now(), rec.subject_id))
                self._bump_generation()
            self._commit_generation()
            self._index_remove([int(face_id)])
            self._vacuum_hint()
            return rec

    def _vacuum_hint(self) -> None:
        """Erased embeddings must not linger in the write-ahead log: fold it into the database
        file (whose freed pages ``secure_delete`` has zeroed)."""
        if self._db.dialect == "sqlite":
            self._db.query("PRAGMA wal_checkpoint(PASSIVE)")

    # -- search and identification -------------------------------------------------------------
    def search(self, embeddings: np.ndarray, k: int = DEFAULT_K) -> list[list[Hit]]:
        """The ``k`` nearest stored faces of each query (cosine, best first)."""
        q = self._normalise(embeddings)
        if k <= 0:
            raise GalleryError("k must be positive")
        with self._lock:
            if self._index is None:
                return [[] for _ in range(len(q))]
            if self._generation < 0 or not self._index.persistent:
                self._refresh()
            scores, ids = self._index.search(q, k)
            wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
            owners = self._face_owners(wanted)
        out = []
        for srow, irow in zip(scores, ids, strict=True):
            hits = [Hit(face_id=int(i), subject_id=owners[int(i)][0], score=float(s))
                    for s, i in zip(srow, irow, strict=True) if i >= 0 and int(i) in owners]
            out.append(hits)
        return out

    def _face_owners(self, face_ids: list[int]) -> dict[int, tuple[str, str]]:
        """face id -> (subject id, name), from SQL: deleted faces are never returned."""
        owners: dict[int, tuple[str, str]] = {}
        for start in range(0, len(face_ids), 1000):
            part = face_ids[start:start + 1000]
            marks = ",".join("?" * len(part))
            for fid, sid, name in self._db.query(
                    f"SELECT f.id, f.subject_id, s.name FROM faces f JOIN subjects s "
                    f"ON s.id = f.subject_id WHERE f.id IN ({marks})", part):
                owners[int(fid)] = (sid, name)
        return owners

    def threshold(self, threshold: float | None = None, far: str | None = None) -> float:
        """The threshold identification uses: explicit, else the gallery's, else the card's."""
        if threshold is None:
            threshold = self.default_threshold
        return resolve_threshold(self.card, threshold, far or self.far)

    def identify(
        self,
        embeddings: np.ndarray,
        threshold: float | None = None,
        k: int = DEFAULT_K,
        *,
        far: str | None = None,
    ) -> list[Identification]:
        """Identify each query: top-``k`` cosine search, k-NN vote per subject
        (:func:`marginface.gallery.knn_vote`), then the threshold; below it, unknown."""
        thr = self.threshold(threshold, far)
        q = self._normalise(embeddings)
        with self._lock:
            hits = self.search(q, k)
            names = self._face_owners(sorted({h.face_id for row in hits for h in row}))
        results = []
        for row in hits:
            if not row:
                results.append(Identification(match=None, score=-1.0, threshold=thr))
                continue
            winner, ranked = knn_vote([h.subject_id for h in row], [h.score for h in row], thr)
            cands = [
                Candidate(subject_id=r.subject, name=names.get(row[r.best_index].face_id,
                                                               ("", ""))[1],
                          score=r.best, votes=r.votes, weight=r.weight,
                          face_id=row[r.best_index].face_id)
                for r in ranked
            ]
            match = cands[0] if winner is not None else None
            best = max(c.score for c in cands)
            results.append(Identification(match=match, score=match.score if match else best,
                                          threshold=thr, candidates=cands))
        return results

    # -- events and attendance ------------------------------------------------------------------
    def log_event(
        self,
        source: str,
        *,
        subject_id: str | None,
        score: float | None,
        decision: str,
        time: datetime | float | None = None,
        details: dict[str, Any] | None = None,
    ) -> Event:
        """Record one recognition (camera/door ``source``, result, score)."""
        ts = _to_ts(time) if time is not None else _now()
        source = clean_name(source, what="source", max_length=100) if source else ""
        details_text = metadata_json(details)
        name = None
        if subject_id is not None:
            name = self.get_subject(subject_id).name
        with self._lock, self._db.transaction():
            row = self._db.query_one(
                "INSERT INTO events (ts, source, subject_id, subject_name, score, decision, "
                "details) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (ts, source, subject_id, name, None if score is None else float(score),
                 decision, details_text))
        return Event(id=int(row[0]), time=utc_from_ts(ts), source=source,
                     subject_id=subject_id, subject_name=name,
                     score=None if score is None else float(score), decision=decision,
                     details=dict(details or {}))

    def events(
        self,
        *,
        subject: str | None = None,
        source: str | None = None,
        start: datetime | float | None = None,
        end: datetime | float | None = None,
        decision: str | None = None,
        limit: int | None = 1000,
        offset: int = 0,
    ) -> list[Event]:
        """Logged events, newest first, filtered by subject id, source, decision and
        ``[start, end)`` times (aware datetimes or epoch seconds; naive ones are local time)."""
        where, params = [], []
        if subject is not None:
            where.append("subject_id = ?")
            params.append(subject)
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if decision is not None:
            where.append("decision = ?")
            params.append(decision)
        if start is not None:
            where.append("ts >= ?")
            params.append(_to_ts(start))
        if end is not None:
            where.append("ts < ?")
            params.append(_to_ts(end))
        sql = ("SELECT id, ts, source, subject_id, subject_name, score, decision, details "
               "FROM events")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        return [Event(id=int(r[0]), time=utc_from_ts(r[1]), source=r[2], subject_id=r[3],
                      subject_name=r[4], score=r[5], decision=r[6],
                      details=json.loads(r[7] or "{}"))
                for r in self._db.query(sql, params)]

    def attendance(
        self, day: date_cls | str | None = None, *, tz: tzinfo | None = None
    ) -> list[AttendanceRow]:
        """First and last sighting per identified subject on ``day`` (default today) in time zone
        ``tz`` (default: the machine's local zone)."""
        zone = tz or datetime.now().astimezone().tzinfo
        if day is None:
            day = datetime.now(zone).date()
        elif isinstance(day, str):
            try:
                day = date_cls.fromisoformat(day)
            except ValueError:
                raise GalleryError(f"date {day!r} is not YYYY-MM-DD") from None
        start = datetime(day.year, day.month, day.day, tzinfo=zone)
        end = start + timedelta(days=1)
        rows = self._db.query(
            "SELECT subject_id, subject_name, ts, source FROM events WHERE subject_id IS NOT NULL "
            "AND ts >= ? AND ts < ? ORDER BY ts", (start.timestamp(), end.timestamp()))
        table: dict[str, dict[str, Any]] = {}
        for sid, name, ts, src in rows:
            entry = table.setdefault(sid, {"name": name, "first": ts, "last": ts, "count": 0,
                                           "sources": []})
            entry["last"] = ts
            entry["count"] += 1
            if src not in entry["sources"]:
                entry["sources"].append(src)
        out = [AttendanceRow(date=day.isoformat(), subject_id=sid, name=e["name"] or "",
                             first_seen=datetime.fromtimestamp(e["first"], zone),
                             last_seen=datetime.fromtimestamp(e["last"], zone),
                             count=e["count"], sources=e["sources"])
               for sid, e in table.items()]
        return sorted(out, key=lambda r: (r.first_seen, r.name))

    def attendance_csv(self, day: date_cls | str | None = None, *,
                       tz: tzinfo | None = None) -> str:
        """The attendance of ``day`` as CSV text (date, subject_id, name, first_seen,
        last_seen, count, sources)."""
        return csv_text(
            ["date", "subject_id", "name", "first_seen", "last_seen", "count", "sources"],
            ([r.date, r.subject_id, r.name, r.first_seen.isoformat(), r.last_seen.isoformat(),
              r.count, ";".join(r.sources)] for r in self.attendance(day, tz=tz)))

    def events_csv(self, **filters: Any) -> str:
        """Events (same filters as :meth:`events`) as CSV text."""
        return csv_text(
            ["id", "time", "source", "subject_id", "subject_name", "score", "decision"],
            ([e.id, e.time.isoformat(), e.source, e.subject_id or "", e.subject_name or "",
              "" if e.score is None else round(e.score, 4), e.decision]
             for e in self.events(**filters)))

    # -- API keys -------------------------------------------------------------------------------
    def create_api_key(self, name: str, role: str) -> tuple[ApiKey, str]:
        """Create a key; return its record and the secret key text, which is never stored
        (only its SHA-256) and cannot be shown again."""
        if role not in ROLES:
            raise GalleryError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
        name = clean_name(name, what="key name", max_length=100)
        key_id = secrets.token_hex(6)
        secret = f"{_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        now = _now()
        with self._lock, self._db.transaction():
            self._db.execute(
                "INSERT INTO api_keys (id, name, role, key_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?)", (key_id, name, role, _hash_key(secret), now))
        return ApiKey(id=key_id, name=name, role=role, created_at=utc_from_ts(now)), secret

    def authenticate(self, secret: str | None, *, touch: bool = True) -> ApiKey | None:
        """The key record for a presented secret, or None when it is wrong or revoked."""
        if not secret or not secret.startswith(f"{_KEY_PREFIX}_"):
            return None
        parts = secret.split("_", 2)
        if len(parts) != 3:
            return None
        row = self._db.query_one(
            "SELECT id, name, role, key_hash, created_at, last_used_at FROM api_keys "
            "WHERE id = ?", (parts[1],))
        if row is None or not hmac.compare_digest(row[3], _hash_key(secret)):
            return None
        now = _now()
        if touch:
            with self._lock, self._db.transaction():
                self._db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?",
                                 (now, row[0]))
        return ApiKey(id=row[0], name=row[1], role=row[2], created_at=utc_from_ts(row[4]),
                      last_used_at=utc_from_ts(now) if touch else
                      (utc_from_ts(row[5]) if row[5] is not None else None))

    def list_api_keys(self) -> list[ApiKey]:
        """Every key's public record."""
        rows = self._db.query(
            "SELECT id, name, role, created_at, last_used_at FROM api_keys ORDER BY created_at")
        return [ApiKey(id=r[0], name=r[1], role=r[2], created_at=utc_from_ts(r[3]),
                       last_used_at=utc_from_ts(r[4]) if r[4] is not None else None)
                for r in rows]

    def delete_api_key(self, key_id: str, *, allow_last_admin: bool = False) -> ApiKey:
        """Revoke a key and return its record (:class:`NotFoundError` when unknown).

        The last admin key is kept (:class:`ConflictError`) unless ``allow_last_admin``: without
        one nobody could manage the gallery through the service. The check and the delete are one
        transaction, serialised across processes (SQLite's write lock, a PostgreSQL advisory
        lock), so two concurrent revocations cannot both pass it.
        """
        with self._lock, self._db.transaction():
            self._db.lock_writes("api_keys")
            row = self._db.query_one(
                "SELECT id, name, role, created_at, last_used_at FROM api_keys WHERE id = ?",
                (key_id,))
            if row is None:
                raise NotFoundError(f"no API key with id {key_id!r}")
            if row[2] == "admin" and not allow_last_admin:
                admins = int(self._db.query_one(
                    "SELECT COUNT(*) FROM api_keys WHERE role = 'admin'")[0])
                if admins <= 1:
                    raise ConflictError("the last admin key cannot be revoked")
            self._db.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
        return ApiKey(id=row[0], name=row[1], role=row[2], created_at=utc_from_ts(row[3]),
                      last_used_at=utc_from_ts(row[4]) if row[4] is not None else None)

    def count_api_keys(self, role: str | None = None) -> int:
        """Number of keys (of one role)."""
        if role is None:
            return int(self._db.query_one("SELECT COUNT(*) FROM api_keys")[0])
        return int(self._db.query_one("SELECT COUNT(*) FROM api_keys WHERE role = ?",
                                      (role,))[0])

    # -- reporting ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts and settings for status pages and ``/healthz``."""
        with self._lock:
            return {
                "backend": self.backend,
                "model": self._model,
                "dim": self._dim,
                "subjects": self.count_subjects(),
                "faces": self.count_faces(),
                "events": int(self._db.query_one("SELECT COUNT(*) FROM events")[0]),
                "index": self._index.describe() if self._index is not None else None,
            }

    def export(self, *, include_embeddings: bool = False) -> dict[str, Any]:
        """Subjects and faces as a JSON-ready dict (embeddings only when asked: they are
        biometric data)."""
        subjects = []
        for s in self.list_subjects():
            entry = s.to_dict()
            faces = [f.to_dict() for f in self.faces(s.id)]
            if include_embeddings:
                ids, mat = self.subject_embeddings(s.id)
                emb = {int(i): v for i, v in zip(ids, mat, strict=True)}
                for f in faces:
                    f["embedding"] = [round(float(x), 7) for x in emb[f["id"]]]
            entry["faces"] = faces
            subjects.append(entry)
        return {"format": "marginface-gallery", "version": 1, "model": self._model,
                "dim": self._dim, "exported_at": datetime.now(UTC).isoformat(),
                "subjects": subjects}


def _to_ts(value: datetime | float | int) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # naive: local time
        return value.timestamp()
    return float(value)


def warn_uncalibrated(card: ModelCard | None) -> None:
    """Emit a loud warning when a card lacks calibration (used by callers that carry on with
    an explicit threshold)."""
    if card is not None and (card.calibration is None or not card.calibration.thresholds):
        warnings.warn(f"model {card.name!r} has no calibrated threshold; using the explicit "
                      "threshold given", stacklevel=2)
