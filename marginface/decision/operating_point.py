"""Open-set operating points: the threshold that keeps a gallery's false positive
identification rate (FPIR) at a target, for the gallery as it is, read from the model card's
impostor table.

A 1:1 threshold is chosen for one comparison. A search compares a stranger with every
enrolled subject and falsely identifies them when *any* subject passes, so at a fixed threshold
the false-alarm rate grows with the gallery. The card's impostor table
(:class:`marginface.card.ImpostorTail`, measured once per model by
:func:`marginface.eval.openset.measure_impostors`) holds, per threshold, the expected FPIR of
galleries of ``N`` one-face subjects (and of subjects of 2, 3 and 5 faces: a subject's score is
its best face's, so more faces are passed more often).

A gallery's :class:`GalleryComposition` (how many subjects have how many faces) is turned, per
threshold, into the number of one-face subjects with the same expected FPIR
(:func:`expected_fpir`), and :func:`operating_point` finds the lowest threshold whose expected
FPIR is at most the target. :func:`far_threshold` reads the 1:1 threshold at a false-accept
rate from the same table.

Vocabulary (NIST FRVT 1:N): *mated* searches are of enrolled people, *non-mated* of people who
are not. FPIR is the share of non-mated searches that return any subject; FNIR the share of
mated searches that do not return the right subject above the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from marginface.card import ImpostorTail, ModelCard
from marginface.decision.rates import parse_far
from marginface.errors import ModelError

__all__ = [
    "DEFAULT_FPIR",
    "GalleryComposition",
    "OperatingPoint",
    "expected_fpir",
    "far_threshold",
    "operating_point",
    "require_impostors",
]

#: The default operating point of identification: 1 stranger in 100 identified as someone.
DEFAULT_FPIR = "1e-2"


@dataclass(frozen=True)
class GalleryComposition:
    """How many enrolled subjects have how many faces (subjects without faces never match)."""

    subjects_by_faces: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def uniform(cls, subjects: int, faces_per_subject: int = 1) -> GalleryComposition:
        """``subjects`` subjects of ``faces_per_subject`` faces each."""
        return cls({int(faces_per_subject): int(subjects)} if subjects > 0 else {})

    @classmethod
    def of_counts(cls, faces_per_subject: Sequence[int]) -> GalleryComposition:
        """From each subject's number of faces."""
        counts: dict[int, int] = {}
        for k in faces_per_subject:
            if int(k) > 0:
                counts[int(k)] = counts.get(int(k), 0) + 1
        return cls(counts)

    @property
    def subjects(self) -> int:
        """Subjects with at least one face."""
        return sum(n for k, n in self.subjects_by_faces.items() if k > 0)

    @property
    def faces(self) -> int:
        """Faces in all."""
        return sum(k * n for k, n in self.subjects_by_faces.items() if k > 0)


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold a search decides with, and how it was chosen."""

    threshold: float
    source: Literal["fpir", "threshold"]  # from a target FPIR, or an explicit threshold
    target_fpir: float | None  # None for an explicit threshold
    expected_fpir: float | None  # the card's prediction at this threshold for this gallery
    gallery_subjects: int
    gallery_faces: int
    note: str = ""  # e.g. beyond what the calibration resolves

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used in every answer."""
        return {
            "threshold": round(self.threshold, 6),
            "source": self.source,
            "target_fpir": self.target_fpir,
            "expected_fpir": None
            if self.expected_fpir is None
            else float(f"{self.expected_fpir:.3g}"),
            "gallery_subjects": self.gallery_subjects,
            "gallery_faces": self.gallery_faces,
            "note": self.note or None,
        }


def require_impostors(card: ModelCard | None) -> ImpostorTail:
    """The card's impostor table, or :class:`ModelError` saying how to measure it."""
    if card is None or card.impostors is None:
        name = card.name if card is not None else "this model"
        raise ModelError(
            f"model {name!r} has no impostor calibration in its card, so no threshold can be "
            "derived from a target FPIR: run `marginface calibrate --model MODEL --impostors "
            "DIR --aligned --write` on identities the model was not trained on (e.g. "
            "../shared/data/celeba-train-112), or give an explicit threshold"
        )
    return card.impostors


