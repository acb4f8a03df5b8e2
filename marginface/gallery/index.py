"""Vector indexes over L2-normalised float32 embeddings, searched by inner product (= cosine).

* :class:`ExactIndex` - brute force in numpy; exact; rebuilt from SQL at start.
* :class:`FaissBinaryIndex` - the ``"faiss"`` default, for large galleries: a FAISS Hamming scan
  of 512-bit SimHash codes shortlists candidates that are re-ranked exactly (2-4 ms a query at
  a million faces on 2 cores, recall@1 1.000 vs exact on clustered faces; built in seconds).
* :class:`FaissIndex` - FAISS flat (exact), IVF or HNSW (``index_options={"kind": ...}``).
* :class:`MilvusIndex` - a Milvus collection through pymilvus: Milvus Lite (a local file) or a
  cluster (``http://host:19530``). Persistent: reconciled with SQL at start, not rebuilt.

Every index maps int64 face ids to vectors and supports immediate removal by id, and is safe to
share between threads: searches of the in-process indexes run concurrently (a readers-writer
lock; numpy and FAISS searches only read the index), while a change runs alone. A Milvus client
is not documented as safe for concurrent calls, so :class:`MilvusIndex` makes one call at a time.
"""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import itertools
import logging
import math
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from marginface.errors import GalleryError
from marginface.extras import install_hint
from marginface.gallery.locks import ReadWriteLock

__all__ = [
    "INDEX_KINDS",
    "ExactIndex",
    "FaissBinaryIndex",
    "FaissIndex",
    "MilvusIndex",
    "VectorIndex",
    "create_index",
]

INDEX_KINDS: tuple[str, ...] = ("exact", "faiss", "milvus")


def _as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(
        np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64).ravel()
    )


def _as_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != dim:
        raise GalleryError(f"expected embeddings of shape (N, {dim}), got {tuple(v.shape)}")
    return v


def _import_faiss() -> Any:
    """The faiss module, or a :class:`GalleryError` naming the extra that installs it."""
    try:
        import faiss  # optional: faiss (marginface[faiss])
    except ImportError:  # pragma: no cover - depends on the installation
        raise GalleryError(f"the FAISS index needs faiss-cpu: {install_hint('faiss')}") from None
    return faiss


class VectorIndex(abc.ABC):
    """Nearest-neighbour search over (id, vector) pairs by inner product."""

    #: True when the index keeps its own data between runs (then it is reconciled, not rebuilt).
    persistent: bool = False
    #: True when search results are exact.
    exact: bool = True

    def __init__(self, dim: int) -> None:
        if dim <= 0:
            raise GalleryError(f"embedding dimension must be positive, got {dim}")
        self.dim = int(dim)

    @abc.abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors (rows L2-normalised) under the given unique ids."""

    @abc.abstractmethod
    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove the given ids at once; unknown ids are ignored. Returns how many were removed."""

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(scores (Q, k) float32, ids (Q, k) int64)``.

        Missing results (fewer than ``k`` vectors) have id -1 and score -inf.
        """

    @abc.abstractmethod
    def ids(self) -> np.ndarray:
        """Every id in the index (int64, any order)."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of vectors."""

    def clear(self) -> None:
        """Remove everything."""
        self.remove(self.ids())

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    def describe(self) -> dict[str, Any]:
        """Kind and settings, for status pages."""
        return {
            "kind": type(self).__name__,
            "dim": self.dim,
            "size": len(self),
            "exact": self.exact,
        }


def _empty_result(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64))


