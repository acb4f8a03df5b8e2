"""Vector indexes: exact numpy, FAISS (flat, IVF, HNSW) and Milvus Lite agree with brute force."""

from __future__ import annotations

import numpy as np
import pytest
from gallery_helpers import unit

from marginface.errors import GalleryError
from marginface.gallery import (
    ExactIndex,
    FaissBinaryIndex,
    FaissIndex,
    Gallery,
    MilvusIndex,
    create_index,
)


def brute(data: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    sims = q @ data.T
    return ids[np.argsort(-sims, axis=1)[:, :k]]


def clustered(n_clusters: int, per: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_clusters, dim)))
    pts = np.repeat(centres, per, axis=0) + 0.25 * rng.normal(size=(n_clusters * per, dim)) / 4
    return unit(pts)


@pytest.fixture(params=["exact", "faiss-binary", "faiss-flat", "faiss-ivf", "faiss-hnsw", "milvus"])
def index(request, tmp_path):
    kind = request.param
    if kind == "exact":
        return ExactIndex(16)
    if kind == "milvus":
        return MilvusIndex(16, uri=str(tmp_path / "m.db"), collection="t")
    sub = kind.split("-")[1]
    if sub == "binary":
        return create_index("faiss", 16)
    return FaissIndex(16, kind=sub, train_min=200, nlist=8, nprobe=8)


def test_index_matches_brute_force_with_removals(index):
    data = clustered(40, 10, 16)
    ids = np.arange(1000, 1000 + len(data), dtype=np.int64)
    index.add(ids[:250], data[:250])
    index.add(ids[250:], data[250:])
    assert len(index) == 400
    assert sorted(index.ids().tolist()) == ids.tolist()
    rng = np.random.default_rng(1)
    q = unit(data[rng.choice(400, 30)] + 0.05 * rng.normal(size=(30, 16)))
    scores, got = index.search(q, 5)
    want = brute(data, ids, q, 5)
    recall = np.mean(got[:, 0] == want[:, 0])
    assert recall >= (1.0 if index.exact else 0.9)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    gone = ids[::3]
    assert index.remove(gone) == len(gone)
    assert index.remove(gone) == 0  # unknown ids are ignored
    keep = ~np.isin(ids, gone)
    assert sorted(index.ids().tolist()) == ids[keep].tolist()
    _, got = index.search(data[::3], 5)  # the removed vectors themselves
    assert not np.isin(got, gone).any()
    _, got = index.search(q, 5)
    want = brute(data[keep], ids[keep], q, 5)
    assert np.mean(got[:, 0] == want[:, 0]) >= (1.0 if index.exact else 0.9)
    index.clear()
    assert len(index) == 0
    s, i = index.search(q[:2], 3)
    assert (i == -1).all() and np.isneginf(s).all()
    index.close()


def test_fewer_vectors_than_k_pad_with_minus_one():
    ix = ExactIndex(4)
    ix.add([7, 8], unit(np.eye(4, dtype=np.float32)[:2]))
    scores, ids = ix.search(np.eye(4, dtype=np.float32)[:1], 4)
    assert ids[0].tolist() == [7, 8, -1, -1]
    assert scores[0, 0] == pytest.approx(1.0) and np.isneginf(scores[0, 2])


def test_exact_index_rejects_duplicates_and_bad_shapes():
    ix = ExactIndex(4)
    ix.add([1], unit(np.ones((1, 4))))
    with pytest.raises(GalleryError, match="already"):
        ix.add([1], unit(np.ones((1, 4))))
    with pytest.raises(GalleryError, match="shape"):
        ix.add([2], np.ones((1, 5), np.float32))
    with pytest.raises(GalleryError, match="unknown index"):
        create_index("annoy", 4)