def _table(tail: ImpostorTail, k: int) -> np.ndarray:
    if k == 1 or str(k) not in tail.log10_fpir_by_faces:
        return np.asarray(tail.log10_fpir, dtype=np.float64)
    return np.asarray(tail.log10_fpir_by_faces[str(k)], dtype=np.float64)


def _along(table: np.ndarray, log_sizes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log10 FPIR of each threshold's row of ``table`` at log10 gallery size ``x[i]`` (the
    last slope beyond the table, never above certainty)."""
    j = np.clip(np.searchsorted(log_sizes, x, side="right") - 1, 0, log_sizes.size - 2)
    rows = np.arange(table.shape[0])
    lo, hi = table[rows, j], table[rows, j + 1]
    frac = (x - log_sizes[j]) / (log_sizes[j + 1] - log_sizes[j])
    inside = lo + (hi - lo) * np.clip(frac, 0.0, None)  # below one subject: the first column
    inside = np.where(x < log_sizes[0], table[:, 0], inside)
    return np.minimum(inside, 0.0)


def _inverse(table: np.ndarray, log_sizes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per threshold, the log10 number of one-face subjects whose log10 FPIR is ``y[i]``."""
    r = np.maximum.accumulate(table + np.arange(table.shape[1]) * 1e-9, axis=1)
    rows = np.arange(table.shape[0])
    j = np.clip((r < y[:, None]).sum(axis=1) - 1, 0, log_sizes.size - 2)
    lo, hi = r[rows, j], r[rows, j + 1]
    x = log_sizes[j] + (y - lo) / np.maximum(hi - lo, 1e-12) * (log_sizes[j + 1] - log_sizes[j])
    x = np.where(y <= r[:, 0], log_sizes[0] + (y - r[:, 0]), x)  # fewer than one: ~proportional
    slope = (r[:, -1] - r[:, -2]) / (log_sizes[-1] - log_sizes[-2])
    beyond = log_sizes[-1] + (y - r[:, -1]) / np.maximum(slope, 1e-6)
    # beyond the table (nearly certain false alarms): at most a thousand times its largest
    return np.where(y > r[:, -1], np.minimum(beyond, log_sizes[-1] + 3), x)


def _equivalent(tail: ImpostorTail, k: int, n: int, log_sizes: np.ndarray) -> np.ndarray:
    """Per threshold, how many one-face subjects ``n`` subjects of ``k`` faces count as: the
    number with the same expected FPIR."""
    if k == 1:
        return np.full(len(tail.thresholds), float(n))
    known = sorted(int(x) for x in tail.log10_fpir_by_faces)
    if k not in known:
        below = [x for x in (1, *known) if x < k]
        above = [x for x in known if x > k]
        lo = below[-1]
        if not above:  # more faces than measured: proportional beyond the largest
            return _equivalent(tail, lo, n, log_sizes) * k / lo
        hi = above[0]
        e_lo = _equivalent(tail, lo, n, log_sizes)
        e_hi = _equivalent(tail, hi, n, log_sizes)
        return e_lo + (e_hi - e_lo) * (k - lo) / (hi - lo)
    y = _along(_table(tail, k), log_sizes, np.full(len(tail.thresholds), math.log10(n)))
    return np.where(y <= tail.floor + 1e-9, 0.0, 10 ** _inverse(_table(tail, 1), log_sizes, y))


