"""Rank-k, CMC and DIR on a tiny synthetic gallery with known answers (ranks follow the k-NN
vote of marginface.decision)."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.decision.vote import knn_vote
from marginface.eval.search_metrics import cmc, dir_at_fpir, open_set_rates, subject_ranks

GALLERY = np.array(["A", "A", "B", "C"], dtype=object)
TRUTH = np.array(["A", "B", "A", "C"], dtype=object)
SCORES = np.array(
    [
        [0.9, 0.2, 0.5, 0.1],  # A: nearest is A
        [0.6, 0.55, 0.5, 0.1],  # B: A is nearer, and A also wins the vote
        [0.5, 0.45, 0.6, 0.1],  # A: nearest is B, but A's two faces outvote B (k >= 2)
        [0.3, 0.2, 0.4, 0.35],  # C: B is nearer; C is second
    ]
)


def test_nearest_neighbour_ranks_and_cmc() -> None:
    ranks = subject_ranks(SCORES, GALLERY, TRUTH, k=1)
    np.testing.assert_array_equal(ranks, [1, 2, 2, 2])
    curve = cmc(ranks, max_rank=3)
    np.testing.assert_allclose(curve, [0.25, 1.0, 1.0])


def test_knn_vote_changes_the_decision() -> None:
    vote = knn_vote(SCORES, GALLERY, k=3)
    assert list(vote.subject) == ["A", "A", "A", "B"]
    np.testing.assert_allclose(vote.votes, [1.1, 1.15, 0.95, 0.4])
    np.testing.assert_allclose(vote.similarity, [0.9, 0.6, 0.5, 0.4])  # winner's best cosine
    ranks = subject_ranks(SCORES, GALLERY, TRUTH, k=3)
    np.testing.assert_array_equal(ranks, [1, 2, 1, 2])
    np.testing.assert_allclose(cmc(ranks), [0.5, 1.0])
    # k = 1 is nearest neighbour
    assert list(knn_vote(SCORES, GALLERY, k=1).subject) == ["A", "A", "B", "B"]


def test_rank_of_subject_outside_the_vote_and_absent_subject() -> None:
    # k = 2: the top two neighbours (A 0.9, A 0.8) vote; D (0.5) and C (0.4) are ranked after
    scores = np.array([[0.9, 0.8, 0.4, 0.5, 0.1]])
    gallery = ["A", "A", "C", "D", "E"]
    assert subject_ranks(scores, gallery, ["C"], k=2)[0] == 3
    assert subject_ranks(scores, gallery, ["D"], k=2)[0] == 2
    assert subject_ranks(scores, gallery, ["Z"], k=2)[0] == np.inf


def test_dir_at_fpir_known_answer() -> None:
    nonmated = np.linspace(0.0, 0.99, 100)  # 100 impostor probes
    mated = np.array([0.995, 0.97, 0.96, 0.5, 0.999])
    correct = np.array([True, True, True, True, False])
    res = dir_at_fpir(mated, correct, nonmated, fpirs=("1e-2", "1e-1", "1e-3"))
    # FPIR 1e-2: one alarm allowed -> threshold between 0.98 and 0.99
    assert 0.98 < res["1e-2"].threshold < 0.99
    assert res["1e-2"].observed_fpir == pytest.approx(0.01)
    assert res["1e-2"].tpir == pytest.approx(0.2)  # only 0.995 is right and above; 0.999 wrong
    # FPIR 1e-1: ten alarms allowed -> threshold between 0.89 and 0.90
    assert res["1e-1"].tpir == pytest.approx(0.6)
    assert res["1e-3"].tpir is None and "1000" in res["1e-3"].reason
    tpir, fpir = open_set_rates(mated, correct, nonmated, 0.955)
    assert tpir == pytest.approx(0.6) and fpir == pytest.approx(0.04)
