"""The k-NN vote: one query's rule (what the gallery decides with), and the same rule applied
to every probe at once (what evaluation measures with), held to the same answers."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.decision.vote import knn_vote, vote_neighbours
from marginface.errors import DataError

SCORES = np.array(
    [
        [0.9, 0.2, 0.5, 0.1],
        [0.6, 0.55, 0.5, 0.1],
        [0.5, 0.45, 0.6, 0.1],
        [0.3, 0.2, 0.4, 0.35],
    ]
)
GALLERY = np.array(["A", "A", "B", "C"], dtype=object)


def test_knn_vote_threshold_tie_and_single_row() -> None:
    vote = knn_vote(SCORES, GALLERY, k=3, threshold=0.55)
    np.testing.assert_array_equal(vote.accepted, [True, True, False, False])
    assert vote.decisions() == ["A", "A", None, None]
    # equal votes: the subject with the more similar best neighbour wins
    tie = knn_vote(np.array([0.5, 0.3, 0.8, 0.0]), ["A", "A", "B", "C"], k=3)
    assert tie.subject[0] == "B" and tie.votes[0] == pytest.approx(0.8)
    # negative similarities do not subtract votes
    neg = knn_vote(np.array([-0.2, -0.3, 0.1]), ["A", "A", "B"], k=3)
    assert neg.subject[0] == "B"
    with pytest.raises(DataError):
        knn_vote(SCORES, ["A", "B"], k=3)


def test_vote_neighbours_ranks_candidates_and_applies_the_threshold() -> None:
    # neighbours in any order; k = 4 keeps 0.9, 0.7, 0.69, 0.68: b's three outvote a's one
    subjects = ["b", "a", "c", "b", "b"]
    scores = [0.70, 0.90, 0.10, 0.69, 0.68]
    winner, ranked = vote_neighbours(subjects, scores, threshold=0.5, k=4)
    assert winner is ranked[0] and winner.subject == "b" and winner.votes == 3
    assert winner.weight == pytest.approx(2.07) and winner.best == pytest.approx(0.70)
    assert winner.best_index == 0
    assert [(r.subject, r.votes) for r in ranked] == [("b", 3), ("a", 1)]  # c is not among k
    # below the threshold: unknown, the candidates are still given
    winner, ranked = vote_neighbours(subjects, scores, threshold=0.75, k=4)
    assert winner is None and ranked[0].subject == "b"
    # without a threshold the winner is always accepted; all neighbours vote without k
    winner, ranked = vote_neighbours(subjects, scores)
    assert winner.subject == "b" and len(ranked) == 3
    # equal weight: the more similar best neighbour wins; negative similarities weigh nothing
    winner, _ = vote_neighbours(["a", "a", "b"], [0.3, 0.3, 0.6], 0.0)
    assert winner.subject == "b"
    winner, ranked = vote_neighbours(["a", "b"], [-0.2, -0.1], -1.0)
    assert winner.subject == "b" and ranked[0].weight == 0.0
    assert vote_neighbours([], [], 0.5) == (None, [])
    with pytest.raises(ValueError, match="differ in length"):
        vote_neighbours(["a"], [0.1, 0.2], 0.5)


def test_vote_prefers_many_good_neighbours_and_says_unknown_below_threshold():
    winner, ranked = vote_neighbours(["a", "b", "b", "b"], [0.80, 0.70, 0.69, 0.68], 0.5)
    assert winner.subject == "b" and winner.votes == 3 and winner.best == pytest.approx(0.70)
    assert [r.subject for r in ranked] == ["b", "a"]
    winner, _ = vote_neighbours(["a", "b"], [0.45, 0.40], 0.5)
    assert winner is None


def test_vectorised_vote_equals_the_per_probe_rule() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        g, k = int(rng.integers(1, 15)), int(rng.integers(1, 8))
        scores = np.round(rng.uniform(-0.5, 1.0, (12, g)), 1)  # many ties
        subjects = rng.integers(0, 5, g).astype(str)
        vote = knn_vote(scores, subjects, k=k, threshold=0.3)
        for p in range(12):
            winner, ranked = vote_neighbours(list(subjects), list(scores[p]), 0.3, k=k)
            assert vote.subject[p] == ranked[0].subject
            assert vote.similarity[p] == ranked[0].best and vote.votes[p] == ranked[0].weight
            assert vote.accepted[p] == (winner is not None)