def _log_fpir_curve(tail: ImpostorTail, composition: GalleryComposition) -> np.ndarray:
    """log10 expected FPIR at each of the card's thresholds for this gallery: each group of
    subjects with ``k`` faces counts as the number of one-face subjects with the same FPIR,
    and the counts add up."""
    log_sizes = np.log10(np.asarray(tail.gallery_sizes, dtype=np.float64))
    eff = np.zeros(len(tail.thresholds))
    for k, n in composition.subjects_by_faces.items():
        if k > 0 and n > 0:
            eff += _equivalent(tail, int(k), int(n), log_sizes)
    curve = _along(_table(tail, 1), log_sizes, np.log10(np.maximum(eff, 1e-300)))
    return np.where(eff <= 0, tail.floor, np.maximum(curve, tail.floor))


def expected_fpir(tail: ImpostorTail, threshold: float, composition: GalleryComposition) -> float:
    """The card's expected FPIR of this gallery at a cosine threshold (0 for an empty one)."""
    if composition.subjects == 0:
        return 0.0
    return _fpir_on(tail, _log_fpir_curve(tail, composition), threshold)


def _fpir_on(tail: ImpostorTail, curve: np.ndarray, threshold: float) -> float:
    """The expected FPIR at ``threshold`` on a gallery's log10 FPIR curve."""
    t = np.asarray(tail.thresholds, dtype=np.float64)
    if threshold <= t[0]:
        return float(10 ** curve[0])
    if threshold >= t[-1]:
        return 0.0
    value = float(np.interp(threshold, t, curve))
    return 0.0 if value <= tail.floor + 1e-9 else 10**value


def operating_point(
    tail: ImpostorTail, target_fpir: float | str, composition: GalleryComposition
) -> OperatingPoint:
    """The lowest threshold whose expected FPIR for this gallery is at most ``target_fpir``."""
    target = parse_far(target_fpir)
    subjects, faces = composition.subjects, composition.faces
    t = np.asarray(tail.thresholds, dtype=np.float64)
    if subjects == 0:
        return OperatingPoint(float(t[0]), "fpir", target, 0.0, 0, 0, "empty gallery")
    curve = _log_fpir_curve(tail, composition)
    goal = math.log10(target)
    ok = np.flatnonzero(curve <= goal + 1e-12)
    note = ""
    if ok.size == 0:  # pragma: no cover - the table ends above the highest impostor
        threshold = float(t[-1])
        note = "target below what the calibration resolves: highest threshold measured"
    elif ok[0] == 0:
        threshold = float(t[0])
        note = "target reached at the lowest threshold measured"
    else:
        i = int(ok[0])
        lo, hi = curve[i - 1], curve[i]
        if hi <= tail.floor + 1e-9:  # no impostor observed above t[i]: stay on the grid
            threshold = float(t[i])
            note = (
                "beyond what the calibration resolves: no calibration impostor reached "
                "this threshold"
            )
        else:
            frac = (goal - lo) / (hi - lo) if hi != lo else 1.0
            threshold = float(t[i - 1] + frac * (t[i] - t[i - 1]))
    expected = _fpir_on(tail, curve, threshold)
    # the resolution of the calibration: expected FPIR lower than one probe's share of it
    per_subject = target / max(subjects, 1)
    if not note and per_subject * tail.comparisons < 10:
        note = (
            f"extrapolated: the calibration's {tail.comparisons:,} comparisons resolve "
            f"this target only for smaller galleries"
        )
    return OperatingPoint(round(threshold, 6), "fpir", target, expected, subjects, faces, note)


def far_threshold(tail: ImpostorTail, far: float | str) -> float | None:
    """The 1:1 threshold at a false-accept rate from the card's impostor table (None when the
    calibration does not resolve it)."""
    if not tail.log10_far:
        return None
    goal = math.log10(parse_far(far))
    curve = np.asarray(tail.log10_far, dtype=np.float64)
    ok = np.flatnonzero(curve <= goal + 1e-12)
    if ok.size == 0 or curve[ok[0]] <= tail.floor + 1e-9 or ok[0] == 0:
        return None
    i = int(ok[0])
    frac = (goal - curve[i - 1]) / (curve[i] - curve[i - 1])
    t = tail.thresholds
    return round(float(t[i - 1] + frac * (t[i] - t[i - 1])), 6)
