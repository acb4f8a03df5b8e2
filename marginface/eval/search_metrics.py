"""Identification metrics on search scores: rank-k / CMC and open-set FNIR/FPIR.

Ranks follow the gallery's decision rule, the k-NN vote of :mod:`marginface.decision.vote`
(:func:`subject_ranks` orders subjects as :func:`~marginface.decision.vote.vote_neighbours`
ranks them), so what ``eval identify`` measures is what the service decides.

Open-set vocabulary (NIST FRVT 1:N): a *mated* search is of an enrolled person, a *non-mated*
one of a person who is not. At a threshold ``t``, FPIR is the share of non-mated searches whose
top candidate scores ``>= t``; FNIR the share of mated searches whose top candidate is not the
right subject or scores ``< t``.

Shapes: ``scores`` is ``(P, G)`` cosine similarities of P probes against G gallery entries,
``subject_ids`` is ``(G,)`` the subject of each gallery entry (any hashable values). Several
gallery entries may belong to one subject.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from marginface.decision.rates import far_key, parse_far
from marginface.decision.vote import nearest, score_rows, vote_neighbours
from marginface.errors import DataError
from marginface.eval.metrics import threshold_at_far

__all__ = [
    "DEFAULT_FPIRS",
    "MIN_FALSE_POSITIVES",
    "REPORTED_FPIRS",
    "FnirAtFpir",
    "cmc",
    "dir_at_fpir",
    "fnir_at_fpir",
    "fnir_fpir_curve",
    "open_set_rates",
    "subject_ranks",
]

#: False-positive identification rates of :func:`dir_at_fpir`'s default.
DEFAULT_FPIRS: tuple[str, ...] = ("1e-2", "1e-1")

#: The FPIRs at which ``eval identify`` reports FNIR (each only where resolvable).
REPORTED_FPIRS: tuple[str, ...] = ("1e-1", "1e-2", "1e-3")

#: False positives an FNIR@FPIR figure must rest on: with fewer non-mated searches than
#: ``MIN_FALSE_POSITIVES / FPIR`` the threshold would be set by a handful of searches.
MIN_FALSE_POSITIVES = 10


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
    :func:`~marginface.decision.vote.knn_vote` orders them (summed weight, then best
    similarity); all other subjects follow, ordered by their best similarity. ``k = 1`` is
    the usual nearest-neighbour ranking by best similarity per subject. A true subject absent
    from the gallery gets rank ``inf``; ties are resolved in the probe's favour.
    """
    s = score_rows(scores)
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
        idx, sims = nearest(s, k)
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


@dataclass(frozen=True)
class FnirAtFpir:
    """FNIR at a target FPIR, the threshold on the non-mated searches that gives it, or why it
    is not resolvable."""

    fpir: str
    fnir: float | None
    threshold: float | None
    observed_fpir: float | None
    false_positives: int | None
    reason: str | None = None


def _fpir_threshold(
    nonmated: np.ndarray, fpir: str | float, min_false_positives: int, distinct: int | None = None
) -> tuple[float | None, str | None]:
    """The threshold for a target FPIR on these non-mated decision scores, or the reason why
    there is none: fewer than ``min_false_positives / FPIR`` searches (``distinct`` of them,
    when pooled draws search the same photos again)."""
    rate = parse_far(fpir)
    n = nonmated.size if distinct is None else min(int(distinct), nonmated.size)
    if n * rate < min_false_positives - 1e-9:
        need = math.ceil(min_false_positives / rate - 1e-9)
        what = "non-mated searches" if distinct is None else "different non-mated photos"
        return None, f"not resolvable: needs at least {need} {what}, has {n}"
    return threshold_at_far(nonmated, rate), None


def fnir_at_fpir(
    mated_scores: np.ndarray,
    mated_correct: np.ndarray,
    nonmated_scores: np.ndarray,
    fpirs: tuple[str | float, ...] = REPORTED_FPIRS,
    min_false_positives: int = MIN_FALSE_POSITIVES,
    distinct: int | None = None,
) -> dict[str, FnirAtFpir]:
    """FNIR at each target FPIR, keyed by :func:`marginface.decision.rates.far_key`.

    The threshold is placed on the non-mated searches' decision scores as
    :func:`marginface.eval.metrics.threshold_at_far` places a FAR threshold (at most
    ``floor(FPIR * n)`` of them reach it); a target is resolvable only with at least
    ``min_false_positives / FPIR`` non-mated searches (``distinct``: how many of them are
    different photos, when pooled draws repeat some), else its FNIR is None with the reason.
    FNIR counts the mated searches that are not correct or score below the threshold.
    """
    m = np.asarray(mated_scores, dtype=np.float64)
    nonmated = np.asarray(nonmated_scores, dtype=np.float64)
    out: dict[str, FnirAtFpir] = {}
    for f in fpirs:
        key = far_key(f)
        th, reason = _fpir_threshold(nonmated, f, min_false_positives, distinct)
        if reason is None and m.size == 0:
            reason = "no mated searches"
        if th is None or reason is not None:
            out[key] = FnirAtFpir(key, None, th, None, None, reason)
            continue
        tpir, fpir = open_set_rates(m, mated_correct, nonmated, th)
        out[key] = FnirAtFpir(key, 1.0 - tpir, th, fpir, int(np.sum(nonmated >= th)))
    return out


def fnir_fpir_curve(
    mated_scores: np.ndarray,
    mated_correct: np.ndarray,
    nonmated_scores: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The FNIR-vs-FPIR trade-off swept over the threshold: ``(thresholds, fpir, fnir)``.

    One point per distinct (finite) non-mated decision score ``u``, highest first: the
    threshold admits the searches scoring ``>= u`` and is placed as
    :func:`marginface.eval.metrics.threshold_at_far` places it, halfway down to the next lower
    non-mated score (the lowest: at it), so each point is the FNIR that :func:`fnir_at_fpir`
    reports at that FPIR. FPIR rises from ``1 / n``.
    """
    m = np.asarray(mated_scores, dtype=np.float64)
    c = np.asarray(mated_correct, dtype=bool)
    n = np.asarray(nonmated_scores, dtype=np.float64)
    if m.size == 0 or n.size == 0:
        raise DataError("the FNIR/FPIR curve needs mated and non-mated searches")
    u = np.unique(n[np.isfinite(n)])[::-1]
    t = np.r_[(u[:-1] + u[1:]) / 2.0, u[-1:]]
    n_sorted = np.sort(n)
    hits = np.sort(np.where(c, m, -np.inf))
    fpir = np.asarray(n.size - np.searchsorted(n_sorted, t, side="left")) / n.size
    fnir = 1.0 - np.asarray(m.size - np.searchsorted(hits, t, side="left")) / m.size
    return t, fpir, fnir


def dir_at_fpir(
    mated_scores: np.ndarray,
    mated_correct: np.ndarray,
    nonmated_scores: np.ndarray,
    fpirs: tuple[str | float, ...] = DEFAULT_FPIRS,
) -> dict[str, OpenSetPoint]:
    """DIR (TPIR = 1 - FNIR) at each target FPIR: :func:`fnir_at_fpir` under the rule of
    verification's TAR@FAR (resolvable from ``1 / FPIR`` non-mated probes)."""
    points = fnir_at_fpir(
        mated_scores, mated_correct, nonmated_scores, fpirs, min_false_positives=1
    )
    return {
        key: OpenSetPoint(
            fpir=key,
            tpir=None if p.fnir is None else 1.0 - p.fnir,
            threshold=p.threshold,
            observed_fpir=p.observed_fpir,
            reason=p.reason,
        )
        for key, p in points.items()
    }
