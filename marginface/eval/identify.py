"""Identification metrics: the k-NN vote decision rule, rank-k / CMC and open-set DIR.

:func:`vote_neighbours` is the k-NN vote itself, on one query's neighbours: the gallery and the
service decide with it (as ``marginface.gallery.knn_vote``), and :func:`knn_vote` and
:func:`subject_ranks` apply it to every probe of an evaluation, so what ``eval identify``
measures is what the service decides.

Shapes: ``scores`` is ``(P, G)`` cosine similarities of P probes against G gallery entries,
``subject_ids`` is ``(G,)`` the subject of each gallery entry (any hashable values). Several
gallery entries may belong to one subject.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from marginface.errors import DataError
from marginface.eval.metrics import far_key, is_resolvable, parse_far, threshold_at_far

__all__ = [
    "DEFAULT_FPIRS",
    "KnnVote",
    "VoteResult",
    "cmc",
    "dir_at_fpir",
    "knn_vote",
    "open_set_rates",
    "subject_ranks",
    "vote_neighbours",
]

#: False-positive identification rates reported for open-set identification.
DEFAULT_FPIRS: tuple[str, ...] = ("1e-2", "1e-1")


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


def _as_2d(scores: np.ndarray) -> tuple[np.ndarray, bool]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        return s[None, :], True
    if s.ndim != 2:
        raise DataError(f"scores must be (probes, gallery) or (gallery,), got shape {s.shape}")
    return s, False


def _nearest(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each probe's ``k`` most similar gallery entries, best first: ``(indices, similarities)``,
    both ``(P, k)``."""
    k = max(1, min(k, s.shape[1]))
    part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.tile(
        np.arange(s.shape[1]), (s.shape[0], 1)
    )
    part_scores = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(s, idx, axis=1)


def knn_vote(
    scores: np.ndarray,
    subject_ids: np.ndarray | list,
    k: int = 5,
    threshold: float | None = None,
) -> KnnVote:
    """:func:`vote_neighbours` for every probe: the gallery's decision rule, evaluated.

    For each probe, the ``k`` most similar gallery entries vote; the winner (see
    :func:`vote_neighbours` for the rule) is accepted when its best similarity is
    ``>= threshold``, otherwise the probe is unknown (see :meth:`KnnVote.decisions`).
    ``scores`` may be ``(P, G)`` or a single probe's ``(G,)`` row. Subjects are told apart by
    their text (``1`` and ``"1"`` are one subject), as everywhere in evaluation.
    """
    s, _ = _as_2d(scores)  # a single (G,) row gives arrays of length 1
    subjects = np.asarray(subject_ids, dtype=object)
    if subjects.shape != (s.shape[1],):
        raise DataError(f"{subjects.size} subject ids for {s.shape[1]} gallery entries")
    if s.shape[1] == 0:
        raise DataError("the gallery is empty")
    _, first_idx, codes = np.unique(
        subjects.astype(str), return_index=True, return_inverse=True
    )
    originals = subjects[first_idx]
    idx, sims = _nearest(s, k)
    decisions = [vote_neighbours(codes[row].tolist(), row_sims.tolist(), threshold)
                 for row, row_sims in zip(idx, sims, strict=True)]
    winners = [ranked[0] for _, ranked in decisions]
    return KnnVote(
        subject=originals[np.array([w.subject for w in winners], dtype=np.intp)],
        similarity=np.array([w.best for w in winners], dtype=np.float64),
        votes=np.array([w.weight for w in winners], dtype=np.float64),
        accepted=np.array([winner is not None for winner, _ in decisions], dtype=bool),
    )


