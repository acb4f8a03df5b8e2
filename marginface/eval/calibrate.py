"""Threshold calibration: cosine thresholds for target false-accept rates, kept in the card.

:func:`calibrate` turns verification scores into a :class:`marginface.card.Calibration`.
The gallery and the service read the threshold to decide with through
:func:`marginface.gallery.resolve_threshold`: the card's calibrated value by default, an
explicit value only when given, and never a silent magic number.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from marginface.card import Calibration
from marginface.decision.rates import far_key
from marginface.errors import DataError
from marginface.eval.metrics import is_resolvable, threshold_at_far

__all__ = ["CALIBRATION_FARS", "calibrate"]

log = logging.getLogger(__name__)

#: Target false-accept rates written into a card by ``marginface calibrate``.
CALIBRATION_FARS: tuple[str, ...] = ("1e-2", "1e-3", "1e-4")


def calibrate(
    scores: np.ndarray,
    issame: np.ndarray,
    fars: tuple[str | float, ...] = CALIBRATION_FARS,
    *,
    dataset: str = "",
    default_far: str | float = "1e-3",
) -> Calibration:
    """Cosine thresholds at which the false-accept rate on these pairs is at most each target.

    Each threshold comes from :func:`marginface.eval.metrics.threshold_at_far` on the
    mismatched pairs. Targets the set cannot resolve (fewer than ``1 / FAR`` mismatched pairs)
    are left out. ``default_far`` becomes the card's default; when it is not resolvable the
    nearest resolvable target above it is used. Raises :class:`DataError` when no target is
    resolvable.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(issame, dtype=bool).ravel()
    if s.shape != y.shape:
        raise DataError(f"scores ({s.size}) and labels ({y.size}) differ in length")
    neg = s[~y]
    thresholds: dict[str, float] = {}
    for far in fars:
        if is_resolvable(neg.size, far):
            # rounded *up* to 6 decimals, so rounding can never admit an extra false accept
            th = float(threshold_at_far(neg, far))
            thresholds[far_key(far)] = math.ceil(th * 1e6 - 1e-6) / 1e6
    if not thresholds:
        raise DataError(
            f"{neg.size} mismatched pairs cannot resolve any of FAR "
            f"{', '.join(far_key(f) for f in fars)}; calibrate on a larger set"
        )
    default = far_key(default_far)
    if default not in thresholds:
        above = [k for k in thresholds if float(k) >= float(default)]
        default = min(above, key=float) if above else max(thresholds, key=float)
    return Calibration(
        thresholds=dict(sorted(thresholds.items(), key=lambda kv: -float(kv[0]))),
        default_far=default,
        dataset=dataset,
        n_pairs=int(s.size),
        n_negative_pairs=int(neg.size),
    )
