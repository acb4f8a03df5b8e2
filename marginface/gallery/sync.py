"""Keeping the vector index in step with the faces in SQL, within a process and across processes.

The SQL store is the truth; the index is a copy of its face vectors. ``state.generation`` counts
the committed changes of faces: every transaction that adds or removes faces bumps it. A process
remembers the generation its index reflects (:attr:`IndexSync.generation`, -1 when unknown) and,
before searching, compares it with the stored one: when another process changed the faces (or
an index call failed) it reconciles the index with SQL first.

Within a process a :class:`~marginface.gallery.locks.ReadWriteLock` lets searches run together
while a change of faces (its transaction, then the same change in the index) or a
reconciliation runs alone, so no search sees a generation whose change the index lacks.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from marginface.errors import MarginfaceError, StorageError
from marginface.gallery.db import Database
from marginface.gallery.index import VectorIndex
from marginface.gallery.locks import ReadWriteLock

__all__ = ["FaceChanges", "IndexSync"]

log = logging.getLogger(__name__)


@dataclass
class FaceChanges:
    """The faces one transaction adds and removes (what the index must do once it commits)."""

    added_ids: list[int] = field(default_factory=list)
    added_vectors: list[np.ndarray] = field(default_factory=list)
    removed_ids: list[int] = field(default_factory=list)

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Record stored faces (ids, their normalised vectors)."""
        self.added_ids += [int(i) for i in ids]
        self.added_vectors.append(vectors)

    def remove(self, ids: Iterable[int]) -> None:
        """Record deleted faces."""
        self.removed_ids += [int(i) for i in ids]

    def __bool__(self) -> bool:
        return bool(self.added_ids or self.removed_ids)


@contextlib.contextmanager
def _index_errors() -> Iterator[None]:
    """A vector index that fails to answer (a Milvus server restarting, unreachable) is the
    package's :class:`StorageError` (the service's 503), not an unexpected error."""
    try:
        yield
    except MarginfaceError:
        raise
    except Exception as exc:
        raise StorageError(f"the vector index did not answer: {type(exc).__name__}: {exc}") from exc


class IndexSync:
    """The vector index of one gallery handle (None while the gallery has no model) and the
    protocol that keeps it equal to the faces in SQL."""

    def __init__(self, db: Database, index: VectorIndex | None) -> None:
        self._db = db
        self.index = index
        self._lock = ReadWriteLock()
        #: the store generation the index reflects; -1: unknown, reconcile before searching
        self.generation = -1
        if index is not None:
            self.generation = self.stored_generation()
            if index.persistent:
                self._reconcile()
            else:
                self._rebuild()

    # -- changes --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def change(self) -> Iterator[FaceChanges]:
        """A write transaction of the store. The block records on the yielded
        :class:`FaceChanges` the faces it adds and removes; then the generation is bumped in
        the same transaction and, once it commits, the index makes the same change. Searches
        wait while this runs. An index that fails after the commit is logged and left for the
        next search to reconcile: the write has succeeded."""
        with self._lock.write():
            changes = FaceChanges()
            with self._db.transaction():
                yield changes
                committed = self._bump_generation() if changes else None
            if committed is not None:
                self._apply(changes, committed)

    def stored_generation(self) -> int:
        """The generation of the faces in SQL (bumped by every committed change of faces)."""
        row = self._db.query_one("SELECT generation FROM state WHERE id = 1")
        return int(row[0]) if row else 0

    def _bump_generation(self) -> int:
        return int(
            self._db.scalar(
                "UPDATE state SET generation = generation + 1 WHERE id = 1 RETURNING generation"
            )
        )

    def _apply(self, changes: FaceChanges, committed: int) -> None:
        """After the commit of generation ``committed``: the same change in the index."""
        # the index stays current only if no other process changed the store in between
        current = self.generation == committed - 1
        self.generation = -1  # until the index has it
        if self.index is None:
            return
        # SQL is the truth and the write has committed: an index that fails now is left stale
        # (generation -1) and reconciled before the next search, so the write still succeeds; an
        # error here would make callers retry what is already stored.
        try:
            if changes.added_ids:
                self.index.add(
                    np.asarray(changes.added_ids, dtype=np.int64), np.vstack(changes.added_vectors)
                )
            if changes.removed_ids:
                self.index.remove(np.asarray(changes.removed_ids, dtype=np.int64))
        except Exception:
            log.warning(
                "the vector index failed after a committed change; it is reconciled "
                "from SQL before the next search",
                exc_info=True,
            )
            return
        if current:
            self.generation = committed

    # -- searching ------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The index's top-``k`` ``(scores, ids)``, searched once it reflects the store.

        Searches run together (shared side of the lock); only when the index is stale does one
        reconcile it alone first. The caller checks the ids against SQL: a face deleted by
        another process after the check is not returned.
        """
        assert self.index is not None
        with _index_errors(), self._lock.read():
            if self._is_current():
                return self.index.search(queries, k)
        with _index_errors(), self._lock.write():
            self._refresh()
            return self.index.search(queries, k)

    def _is_current(self) -> bool:
        """Whether the index reflects the store. A persistent index (Milvus) is shared by
        every process and written by each directly, so only a failed call makes it stale."""
        assert self.index is not None
        if self.generation < 0:
            return False
        return self.index.persistent or self.stored_generation() == self.generation

    def refresh(self) -> None:
        """Bring the index in step with SQL now, if it is not."""
        if self.index is not None:
            with self._lock.write():
                self._refresh()

    def _refresh(self) -> None:
        generation = self.stored_generation()  # read first: the faces read next are as new
        if generation != self.generation:
            self._reconcile()
            self.generation = generation

    # -- loading --------------------------------------------------------------------------------
    def _vectors(self, ids: Sequence[int] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, matrix)`` batches from SQL: all faces, or the given ids."""
        if ids is None:
            batches = self._db.iterate("SELECT id, embedding FROM faces ORDER BY id")
        else:
            batches = self._db.query_in(
                "SELECT id, embedding FROM faces WHERE id IN ({marks})", ids
            )
        for rows in batches:
            if not rows:
                continue
            fids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            mat = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4")
            yield fids, mat.reshape(len(rows), -1).astype(np.float32, copy=False)

    def _rebuild(self) -> None:
        """Fill the in-process index from SQL."""
        assert self.index is not None
        self.index.clear()
        parts = list(self._vectors())
        if not parts:
            return
        ids = np.concatenate([p[0] for p in parts])
        mat = np.vstack([p[1] for p in parts])
        build = getattr(self.index, "build", None)  # bulk loading, where the index has it
        if build is not None:
            build(ids, mat)
        else:
            self.index.add(ids, mat)

    def _reconcile(self) -> None:
        """Make the index hold exactly the faces in SQL (add missing, remove extra)."""
        assert self.index is not None
        sql_ids = np.asarray([r[0] for r in self._db.query("SELECT id FROM faces")], dtype=np.int64)
        idx_ids = self.index.ids()
        extra = np.setdiff1d(idx_ids, sql_ids)
        missing = np.setdiff1d(sql_ids, idx_ids)
        if len(extra):
            log.info("gallery index: removing %d vectors not in SQL", len(extra))
            self.index.remove(extra)
        if len(missing):
            log.info("gallery index: adding %d vectors missing from the index", len(missing))
            for fids, mat in self._vectors(missing.tolist()):
                self.index.add(fids, mat)

    def close(self) -> None:
        """Close the index once no search is using it."""
        if self.index is not None:
            with self._lock.write():
                self.index.close()