def test_faiss_ivf_trains_when_large_enough():
    data = clustered(50, 20, 16, seed=3)
    ix = FaissIndex(16, kind="ivf", train_min=500, nlist=16, nprobe=4)
    ix.add(np.arange(400), data[:400])
    assert not ix.describe()["trained"] and ix.describe()["exact"]
    ix.add(np.arange(400, 1000), data[400:])
    info = ix.describe()
    assert info["trained"] and info["nlist"] == 16 and not info["exact"]
    _, got = ix.search(data[:100], 1)
    assert np.mean(got[:, 0] == np.arange(100)) >= 0.95


def faces(n_people: int, per: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gallery faces and fresh query photos of enrolled people (same-person cosine ~0.6)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_people, dim)))
    noise = 0.8 / np.sqrt(dim)
    data = unit(np.repeat(centres, per, axis=0) + noise * rng.normal(size=(n_people * per, dim)))
    who = rng.integers(0, n_people, 40)
    queries = unit(centres[who] + noise * rng.normal(size=(40, dim)))
    return data, queries


def test_faiss_default_is_the_binary_index_and_agrees_with_exact_search():
    data, queries = faces(8000, 5, 128)  # 40,000 faces: one query is split over 2 threads
    ids = np.arange(5, 5 + len(data), dtype=np.int64)
    ix = create_index("faiss", 128)
    assert isinstance(ix, FaissBinaryIndex) and not ix.exact
    assert ix.describe()["bits"] == 256 and ix.describe()["faiss_kind"] == "binary"
    ix.add(ids[:25000], data[:25000])
    ix.add(ids[25000:], data[25000:])
    exact = ExactIndex(128)
    exact.add(ids, data)
    want_s, want = exact.search(queries, 5)
    got_s, got = ix.search(queries, 5)  # batched
    single = [ix.search(q[None], 5) for q in queries]  # one at a time: split over 2 threads
    for s_, g_ in (
        (got_s, got),
        (np.vstack([x[0] for x in single]), np.vstack([x[1] for x in single])),
    ):
        assert (g_ == want).all()  # same neighbours, same order
        np.testing.assert_allclose(s_, want_s, atol=1e-5)  # scores are exact
    # removal is immediate: the vector and its code are overwritten, never returned again
    gone = want[:, 0]
    assert ix.remove(gone) == len(np.unique(gone))
    assert len(ix) == len(data) - len(np.unique(gone))
    _, got = ix.search(queries, 5)
    assert not np.isin(got, gone).any()
    rows = ix._matrix  # includes the spare capacity where the moved-out rows were
    for v in data[gone - 5]:
        assert not np.all(rows == v, axis=1).any()
    keep = ~np.isin(ids, gone)
    exact = ExactIndex(128)
    exact.add(ids[keep], data[keep])
    assert (ix.search(queries, 5)[1][:, 0] == exact.search(queries, 5)[1][:, 0]).all()
    ix.close()


def test_faiss_binary_options_are_checked():
    with pytest.raises(GalleryError, match="multiple of 64"):
        FaissBinaryIndex(32, bits=100)
    with pytest.raises(GalleryError, match="rerank"):
        FaissBinaryIndex(32, rerank=0)
    ix = create_index("faiss", 32, kind="binary", bits=128, rerank=8)
    ix.add([1, 2], unit(np.eye(32, dtype=np.float32)[:2]))
    s, i = ix.search(np.eye(32, dtype=np.float32)[:1], 4)
    assert i[0].tolist() == [1, 2, -1, -1] and s[0, 0] == pytest.approx(1.0)
    assert isinstance(create_index("faiss", 32, kind="hnsw"), FaissIndex)