class ExactIndex(VectorIndex):
    """Brute-force inner product in numpy over a contiguous float32 matrix."""

    def __init__(self, dim: int, *, batch_size: int = 64) -> None:
        super().__init__(dim)
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._n = 0
        self._row: dict[int, int] = {}
        self._batch = batch_size
        self._lock = ReadWriteLock()  # searches share it; changes take it alone

    def __len__(self) -> int:
        return self._n

    def _reserve(self, n: int) -> None:
        if n <= self._matrix.shape[0]:
            return
        cap = max(n, int(self._matrix.shape[0] * 1.5) + 1024)
        self._grow(cap)

    def _grow(self, cap: int) -> None:
        """Reallocate the row storage for ``cap`` rows, keeping the first ``self._n``."""
        matrix = np.empty((cap, self.dim), dtype=np.float32)
        matrix[: self._n] = self._matrix[: self._n]
        ids = np.full(cap, -1, dtype=np.int64)
        ids[: self._n] = self._ids[: self._n]
        self._matrix, self._ids = matrix, ids

    def _store(self, start: int, vectors: np.ndarray) -> None:
        """Write rows ``start:start + len(vectors)``."""
        self._matrix[start : start + len(vectors)] = vectors

    def _move(self, src: int, dst: int) -> None:
        """Copy row ``src`` over row ``dst``."""
        self._matrix[dst] = self._matrix[src]

    def _erase(self, row: int) -> None:
        """Overwrite a row that no longer holds a face (the embedding leaves memory at once)."""
        self._matrix[row] = 0.0

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = _as_ids(ids)
        v = _as_vectors(vectors, self.dim)
        if len(ids) != len(v):
            raise GalleryError("ids and vectors differ in length")
        with self._lock.write():
            dup = [int(i) for i in ids.tolist() if i in self._row]
            if dup or len(np.unique(ids)) != len(ids):
                raise GalleryError(f"face ids already in the index: {dup[:5]}")
            self._reserve(self._n + len(ids))
            start = self._n
            self._store(start, v)
            self._ids[start : start + len(ids)] = ids
            self._row.update(zip(ids.tolist(), range(start, start + len(ids)), strict=True))
            self._n += len(ids)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        removed = 0
        with self._lock.write():
            for i in _as_ids(ids).tolist():
                row = self._row.pop(int(i), None)
                if row is None:
                    continue
                last = self._n - 1
                if row != last:  # move the last row into the hole
                    self._move(last, row)
                    moved = int(self._ids[last])
                    self._ids[row] = moved
                    self._row[moved] = row
                self._erase(last)  # overwrite the erased vector
                self._ids[last] = -1
                self._n -= 1
                removed += 1
        return removed

    def ids(self) -> np.ndarray:
        with self._lock.read():
            return self._ids[: self._n].copy()

    def clear(self) -> None:
        with self._lock.write():
            self._matrix[: self._n] = 0.0
            self._ids[: self._n] = -1
            self._row.clear()
            self._n = 0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_vectors(queries, self.dim)
        k = int(k)
        with self._lock.read():
            n = self._n
            scores_out, ids_out = _empty_result(len(q), k)
            if n == 0 or k <= 0:
                return scores_out, ids_out
            kk = min(k, n)
            matrix = self._matrix[:n]
            for start in range(0, len(q), self._batch):
                sims = q[start : start + self._batch] @ matrix.T
                if kk < n:
                    part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
                else:
                    part = np.broadcast_to(np.arange(n), (len(sims), n))
                top = np.take_along_axis(sims, part, axis=1)
                order = np.argsort(-top, axis=1, kind="stable")
                rows = np.take_along_axis(part, order, axis=1)
                scores_out[start : start + len(sims), :kk] = np.take_along_axis(top, order, axis=1)
                ids_out[start : start + len(sims), :kk] = self._ids[rows]
            return scores_out, ids_out