def _subject_best(s: np.ndarray, codes: np.ndarray, n_subjects: int) -> np.ndarray:
    """(P, S) best similarity of each probe to each subject."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_codes) != 0])
    best = np.full((s.shape[0], n_subjects), -np.inf)
    best[:, sorted_codes[starts]] = np.maximum.reduceat(s[:, order], starts, axis=1)
    return best


def subject_ranks(
    scores: np.ndarray,
    subject_ids: np.ndarray | list,
    true_subjects: np.ndarray | list,
    k: int = 1,
) -> np.ndarray:
    """The rank (1 = first) of each probe's true subject under the k-NN vote rule.

    Subjects that receive votes from the ``k`` nearest neighbours come first, ordered as
    :func:`knn_vote` orders them (summed weight, then best similarity); all other subjects
    follow, ordered by their best similarity. ``k = 1`` is the usual nearest-neighbour ranking
    by best similarity per subject. A true subject absent from the gallery gets rank ``inf``;
    ties are resolved in the probe's favour.
    """
    s, _ = _as_2d(scores)
    subjects = np.asarray(subject_ids, dtype=object).astype(str)
    truth = np.asarray(true_subjects, dtype=object).astype(str)
    if truth.shape != (s.shape[0],):
        raise DataError(f"{truth.size} true subjects for {s.shape[0]} probes")
    uniq, codes = np.unique(subjects, return_inverse=True)
    pos = np.searchsorted(uniq, truth)
    pos = np.clip(pos, 0, uniq.size - 1)
    present = uniq[pos] == truth
    best = _subject_best(s, codes, uniq.size)  # (P, S)
    rows = np.arange(s.shape[0])
    true_best = best[rows, pos]
    ranks = np.full(s.shape[0], np.inf)
    if k <= 1:
        ranks = 1.0 + (best > true_best[:, None]).sum(axis=1)
    else:
        idx, sims = _nearest(s, k)
        for p in range(s.shape[0]):
            _, ranked = vote_neighbours(codes[idx[p]].tolist(), sims[p].tolist())
            true = next((r for r in ranked if r.subject == pos[p]), None)
            if true is not None:
                ranks[p] = 1 + sum((r.weight, r.best) > (true.weight, true.best) for r in ranked)
            else:
                others = np.ones(uniq.size, bool)
                others[np.array([r.subject for r in ranked], dtype=np.intp)] = False
                ranks[p] = len(ranked) + 1 + np.sum(best[p, others] > true_best[p])
    ranks[~present] = np.inf
    return ranks


def cmc(ranks: np.ndarray, max_rank: int | None = None) -> np.ndarray:
    """Cumulative match characteristic: ``cmc[r - 1]`` = fraction of probes with rank ``<= r``."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise DataError("no probes to rank")
    finite = r[np.isfinite(r)]
    top = max_rank or int(finite.max() if finite.size else 1)
    return np.array([np.mean(r <= i) for i in range(1, top + 1)])


@dataclass(frozen=True)
class OpenSetPoint:
    """Detection-and-identification rate at one false-positive identification rate."""

    fpir: str
    tpir: float | None
    threshold: float | None
    observed_fpir: float | None
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "fpir": self.fpir,
            "tpir": self.tpir,
            "threshold": self.threshold,
            "observed_fpir": self.observed_fpir,
            "reason": self.reason,
        }


def open_set_rates(
    mated_scores: np.ndarray,
    mated_correct: np.ndarray,
    nonmated_scores: np.ndarray,
    threshold: float,
) -> tuple[float, float]:
    """``(TPIR, FPIR)`` at a threshold on the decision similarity.

    TPIR: mated probes whose top decision is the right subject with similarity ``>= threshold``.
    FPIR: non-mated probes (people not in the gallery) whose top decision reaches the threshold,
    i.e. the false-alarm rate.
    """
    m = np.asarray(mated_scores, dtype=np.float64)
    c = np.asarray(mated_correct, dtype=bool)
    n = np.asarray(nonmated_scores, dtype=np.float64)
    tpir = float(np.mean(c & (m >= threshold))) if m.size else float("nan")
    fpir = float(np.mean(n >= threshold)) if n.size else float("nan")
    return tpir, fpir


def dir_at_fpir(
    mated_scores: np.ndarray,
    mated_correct: np.ndarray,
    nonmated_scores: np.ndarray,
    fpirs: tuple[str | float, ...] = DEFAULT_FPIRS,
) -> dict[str, OpenSetPoint]:
    """DIR (TPIR) at each target FPIR, with the threshold set on the non-mated probes.

    The threshold for a target FPIR follows :func:`marginface.eval.metrics.threshold_at_far`,
    and the same resolvability rule applies: at least ``1 / FPIR`` non-mated probes.
    """
    nonmated = np.asarray(nonmated_scores, dtype=np.float64)
    out: dict[str, OpenSetPoint] = {}
    for f in fpirs:
        key = far_key(f)
        rate = parse_far(f)
        if not is_resolvable(nonmated.size, rate):
            need = math.ceil(1 / rate - 1e-9)
            out[key] = OpenSetPoint(
                fpir=key, tpir=None, threshold=None, observed_fpir=None,
                reason=f"not resolvable: needs at least {need} non-mated probes, "
                f"has {nonmated.size}",
            )
            continue
        th = threshold_at_far(nonmated, rate)
        tpir, fpir = open_set_rates(mated_scores, mated_correct, nonmated, th)
        out[key] = OpenSetPoint(fpir=key, tpir=tpir, threshold=th, observed_fpir=fpir)
    return out
