"""Verification metrics on similarity scores: ROC, AUC, EER, TAR@FAR and k-fold accuracy.

Conventions used everywhere in marginface:

* a higher score means "more alike" (cosine similarity of L2-normalised embeddings);
* a pair is declared *same* when ``score >= threshold``;
* ``issame`` / labels are booleans, ``True`` for a matched (genuine) pair.

All functions are pure numpy and deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from marginface.decision.rates import far_key, parse_far
from marginface.errors import DataError

__all__ = [
    "DEFAULT_FARS",
    "FoldResult",
    "KFoldResult",
    "Roc",
    "TarAtFar",
    "accuracy_at",
    "auc",
    "best_threshold",
    "eer",
    "is_resolvable",
    "kfold_accuracy",
    "roc",
    "tar_at_far",
    "threshold_at_far",
]

#: The false-accept rates reported by default, as the keys used in reports and cards.
DEFAULT_FARS: tuple[str, ...] = ("1e-1", "1e-2", "1e-3", "1e-4")


def _as_scores_labels(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(issame).astype(bool).ravel()
    if s.shape != y.shape:
        raise DataError(f"scores ({s.size}) and labels ({y.size}) differ in length")
    if s.size == 0:
        raise DataError("no pairs to score")
    if not np.all(np.isfinite(s)):
        raise DataError("scores contain NaN or infinite values")
    return s, y


# --------------------------------------------------------------------------------------------
# ROC
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roc:
    """A receiver operating characteristic: one point per distinct score threshold.

    ``fpr[i]`` and ``tpr[i]`` are the rates of pairs with ``score >= thresholds[i]``. The first
    point is ``(0, 0)`` at threshold ``+inf``, as in scikit-learn's ``roc_curve``.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    n_positive: int
    n_negative: int


def roc(scores: np.ndarray, issame: np.ndarray) -> Roc:
    """The full ROC of ``scores`` against ``issame`` (equal to sklearn, no dropped points)."""
    s, y = _as_scores_labels(scores, issame)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            f"a ROC needs both matched and mismatched pairs "
            f"(got {n_pos} matched, {n_neg} mismatched)"
        )
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    # last index of each run of equal scores
    distinct = np.flatnonzero(np.diff(s_sorted)) if s.size > 1 else np.array([], dtype=np.int64)
    ends = np.r_[distinct, s.size - 1]
    tps = np.cumsum(y_sorted)[ends]
    fps = (ends + 1) - tps
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thresholds = np.r_[np.inf, s_sorted[ends]]
    return Roc(fpr=fpr, tpr=tpr, thresholds=thresholds, n_positive=n_pos, n_negative=n_neg)


def _curve(scores_or_roc: np.ndarray | Roc, issame: np.ndarray | None) -> Roc:
    """``scores_or_roc`` itself when it is a ROC, else the ROC of the scores and ``issame``."""
    if isinstance(scores_or_roc, Roc):
        return scores_or_roc
    if issame is None:
        raise TypeError("issame is required with scores (it may be left out with a Roc)")
    return roc(scores_or_roc, issame)


def auc(scores_or_roc: np.ndarray | Roc, issame: np.ndarray | None = None) -> float:
    """Area under the ROC (trapezoidal; ties count one half, as in ``roc_auc_score``)."""
    curve = _curve(scores_or_roc, issame)
    return float(np.trapezoid(curve.tpr, curve.fpr))


def eer(scores_or_roc: np.ndarray | Roc, issame: np.ndarray | None = None) -> tuple[float, float]:
    """The equal error rate and a threshold that reaches it: ``(eer, threshold)``.

    The EER is where the false-accept rate equals the false-reject rate ``1 - TPR``, found by
    linear interpolation between the two ROC points that bracket the crossing.
    """
    curve = _curve(scores_or_roc, issame)
    fpr, fnr = curve.fpr, 1.0 - curve.tpr
    diff = fnr - fpr  # decreasing from 1 to -1 along the curve
    i = int(np.flatnonzero(diff <= 0)[0])
    if diff[i] == 0 or i == 0:
        th = curve.thresholds[i]
        return float(fpr[i]), float(th if np.isfinite(th) else curve.thresholds[1])
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1)  # in (0, 1]
    rate = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    t0 = curve.thresholds[i - 1] if np.isfinite(curve.thresholds[i - 1]) else curve.thresholds[i]
    th = t0 + w * (curve.thresholds[i] - t0)
    return float(rate), float(th)


# --------------------------------------------------------------------------------------------
# Thresholds and accuracy
# --------------------------------------------------------------------------------------------


