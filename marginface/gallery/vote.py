"""The k-NN vote that turns a query's nearest stored faces into one subject (or unknown).

The rule is the one evaluation measures (:func:`marginface.eval.identify.knn_vote`), applied to
the query's ``k`` nearest stored faces:

1. each neighbour votes for its subject with weight ``max(similarity, 0)``;
2. the subject with the largest summed weight wins; a tie goes to the subject with the more
   similar best neighbour;
3. the winner is accepted when its best similarity (a cosine, comparable with the calibrated
   threshold) reaches ``threshold``; otherwise the answer is *unknown*.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["VoteResult", "knn_vote"]


@dataclass(frozen=True)
class VoteResult:
    """One subject among the neighbours."""

    subject: Hashable
    votes: int  # how many of the k neighbours are this subject's faces
    weight: float  # summed max(similarity, 0) of those neighbours
    best: float  # best similarity among them
    best_index: int  # position of that neighbour in the input


def knn_vote(
    subjects: Sequence[Hashable],
    scores: Sequence[float],
    threshold: float,
    k: int | None = None,
) -> tuple[VoteResult | None, list[VoteResult]]:
    """Vote among the ``k`` best neighbours; return ``(accepted winner or None, candidates)``.

    ``subjects[i]`` is the subject of the i-th neighbour and ``scores[i]`` its similarity (any
    order). Candidates are ranked as the vote ranks them: summed weight, then best similarity.
    """
    if len(subjects) != len(scores):
        raise ValueError("subjects and scores differ in length")
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    if k is not None:
        order = order[:k]
    table: dict[Hashable, list] = {}
    for i in order:  # best first: the first entry of a subject is its best neighbour
        s = float(scores[i])
        entry = table.setdefault(subjects[i], [0, 0.0, s, i])
        entry[0] += 1
        entry[1] += max(s, 0.0)
    ranked = sorted(
        (VoteResult(subj, v, w, b, bi) for subj, (v, w, b, bi) in table.items()),
        key=lambda r: (-r.weight, -r.best),
    )
    if not ranked:
        return None, []
    winner = ranked[0] if ranked[0].best >= threshold else None
    return winner, ranked


def shared_rule_winner(
    subjects: Sequence[Hashable], scores: Sequence[float], threshold: float
) -> Hashable | None:
    """The decision of evaluation's :func:`marginface.eval.identify.knn_vote` on these
    neighbours (used by the tests to keep both in agreement)."""
    from marginface.eval.identify import knn_vote as eval_knn_vote

    res = eval_knn_vote(np.asarray(scores, dtype=np.float64)[None, :], list(subjects),
                        k=len(scores), threshold=threshold)
    return res.decisions()[0]
