"""Vector indexes: exact numpy, FAISS (flat, IVF, HNSW) and Milvus Lite agree with brute force."""

from __future__ import annotations

import numpy as np
import pytest
from gallery_helpers import unit

from marginface.errors import GalleryError
from marginface.gallery import ExactIndex, FaissIndex, MilvusIndex, create_index
from marginface.gallery.vote import knn_vote, shared_rule_winner


def brute(data: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    sims = q @ data.T
    return ids[np.argsort(-sims, axis=1)[:, :k]]


def clustered(n_clusters: int, per: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_clusters, dim)))
    pts = np.repeat(centres, per, axis=0) + 0.25 * rng.normal(size=(n_clusters * per, dim)) / 4
    return unit(pts)


@pytest.fixture(params=["exact", "faiss-flat", "faiss-ivf", "faiss-hnsw", "milvus"])
def index(request, tmp_path):
    kind = request.param
    if kind == "exact":
        return ExactIndex(16)
    if kind == "milvus":
        return MilvusIndex(16, uri=str(tmp_path / "m.db"), collection="t")
    sub = kind.split("-")[1]
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


def test_vote_agrees_with_the_evaluation_rule():
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(1, 8))
        subjects = [f"s{int(x)}" for x in rng.integers(0, 3, size=k)]
        scores = rng.uniform(-0.2, 1.0, size=k).round(2).tolist()  # ties happen
        thr = float(rng.uniform(0.2, 0.8))
        winner, ranked = knn_vote(subjects, scores, thr)
        assert (winner.subject if winner else None) == shared_rule_winner(subjects, scores, thr)
        assert ranked[0].weight == max(r.weight for r in ranked)


def test_vote_prefers_many_good_neighbours_and_says_unknown_below_threshold():
    winner, ranked = knn_vote(["a", "b", "b", "b"], [0.80, 0.70, 0.69, 0.68], 0.5)
    assert winner.subject == "b" and winner.votes == 3 and winner.best == pytest.approx(0.70)
    assert [r.subject for r in ranked] == ["b", "a"]
    winner, _ = knn_vote(["a", "b"], [0.45, 0.40], 0.5)
    assert winner is None
