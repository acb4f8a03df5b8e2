"""Threshold calibration: cosine thresholds for target false-accept rates, kept in the card.

:func:`calibrate` turns verification scores into a :class:`marginface.card.Calibration`.
:func:`require_threshold` is how the gallery and the service get the threshold to decide with:
the card's calibrated value by default, an explicit value only when given, and never a silent
magic number.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from marginface.card import Calibration, ModelCard
from marginface.errors import DataError, ModelError
from marginface.eval.metrics import far_key, is_resolvable, threshold_at_far

__all__ = [
    "CALIBRATION_FARS",
    "UncalibratedThresholdWarning",
    "calibrate",
    "require_threshold",
]

log = logging.getLogger(__name__)

#: Target false-accept rates written into a card by ``marginface calibrate``.
CALIBRATION_FARS: tuple[str, ...] = ("1e-2", "1e-3", "1e-4")


class UncalibratedThresholdWarning(UserWarning):
    """A decision threshold is used for a model that has no calibration for it."""


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


def require_threshold(
    card: ModelCard, far: str | float | None = None, explicit: float | None = None
) -> float:
    """The cosine threshold to decide with for a model.

    - ``explicit`` given: it is used. If the card has no calibration, an
      :class:`UncalibratedThresholdWarning` is issued (and logged), so nobody mistakes it for a
      calibrated value.
    - otherwise: the card's calibrated threshold for ``far`` (default: the card's
      ``default_far``). A card without calibration, or without that FAR, raises
      :class:`ModelError` saying how to calibrate.
    """
    cal = card.calibration
    if explicit is not None:
        threshold = float(explicit)
        if not -1.0 <= threshold <= 1.0:
            raise ModelError(f"a cosine threshold must lie in [-1, 1], got {threshold}")
        if cal is None or not cal.thresholds:
            msg = (
                f"model '{card.name}' is NOT calibrated: using the explicit threshold "
                f"{threshold:g}, whose false-accept rate is unknown. Run `marginface calibrate "
                f"--model ... --pairs ... --write` to calibrate it."
            )
            log.warning(msg)
            warnings.warn(msg, UncalibratedThresholdWarning, stacklevel=2)
        return threshold
    if cal is None or not cal.thresholds:
        raise ModelError(
            f"model '{card.name}' has no calibrated threshold: run `marginface calibrate "
            f"--model MODEL --pairs PAIRS --root ROOT --write`, or pass an explicit threshold"
        )
    key = far_key(far) if far is not None else cal.default_far
    if key not in cal.thresholds:
        raise ModelError(
            f"model '{card.name}' has no calibrated threshold for FAR={key} "
            f"(calibrated: {', '.join(cal.thresholds) or 'none'}); recalibrate on a set with at "
            f"least {round(1 / float(key))} mismatched pairs, or pass an explicit threshold"
        )
    return float(cal.thresholds[key])
