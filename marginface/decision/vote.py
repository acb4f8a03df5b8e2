"""The k-NN vote: how a query's nearest stored faces become one subject, or unknown.

One rule, two forms:

* :func:`vote_neighbours` decides one query from its neighbours (any order): what the gallery
  and the service decide with, through :class:`marginface.decision.IdentificationPolicy`;
* :func:`knn_vote` applies the same rule to every probe of a ``(P, G)`` score matrix at once by
  array operations (no loop per probe): what ``marginface eval identify`` measures with. A test
  holds the two to the same answers, ties included.

The rule:

1. the ``k`` most similar neighbours each vote for their subject with weight
   ``max(similarity, 0)``;
2. the subject with the largest summed weight wins; a tie goes to the subject with the more
   similar best neighbour;
3. the winner is accepted when its best similarity (a cosine, comparable with a calibrated
   threshold) reaches the threshold (``>=``); otherwise the answer is *unknown*.

``k = 1`` is plain nearest neighbour: the best face of the best subject, the ``best_face``
subject score the card's impostor tables assume.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from marginface.errors import DataError

__all__ = ["KnnVote", "VoteResult", "knn_vote", "nearest", "score_rows", "vote_neighbours"]


@dataclass(frozen=True)
class VoteResult:
    """One subject among a query's neighbours, as the vote counts it."""

    subject: Hashable
    votes: int  # how many of the k neighbours are this subject's faces
    weight: float  # summed max(similarity, 0) of those neighbours
    best: float  # best similarity among them
    best_index: int  # position of that neighbour in the input


def vote_neighbours(
    subjects: Sequence[Hashable],
    scores: Sequence[float],
    threshold: float | None = None,
    k: int | None = None,
) -> tuple[VoteResult | None, list[VoteResult]]:
    """The k-NN vote among one query's neighbours: ``(accepted winner or None, candidates)``.

    ``subjects[i]`` is the subject of the i-th neighbour and ``scores[i]`` its cosine
    similarity (any order). The rule:

    1. the ``k`` most similar neighbours (all when ``k`` is None) each vote for their subject
       with weight ``max(similarity, 0)``;
    2. the subject with the largest summed weight wins; a tie goes to the subject with the more
       similar best neighbour;
    3. the winner is accepted when its best similarity (comparable with a calibrated
       threshold) reaches ``threshold`` (always without one); otherwise the answer is
       *unknown* (None).

    Candidates are every voting subject, ranked as the vote ranks them (summed weight, then
    best similarity). ``k = 1`` is plain nearest neighbour.
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
    accepted = threshold is None or ranked[0].best >= threshold
    return (ranked[0] if accepted else None), ranked


@dataclass(frozen=True)
class KnnVote:
    """The k-NN vote's decision for each probe (see :func:`knn_vote`)."""

    subject: np.ndarray  # (P,) winning subject id (object array), whether accepted or not
    similarity: np.ndarray  # (P,) float: the winner's best cosine similarity among the k
    votes: np.ndarray  # (P,) float: the winner's summed (non-negative) similarity
    accepted: np.ndarray  # (P,) bool: similarity >= threshold (all True without a threshold)

    def decisions(self) -> list[object | None]:
        """Per probe: the accepted subject, or None for "unknown"."""
        return [s if a else None for s, a in zip(self.subject, self.accepted, strict=True)]


def score_rows(scores: np.ndarray) -> np.ndarray:
    """``scores`` as ``(P, G)`` rows (a single probe's ``(G,)`` row becomes one), float32 kept
    (it orders neighbours as float64 would), anything else as float64."""
    s = np.asarray(scores)
    if s.dtype != np.float32:
        s = s.astype(np.float64)
    if s.ndim == 1:
        return s[None, :]
    if s.ndim != 2:
        raise DataError(f"scores must be (probes, gallery) or (gallery,), got shape {s.shape}")
    return s