class FaissBinaryIndex(ExactIndex):
    """Binary-code shortlist scanned with FAISS, re-ranked exactly: the index for large galleries.

    Each embedding gets a ``bits``-bit SimHash code: the signs of its projections on ``bits``
    fixed random Gaussian directions (seeded by ``seed``, so codes are reproducible). Two unit
    vectors at angle ``theta`` disagree on each bit with probability ``theta / pi`` whatever the
    data distribution, so no training is needed and the index stays valid as the gallery grows.
    A query scans every code with FAISS' popcount kernels (64 bytes per face at 512 bits,
    split over ``threads`` threads for a single query), keeps the ``rerank`` nearest codes and
    re-scores them with the exact float32 inner product: returned scores are exact, and the
    result equals exact search whenever the true neighbours are among the shortlist.

    That holds with a wide margin for face search: at 512 bits a same-person face (cosine
    ~0.6) differs in ~150 bits, unrelated faces (cosine ~0) in 256 +- 11. Measured with
    ``bench/gallery_search.py`` on 1M clustered 512-d faces, 2 cores shared with other jobs
    (load average 3-8): 2.1-3.8 ms median per single query (exact numpy: 190-300 ms in the
    same runs), recall@1 1.000 and recall@5 1.000 against exact search, build 10-13 s. The scan
    reads ``bits / 8`` bytes a face, so it is bound by memory bandwidth. When same-person
    cosines are low the shortlist must be longer: at cosine 0.4 and 1M faces, recall@1 was
    0.980 with ``rerank=64`` and 1.000 with the default 256 (+0.5 ms); at cosine 0.3 (200k
    faces) 0.955 with 256. Raise ``rerank`` or ``bits`` for such models. Queries of people
    not enrolled may get a different (unrelated, low-scoring) top hit than exact search,
    under any recognition threshold either way.

    Memory: the float32 vectors (as :class:`ExactIndex`) plus ``bits / 8`` bytes per face.
    Removal is immediate and overwrites the vector and its code (no tombstones, no rebuild).
    """

    exact = False

    def __init__(
        self,
        dim: int,
        *,
        bits: int | None = None,
        rerank: int = 256,
        threads: int = 2,
        seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        super().__init__(dim, batch_size=batch_size)
        self._faiss = _import_faiss()
        bits = int(bits) if bits else max(256, -(-self.dim // 64) * 64)
        if bits <= 0 or bits % 64:
            raise GalleryError(f"bits must be a positive multiple of 64, got {bits}")
        if rerank <= 0:
            raise GalleryError(f"rerank must be positive, got {rerank}")
        self.bits, self.rerank, self.seed = bits, int(rerank), int(seed)
        self.threads = max(1, int(threads))
        rng = np.random.default_rng(self.seed)
        self._proj = rng.standard_normal((self.dim, bits), dtype=np.float32)
        self._codes = np.zeros((0, bits // 8), dtype=np.uint8)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- storage hooks (rows of the matrix and of the codes move together) ------------------------
    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """The binary codes (uint8, ``bits / 8`` bytes a row) of some vectors."""
        v = _as_vectors(vectors, self.dim)
        out = np.empty((len(v), self.bits // 8), dtype=np.uint8)
        for start in range(0, len(v), 65536):
            part = v[start : start + 65536] @ self._proj
            out[start : start + len(part)] = np.packbits(part > 0, axis=1)
        return out

    def _grow(self, cap: int) -> None:
        super()._grow(cap)
        codes = np.zeros((cap, self.bits // 8), dtype=np.uint8)
        codes[: self._n] = self._codes[: self._n]
        self._codes = codes

    def _store(self, start: int, vectors: np.ndarray) -> None:
        super()._store(start, vectors)
        self._codes[start : start + len(vectors)] = self.encode(vectors)

    def _move(self, src: int, dst: int) -> None:
        super()._move(src, dst)
        self._codes[dst] = self._codes[src]

    def _erase(self, row: int) -> None:
        super()._erase(row)
        self._codes[row] = 0

    def clear(self) -> None:
        with self._lock.write():
            self._codes[: self._n] = 0
            super().clear()

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the content with these vectors (bulk loading)."""
        with self._lock.write():
            self.clear()
            self.add(ids, vectors)

    # -- search -------------------------------------------------------------------------------
    def _shortlist(self, qcodes: np.ndarray, r: int) -> np.ndarray:
        """Rows of the ``r`` nearest codes of each query (several shards: more rows)."""
        n = self._n
        codes = self._codes
        shards = self.threads if len(qcodes) < self.threads and n >= 20000 * self.threads else 1
        if shards == 1:
            return self._faiss.knn_hamming(qcodes, codes[:n], r)[1]
        with self._pool_lock:  # concurrent searches: one pool
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="faiss-binary")
            pool = self._pool
        bounds = np.linspace(0, n, shards + 1).astype(int)
        parts = [
            pool.submit(self._faiss.knn_hamming, qcodes, codes[a:b], min(r, b - a))
            for a, b in itertools.pairwise(bounds)
        ]
        rows = [f.result()[1] + a for f, a in zip(parts, bounds[:-1], strict=True)]
        return np.concatenate(rows, axis=1)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_vectors(queries, self.dim)
        k = int(k)
        with self._lock.read():
            n = self._n
            scores_out, ids_out = _empty_result(len(q), k)
            if n == 0 or k <= 0 or len(q) == 0:
                return scores_out, ids_out
            r = min(n, max(self.rerank, k))
            qcodes = self.encode(q)
            for start in range(0, len(q), self._batch):
                stop = min(len(q), start + self._batch)
                rows = self._shortlist(qcodes[start:stop], r)
                sims = np.einsum("qrd,qd->qr", self._matrix[rows], q[start:stop])
                kk = min(k, sims.shape[1])
                order = np.argsort(-sims, axis=1, kind="stable")
                top = order[:, :kk]  # shards hold disjoint rows: no duplicates
                scores_out[start:stop, :kk] = np.take_along_axis(sims, top, axis=1)
                ids_out[start:stop, :kk] = self._ids[np.take_along_axis(rows, top, axis=1)]
            return scores_out, ids_out

    def close(self) -> None:
        with self._lock.write(), self._pool_lock:  # once no search uses the pool
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            faiss_kind="binary",
            bits=self.bits,
            rerank=self.rerank,
            threads=self.threads,
            exact=False,
        )
        return info


class FaissIndex(VectorIndex):
    """A FAISS index by inner product.

    ``kind``:
      * ``"flat"`` - exact (``IndexFlatIP``);
      * ``"ivf"`` - ``IndexIVFFlat``: vectors are clustered into ``nlist`` lists and a query scans
        the ``nprobe`` nearest lists (default ``nlist // 8``). It is trained on the vectors
        present once there are ``train_min`` of them (until then searches are exact) and
        retrained when the gallery has grown ``retrain_growth`` times since;
      * ``"hnsw"`` - ``IndexHNSWFlat`` graph (``M``, ``ef_search``, ``ef_construction``). A graph
        cannot drop nodes, so removal zeroes the vector at once (the embedding leaves memory)
        and tombstones the id, which searches exclude with an ``IDSelector``; once more than
        ``compact_fraction`` of the nodes are tombstones (or on :meth:`compact`) the graph is
        rebuilt from the live vectors - minutes at a million faces on 2 cores. Blank nodes
        slightly lower recall until then. HNSW did not reach recall@1 0.99 at 1M clustered
        512-d faces within an acceptable build time on 2 cores: large galleries should use
        :class:`FaissBinaryIndex` (the ``"faiss"`` default of :func:`create_index`);
      * ``"auto"`` (default) - ``"ivf"``.
    """

    exact = False

    def __init__(
        self,
        dim: int,
        *,
        kind: str = "auto",
        nlist: int | None = None,
        nprobe: int | None = None,
        train_min: int = 20000,
        retrain_growth: float = 8.0,
        M: int = 32,
        ef_search: int = 128,
        ef_construction: int = 80,
        compact_fraction: float = 0.1,
        threads: int | None = None,
    ) -> None:
        super().__init__(dim)
        self._faiss = _import_faiss()
        if threads:
            self._faiss.omp_set_num_threads(int(threads))
        kind = "ivf" if kind == "auto" else kind
        if kind not in ("flat", "ivf", "hnsw"):
            raise GalleryError(f"unknown FAISS index kind {kind!r}: use flat, ivf, hnsw or auto")
        self.kind = kind
        self.nlist = nlist
        self.nprobe = int(nprobe) if nprobe else None
        self.train_min = int(train_min)
        self.retrain_growth = float(retrain_growth)
        self.M, self.ef_search, self.ef_construction = int(M), int(ef_search), int(ef_construction)
        self.compact_fraction = float(compact_fraction)
        self._lock = ReadWriteLock()  # FAISS searches may run together
        self._trained_on = 0
        self._deleted: set[int] = set()  # HNSW tombstones
        self._selector: Any = None
        self._index = self._new_flat()
        self.exact = kind == "flat"

    # -- construction ---------------------------------------------------------------------------
    def _new_flat(self) -> Any:
        return self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(self.dim))

    def _new_hnsw(self) -> Any:
        faiss = self._faiss
        hnsw = faiss.IndexHNSWFlat(self.dim, self.M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.ef_construction
        hnsw.hnsw.efSearch = self.ef_search
        return faiss.IndexIDMap2(hnsw)

    def _new_ivf(self, train: np.ndarray) -> Any:
        faiss = self._faiss
        n = len(train)
        nlist = self.nlist or max(16, min(65536, 2 ** round(math.log2(max(1.0, 2 * math.sqrt(n))))))
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.max_points_per_centroid = 64
        ivf.cp.min_points_per_centroid = 1  # small galleries: no 'too few points' noise
        sample = train
        if n > nlist * 64:
            rng = np.random.default_rng(0)
            sample = train[rng.choice(n, nlist * 64, replace=False)]
        ivf.train(np.ascontiguousarray(sample))
        # default: scan 1/8 of the lists (recall@1 1.0 at 100k, 0.94 at 1M isotropic data)
        ivf.nprobe = min(self.nprobe or max(16, nlist // 8), nlist)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove / reconstruct by any id
        return ivf

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        ids = self.ids()
        if len(ids) == 0:
            return ids, np.zeros((0, self.dim), dtype=np.float32)
        vecs = (
            np.vstack([self._index.reconstruct(int(i)) for i in ids])
            if len(ids) < 1000
            else self._reconstruct_many(ids)
        )
        return ids, vecs.astype(np.float32)

    def _reconstruct_many(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for j, i in enumerate(ids.tolist()):
            out[j] = self._index.reconstruct(int(i))
        return out

    def _id_list(self) -> np.ndarray:
        idx = self._index
        if isinstance(idx, self._faiss.IndexIDMap2 | self._faiss.IndexIDMap):
            return self._faiss.vector_to_array(idx.id_map).astype(np.int64)
        # IVF with a direct map: collect from the inverted lists
        invlists = idx.invlists
        parts = []
        for lst in range(idx.nlist):
            size = invlists.list_size(lst)
            if size:
                ptr = invlists.get_ids(lst)
                parts.append(self._faiss.rev_swig_ptr(ptr, size).copy())
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def _maybe_rebuild(self) -> None:
        """Switch a still-flat IVF index to IVF, or retrain it after much growth."""
        if self.kind != "ivf":
            return
        n = self._index.ntotal
        flat = self._trained_on == 0
        if (flat and n >= self.train_min) or (
            not flat and n >= self._trained_on * self.retrain_growth
        ):
            ids, vecs = self._all_vectors()
            ivf = self._new_ivf(vecs)
            ivf.add_with_ids(vecs, ids)
            self._index, self._trained_on = ivf, n

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the content with these vectors (trains IVF on them directly): bulk loading."""
        ids = _as_ids(ids)
        v = _as_vectors(vectors, self.dim)
        with self._lock.write():
            if self.kind == "ivf" and len(ids) >= self.train_min:
                ivf = self._new_ivf(v)
                ivf.add_with_ids(v, ids)
                self._index, self._trained_on = ivf, len(ids)
            else:
                self._index = self._new_hnsw() if self.kind == "hnsw" else self._new_flat()
                self._trained_on = 0
                self._deleted, self._selector = set(), None
                if len(ids):
                    self._index.add_with_ids(v, ids)

    # -- VectorIndex ----------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = _as_ids(ids)
        v = _as_vectors(vectors, self.dim)
        if len(ids) != len(v):
            raise GalleryError("ids and vectors differ in length")
        if len(ids) == 0:
            return
        with self._lock.write():
            if self._deleted and not self._deleted.isdisjoint(ids.tolist()):
                self.compact()  # a deleted id comes back: drop its old node first
            if self.kind == "hnsw" and self._index.ntotal == 0 and not self._is_graph():
                self._index = self._new_hnsw()
            self._index.add_with_ids(v, ids)
            self._maybe_rebuild()

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        ids = _as_ids(ids)
        if len(ids) == 0:
            return 0
        with self._lock.write():
            if self._is_graph():
                return self._tombstone(ids)
            if self._trained_on:  # IVF with a hashtable direct map takes an id array
                present = ids[np.isin(ids, self._id_list())]
                if len(present) == 0:
                    return 0
                present = np.ascontiguousarray(present)
                sel = self._faiss.IDSelectorArray(len(present), self._faiss.swig_ptr(present))
                return int(self._index.remove_ids(sel))
            return int(self._index.remove_ids(self._faiss.IDSelectorBatch(ids)))

    def _is_graph(self) -> bool:
        return self.kind == "hnsw" and isinstance(
            self._faiss.downcast_index(self._index.index), self._faiss.IndexHNSWFlat
        )

    # -- HNSW removal: tombstones -----------------------------------------------------------------
    def _hnsw_vectors(self) -> np.ndarray:
        """A writable view of the HNSW graph's stored vectors (row = insertion position)."""
        faiss = self._faiss
        graph = faiss.downcast_index(self._index.index)
        if not isinstance(graph, faiss.IndexHNSW):  # pragma: no cover - called for HNSW only
            raise GalleryError(f"not an HNSW index: {type(graph).__name__}")
        storage = faiss.downcast_index(graph.storage)
        if not isinstance(storage, faiss.IndexFlat):  # pragma: no cover - HNSWFlat's storage
            raise GalleryError(f"unexpected HNSW storage: {type(storage).__name__}")
        n = int(storage.ntotal)
        return faiss.rev_swig_ptr(storage.get_xb(), n * self.dim).reshape(n, self.dim)

    def _tombstone(self, ids: np.ndarray) -> int:
        """Mark ids deleted in the HNSW graph: their vectors are zeroed at once (the graph keeps
        the node as a blank waypoint) and searches skip them; compact past the threshold."""
        id_map = self._faiss.vector_to_array(self._index.id_map)
        fresh = np.setdiff1d(ids, np.fromiter(self._deleted, np.int64, len(self._deleted)))
        rows = np.flatnonzero(np.isin(id_map, fresh))
        if len(rows) == 0:
            return 0
        self._hnsw_vectors()[rows] = 0.0
        self._deleted.update(id_map[rows].tolist())
        if len(self._deleted) > self.compact_fraction * self._index.ntotal:
            self.compact()
        else:
            self._selector = self._new_selector()
        return len(rows)

    def compact(self) -> None:
        """Rebuild an HNSW graph without its deleted nodes (automatic once more than
        ``compact_fraction`` of the nodes are deleted). Other kinds free space on removal."""
        with self._lock.write():
            if not self._deleted:
                return
            id_map = self._faiss.vector_to_array(self._index.id_map).astype(np.int64)
            keep = ~np.isin(id_map, np.fromiter(self._deleted, np.int64, len(self._deleted)))
            vecs = self._hnsw_vectors()[keep].copy()
            self._index = self._new_hnsw()
            self._deleted, self._selector = set(), None
            if len(vecs):
                self._index.add_with_ids(vecs, id_map[keep])

    def _new_selector(self) -> tuple[Any, ...]:
        """HNSW search parameters that exclude the tombstoned ids, with the C++ objects they
        point to (kept alive together). Built by the change that tombstones, under the write
        side of the lock: concurrent searches only read it."""
        faiss = self._faiss
        dead = np.fromiter(self._deleted, np.int64, len(self._deleted))
        batch = faiss.IDSelectorBatch(dead)
        sel = faiss.IDSelectorNot(batch)
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.ef_search)
        return (params, sel, batch, dead)

    def _search_params(self) -> Any:
        """The HNSW search parameters excluding tombstones (None when there are none)."""
        return self._selector[0] if self._selector is not None else None

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._deleted)

    def ids(self) -> np.ndarray:
        with self._lock.read():
            ids = self._id_list()
            if self._deleted:
                ids = ids[~np.isin(ids, np.fromiter(self._deleted, np.int64, len(self._deleted)))]
            return ids

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_vectors(queries, self.dim)
        with self._lock.read():
            if len(self) == 0 or k <= 0:
                return _empty_result(len(q), int(k))
            params = self._search_params()
            if params is None:
                scores, ids = self._index.search(q, int(k))
            else:
                scores, ids = self._index.search(q, int(k), params=params)
        scores = scores.astype(np.float32)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(faiss_kind=self.kind, trained=self._trained_on > 0)
        if self._trained_on:
            info.update(nlist=int(self._index.nlist), nprobe=int(self._index.nprobe))
        info["exact"] = self.kind != "hnsw" and self._trained_on == 0
        if self.kind == "hnsw":
            info.update(M=self.M, ef_search=self.ef_search, tombstones=len(self._deleted))
        return info


@contextlib.contextmanager
def _quiet_pymilvus() -> Iterator[None]:
    """Silence pymilvus' harmless 'client-side ts' warning from Milvus Lite's iterators."""
    loggers = [logging.getLogger("pymilvus"), logging.getLogger("grpc._server")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class MilvusIndex(VectorIndex):
    """A Milvus collection (pymilvus ``MilvusClient``): Milvus Lite file or a cluster URI.

    The collection holds ``id`` (INT64, the face id) and ``vector`` (FLOAT_VECTOR, inner
    product). Deletions are immediate (strong consistency). ``connect_timeout_s`` bounds the
    wait for the first connection (60 s: pymilvus's own 10 s fails on a loaded machine).
    One ``add`` of at least ``flush_after`` vectors (a bulk load: an import, a reconciliation)
    is flushed, so that they are sealed into indexed segments: searches over unsealed rows
    scan them (100,000 faces in Milvus Lite: 1.5–4 s a query unsealed, 0.1 s sealed;
    ``bench/gallery_search.py --candidates milvus``). Small adds (an enrolment) are left to
    Milvus, which seals its segments itself: a flush per enrolment would make many small ones.
    """

    persistent = True

    def __init__(
        self,
        dim: int,
        *,
        uri: str | Path,
        collection: str = "marginface_faces",
        token: str = "",
        index_type: str = "FLAT",
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
        connect_timeout_s: float = 60.0,
        flush_after: int = 10_000,
    ) -> None:
        super().__init__(dim)
        self.flush_after = int(flush_after)
        try:
            from pymilvus import DataType, MilvusClient  # optional: pymilvus (marginface[milvus])
        except ImportError:  # pragma: no cover - depends on the installation
            raise GalleryError(
                "the Milvus index needs pymilvus (and milvus-lite for a local file): "
                + install_hint("milvus")
            ) from None
        uri = str(uri)
        if "://" not in uri:
            if importlib.util.find_spec("milvus_lite") is None:
                raise GalleryError(
                    "a local Milvus Lite file needs milvus-lite: " + install_hint("milvus")
                )
            path = Path(uri).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = str(path)
        self.uri = uri
        self.collection = collection
        self.exact = index_type.upper() == "FLAT"
        self._search_params = search_params or {}
        self._lock = threading.RLock()  # one client call at a time (see the module's docstring)
        try:
            # pymilvus gives up connecting after 10 s, which a loaded machine starting Milvus
            # Lite's server (or a remote server's first connection) can exceed.
            self._client = MilvusClient(uri=uri, token=token, timeout=connect_timeout_s)
        except Exception as exc:
            raise GalleryError(f"cannot open Milvus at {uri}: {exc}") from None
        if self._client.has_collection(collection):
            desc = self._client.describe_collection(collection)
            dims = [
                f.get("params", {}).get("dim")
                for f in desc.get("fields", [])
                if f.get("name") == "vector"
            ]
            if dims and int(dims[0]) != self.dim:
                raise GalleryError(
                    f"Milvus collection {collection!r} at {uri} holds {dims[0]}-d vectors, "
                    f"not {self.dim}-d: it belongs to another model; use another collection"
                )
            self._client.load_collection(collection)
        else:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
            params = self._client.prepare_index_params()
            params.add_index(
                field_name="vector",
                index_type=index_type,
                metric_type="IP",
                params=index_params or {},
            )
            self._client.create_collection(
                collection, schema=schema, index_params=params, consistency_level="Strong"
            )

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = _as_ids(ids)
        v = _as_vectors(vectors, self.dim)
        if len(ids) != len(v):
            raise GalleryError("ids and vectors differ in length")
        with self._lock:
            for start in range(0, len(ids), 5000):
                rows = [
                    {"id": int(i), "vector": vec.tolist()}
                    for i, vec in zip(
                        ids[start : start + 5000], v[start : start + 5000], strict=True
                    )
                ]
                self._client.upsert(self.collection, rows)
            if len(ids) >= self.flush_after:
                self._client.flush(self.collection)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        ids = _as_ids(ids)
        if len(ids) == 0:
            return 0
        removed = 0
        with self._lock:
            for start in range(0, len(ids), 10000):
                part = [int(i) for i in ids[start : start + 10000]]
                present = self._client.query(
                    self.collection, filter=f"id in {part}", output_fields=["id"]
                )
                found = [int(r["id"]) for r in present]
                if found:
                    self._client.delete(self.collection, ids=found)
                    removed += len(found)
        return removed

    def ids(self) -> np.ndarray:
        out: list[int] = []
        with self._lock, _quiet_pymilvus():
            it = self._client.query_iterator(
                self.collection, batch_size=10000, filter="id >= 0", output_fields=["id"]
            )
            try:
                while batch := it.next():
                    out.extend(int(r["id"]) for r in batch)
            finally:
                it.close()
        return np.asarray(out, dtype=np.int64)

    def __len__(self) -> int:
        with self._lock:
            res = self._client.query(self.collection, filter="id >= 0", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_vectors(queries, self.dim)
        scores_out, ids_out = _empty_result(len(q), int(k))
        if k <= 0 or len(q) == 0:
            return scores_out, ids_out
        with self._lock:
            res = self._client.search(
                self.collection,
                data=[row.tolist() for row in q],
                limit=int(k),
                anns_field="vector",
                search_params={"metric_type": "IP", "params": self._search_params},
            )
        for qi, hits in enumerate(res):
            for j, hit in enumerate(list(hits)[:k]):
                ids_out[qi, j] = int(hit["id"])
                scores_out[qi, j] = float(hit["distance"])
        return scores_out, ids_out

    def clear(self) -> None:
        with self._lock:
            self._client.delete(self.collection, filter="id >= 0")

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._client.close()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "MilvusIndex",
            "dim": self.dim,
            "uri": self.uri,
            "collection": self.collection,
            "exact": self.exact,
        }


def create_index(kind: str, dim: int, /, **options: Any) -> VectorIndex:
    """Build an index by name: ``exact``, ``faiss`` or ``milvus`` (options: uri, collection,
    token, index_type, ...).

    ``faiss`` options: ``kind="binary"`` (default, also ``"auto"``) gives
    :class:`FaissBinaryIndex` (bits, rerank, threads, seed): the choice for large galleries;
    ``kind="flat" | "ivf" | "hnsw"`` gives :class:`FaissIndex` (nlist, nprobe, M, ef_search,
    ef_construction, compact_fraction, threads, ...).
    """
    kind = kind.lower()
    if kind == "exact":
        return ExactIndex(dim, **options)
    if kind == "faiss":
        sub = str(options.pop("kind", "binary")).lower()
        if sub in ("binary", "auto"):
            return FaissBinaryIndex(dim, **options)
        return FaissIndex(dim, kind=sub, **options)
    if kind == "milvus":
        if "uri" not in options:
            raise GalleryError(
                "the Milvus index needs a uri (a local .db file or http://host:port)"
            )
        return MilvusIndex(dim, **options)
    raise GalleryError(f"unknown index {kind!r}: choose one of {', '.join(INDEX_KINDS)}")