def test_hnsw_removal_tombstones_zeroes_and_compacts():
    data = clustered(60, 10, 16, seed=5)
    ids = np.arange(100, 100 + len(data), dtype=np.int64)
    ix = FaissIndex(16, kind="hnsw", compact_fraction=0.2)
    ix.add(ids, data)
    gone = ids[:30]  # 5 %: tombstones, no rebuild
    assert ix.remove(gone) == 30 and ix.remove(gone) == 0
    assert len(ix) == 570 and ix.describe()["tombstones"] == 30
    assert ix._index.ntotal == 600  # still in the graph...
    for i in gone[:5]:  # ...but the embedding itself is gone from memory
        assert not np.any(ix._index.reconstruct(int(i)))
    _, got = ix.search(data[:30], 5)  # the removed faces' own vectors
    assert not np.isin(got, gone).any() and (got >= 0).all()
    assert sorted(ix.ids().tolist()) == ids[30:].tolist()
    ix.remove(ids[30:130])  # past 20 %: rebuilt without the dead nodes
    assert ix._index.ntotal == len(ix) == 470 and ix.describe()["tombstones"] == 0
    ix.remove(ids[130:140])
    ix.compact()
    assert ix._index.ntotal == 460
    _, got = ix.search(data[140:200], 1)
    assert np.mean(got[:, 0] == ids[140:200]) >= 0.95
    ix.add(ids[:10], data[:10])  # ids may come back
    assert len(ix) == 470
    ix.remove(ids[140:145])  # tombstoned, then enrolled again: the dead nodes go first
    ix.add(ids[140:145], data[140:145])
    assert len(ix) == ix._index.ntotal == 470 and ix.describe()["tombstones"] == 0
    _, got = ix.search(data[140:145], 1)
    assert (got[:, 0] == ids[140:145]).all()


def test_gallery_with_the_faiss_index_searches_and_forgets(tmp_path):
    data, _ = faces(300, 4, 32, seed=2)
    with Gallery.open(tmp_path / "g.db", model_name="m", dim=32, index="faiss") as g:
        assert isinstance(g.index, FaissBinaryIndex)
        subjects = [
            g.subjects.create(f"p{i}", embeddings=data[4 * i : 4 * i + 4]).id for i in range(300)
        ]
        who = [hits[0].subject_id for hits in g.search(data[::4], 1)]
        assert who == subjects
        g.subjects.delete(subjects[0])
        assert all(h.subject_id != subjects[0] for h in g.search(data[:4], 5)[0])
    with Gallery.open(tmp_path / "g.db", model_name="m", dim=32, index="faiss") as g:
        assert len(g.index) == 299 * 4  # rebuilt from SQL at start
        assert g.search(data[4:5], 1)[0][0].subject_id == subjects[1]


def test_an_index_that_does_not_answer_is_a_storage_error(tmp_path, monkeypatch):
    """A vector index server away (Milvus restarting): searches fail as the gallery's
    StorageError (the service's 503), and work again once it answers."""
    from marginface.errors import StorageError

    data, _ = faces(10, 2, 32, seed=3)
    with Gallery.open(tmp_path / "g.db", model_name="m", dim=32) as g:
        ada = g.subjects.create("Ada", embeddings=data[:2]).id

        def away(*args, **kwargs):
            raise ConnectionError("milvus.lan:19530: connection refused")

        monkeypatch.setattr(g.index, "search", away)
        with pytest.raises(StorageError, match=r"vector index did not answer.*connection refused"):
            g.search(data[:1], 1)
        monkeypatch.undo()
        assert g.search(data[:1], 1)[0][0].subject_id == ada


def test_milvus_seals_a_bulk_load_and_leaves_an_enrolment_to_milvus(tmp_path, monkeypatch):
    """A bulk add is flushed (searches over unsealed rows scan them: seconds a query at 100k
    faces in Milvus Lite); a small add is not (a flush per enrolment makes tiny segments)."""
    index = MilvusIndex(16, uri=str(tmp_path / "m.db"), collection="t", flush_after=100)
    flushed: list[str] = []
    real_flush = index._client.flush

    def flush(name: str, **kwargs) -> None:
        flushed.append(name)
        real_flush(name, **kwargs)

    monkeypatch.setattr(index._client, "flush", flush)
    data = clustered(20, 10, 16)
    ids = np.arange(len(data), dtype=np.int64)
    index.add(ids[:5], data[:5])
    assert flushed == []
    index.add(ids[5:], data[5:])
    assert flushed == ["t"]
    _, got = index.search(data[:3], 1)
    assert got[:, 0].tolist() == [0, 1, 2]
    index.close()