def nearest(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each probe's ``k`` most similar gallery entries of the ``(P, G)`` scores ``s``, best
    first: ``(indices, similarities)``, both ``(P, k)``. Equal similarities are taken and
    ordered by gallery position, as :func:`vote_neighbours` orders them (a stable sort by
    descending similarity)."""
    p, g = s.shape
    k = max(1, min(k, g))
    if k == g:
        chosen = np.tile(np.arange(g), (p, 1))
    else:
        chosen = np.argpartition(-s, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(s, chosen, axis=1).min(axis=1)
        tied = np.flatnonzero((s >= kth[:, None]).sum(axis=1) > k)
        if tied.size:  # rows where equal similarities compete for the last places
            t = s[tied]
            above = t > kth[tied, None]
            at = t == kth[tied, None]
            room = k - above.sum(axis=1)  # tied entries that fit, lowest index first
            take = above | (at & (np.cumsum(at, axis=1) <= room[:, None]))
            chosen[tied] = np.nonzero(take)[1].reshape(tied.size, k)
        chosen = np.sort(chosen, axis=1)  # gallery order, so the stable sort below keeps it
    order = np.argsort(-np.take_along_axis(s, chosen, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(chosen, order, axis=1)
    return idx, np.take_along_axis(s, idx, axis=1)


def _vote(codes: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`vote_neighbours`'s rule on every row at once: ``codes`` and ``sims`` are ``(P, k)``
    neighbours, best first. Returns the winner's position among them (its best neighbour),
    summed weight and best similarity, each ``(P,)``.

    The weights are summed neighbour by neighbour in the same order as the per-query rule, so
    the floating-point sums, and hence the ties, are the same.
    """
    p, k = codes.shape
    weight_of = np.maximum(sims, 0.0)
    same = codes[:, :, None] == codes[:, None, :]  # same[p, i, j]: i and j share a subject
    weight = np.zeros((p, k))
    for i in range(k):  # k is small; the loop runs over neighbours, not probes
        weight += np.where(same[:, i, :], weight_of[:, i : i + 1], 0.0)
    earlier = np.triu(np.ones((k, k), dtype=bool), 1)  # i < j
    first = ~(same & earlier[None]).any(axis=1)  # j is its subject's best neighbour
    # largest weight, then the more similar best neighbour, then the first in order
    top = np.where(first, weight, -np.inf).max(axis=1)
    cand = first & (weight == top[:, None])
    best = np.where(cand, sims, -np.inf).max(axis=1)
    cand &= sims == best[:, None]
    pos = np.argmax(cand, axis=1)
    rows = np.arange(p)
    return pos, weight[rows, pos], sims[rows, pos]


def knn_vote(
    scores: np.ndarray,
    subject_ids: np.ndarray | list,
    k: int = 5,
    threshold: float | None = None,
) -> KnnVote:
    """:func:`vote_neighbours` for every probe: the gallery's decision rule, evaluated.

    For each probe, the ``k`` most similar gallery entries vote (equal similarities taken in
    gallery order); the winner (see :func:`vote_neighbours` for the rule; applied to all probes
    at once by array operations) is accepted when its best similarity is
    ``>= threshold``, otherwise the probe is unknown (see :meth:`KnnVote.decisions`).
    ``scores`` may be ``(P, G)`` or a single probe's ``(G,)`` row. Subjects are told apart by
    their text (``1`` and ``"1"`` are one subject), as everywhere in evaluation.
    """
    s = score_rows(scores)  # a single (G,) row gives arrays of length 1
    subjects = np.asarray(subject_ids, dtype=object)
    if subjects.shape != (s.shape[1],):
        raise DataError(f"{subjects.size} subject ids for {s.shape[1]} gallery entries")
    if s.shape[1] == 0:
        raise DataError("the gallery is empty")
    _, first_idx, codes = np.unique(subjects.astype(str), return_index=True, return_inverse=True)
    originals = subjects[first_idx]
    idx, sims = nearest(s, k)
    sims = sims.astype(np.float64)  # the vote sums in float64, as the per-query rule
    neighbour_codes = codes[idx]
    pos, weight, best = _vote(neighbour_codes, sims)
    winner = neighbour_codes[np.arange(len(pos)), pos]
    return KnnVote(
        subject=originals[winner],
        similarity=best,
        votes=weight,
        accepted=np.ones(len(pos), dtype=bool) if threshold is None else best >= threshold,
    )