def accuracy_at(scores: np.ndarray, issame: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided correctly by ``score >= threshold``."""
    s, y = _as_scores_labels(scores, issame)
    return float(np.mean((s >= threshold) == y))


def best_threshold(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """The threshold with the highest accuracy on these pairs: ``(threshold, accuracy)``.

    Candidates are the midpoints between consecutive distinct scores, plus one point below the
    lowest and one above the highest score, so the chosen threshold never sits exactly on an
    observed score. Where several candidates tie, the median one of them is taken.
    """
    s, y = _as_scores_labels(scores, issame)
    u = np.unique(s)
    span = max(float(u[-1] - u[0]), 1.0)
    candidates: np.ndarray = np.r_[u[0] - 1e-3 * span, (u[:-1] + u[1:]) / 2.0, u[-1] + 1e-3 * span]
    # pairs with score >= c: count of positives / negatives for each candidate, via sorting
    pos = np.sort(s[y])
    neg = np.sort(s[~y])
    tp = pos.size - np.searchsorted(pos, candidates, side="left")
    tn = np.searchsorted(neg, candidates, side="left")
    acc = (tp + tn) / s.size
    best = np.flatnonzero(acc == acc.max())
    k = int(best[(best.size - 1) // 2])
    return float(candidates[k]), float(acc[k])


@dataclass(frozen=True)
class FoldResult:
    """One held-out fold: the threshold chosen on the other folds and the accuracy it reached."""

    fold: int
    threshold: float
    train_accuracy: float
    accuracy: float
    n_pairs: int


@dataclass(frozen=True)
class KFoldResult:
    """Cross-validated verification accuracy (fractions in ``[0, 1]``)."""

    folds: list[FoldResult] = field(default_factory=list)

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([f.accuracy for f in self.folds])

    @property
    def mean(self) -> float:
        """Mean held-out accuracy."""
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        """Standard deviation of the held-out accuracies (population, ``ddof=0``, as LFW)."""
        return float(self.accuracies.std())

    @property
    def thresholds(self) -> np.ndarray:
        return np.array([f.threshold for f in self.folds])


def kfold_accuracy(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """Accuracy with the threshold chosen on all other folds and applied to each held-out fold.

    ``folds`` gives each pair's fold id (for LFW-format pairs files, the fold of its line, which
    keeps the folds identity-disjoint). Every fold is held out once, in increasing id order.
    """
    s, y = _as_scores_labels(scores, issame)
    f = np.asarray(folds).ravel()
    if f.shape != s.shape:
        raise DataError(f"fold ids ({f.size}) and scores ({s.size}) differ in length")
    ids = np.unique(f)
    if ids.size < 2:
        raise DataError("k-fold accuracy needs at least two folds")
    results = []
    for fold in ids:
        test = f == fold
        th, train_acc = best_threshold(s[~test], y[~test])
        acc = float(np.mean((s[test] >= th) == y[test]))
        results.append(
            FoldResult(
                fold=int(fold),
                threshold=th,
                train_accuracy=train_acc,
                accuracy=acc,
                n_pairs=int(test.sum()),
            )
        )
    return KFoldResult(folds=results)


# --------------------------------------------------------------------------------------------
# TAR at FAR
# --------------------------------------------------------------------------------------------


def is_resolvable(n_negative: int, far: float | str) -> bool:
    """Whether ``n_negative`` impostor pairs can resolve a false-accept rate of ``far``.

    The rule: at least ``1 / far`` negatives, so the threshold is set by at least one
    observed false accept rather than by the absence of any (``n_negative * far >= 1``).
    """
    return n_negative * parse_far(far) >= 1.0 - 1e-9


def threshold_at_far(negative_scores: np.ndarray, far: float | str) -> float:
    """The lowest threshold at which at most ``floor(far * n)`` negatives reach ``score >= t``.

    The threshold is placed halfway between the highest rejected negative and the next higher
    negative score (or just above it when there is none), so the observed false-accept rate is
    ``floor(far * n) / n <= far``. Raises :class:`DataError` when ``far`` is not resolvable
    (see :func:`is_resolvable`).
    """
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64).ravel())[::-1]
    rate = parse_far(far)
    if not is_resolvable(neg.size, rate):
        raise DataError(
            f"FAR={far_key(rate)} needs at least {math.ceil(1 / rate - 1e-9)} negative pairs, "
            f"got {neg.size}"
        )
    allowed = math.floor(neg.size * rate + 1e-9)
    if allowed >= neg.size:
        return float(neg[-1])
    v = neg[allowed]  # the highest negative that must be rejected
    higher = neg[:allowed][neg[:allowed] > v]
    if higher.size:
        return float((v + higher[-1]) / 2.0)
    return float(np.nextafter(v, np.inf))


@dataclass(frozen=True)
class TarAtFar:
    """True-accept rate at a target false-accept rate, or the reason it is not resolvable."""

    far: str
    tar: float | None
    threshold: float | None
    observed_far: float | None
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "far": self.far,
            "tar": self.tar,
            "threshold": self.threshold,
            "observed_far": self.observed_far,
            "reason": self.reason,
        }


def tar_at_far(
    scores: np.ndarray, issame: np.ndarray, fars: tuple[str | float, ...] = DEFAULT_FARS
) -> dict[str, TarAtFar]:
    """TAR at each target FAR, keyed by :func:`~marginface.decision.rates.far_key`;
    unresolvable ones carry a reason."""
    s, y = _as_scores_labels(scores, issame)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        raise DataError("TAR@FAR needs both matched and mismatched pairs")
    out: dict[str, TarAtFar] = {}
    for far in fars:
        key = far_key(far)
        rate = parse_far(far)
        if not is_resolvable(neg.size, rate):
            need = math.ceil(1 / rate - 1e-9)
            out[key] = TarAtFar(
                far=key,
                tar=None,
                threshold=None,
                observed_far=None,
                reason=f"not resolvable: needs at least {need} mismatched pairs, has {neg.size}",
            )
            continue
        th = threshold_at_far(neg, rate)
        out[key] = TarAtFar(
            far=key,
            tar=float(np.mean(pos >= th)),
            threshold=th,
            observed_far=float(np.mean(neg >= th)),
        )
    return out
