"""Evaluation: verification and identification protocols, metrics, threshold calibration.

* Pure metrics on scores (:mod:`marginface.eval.metrics`): :func:`roc`, :func:`auc`,
  :func:`eer`, :func:`tar_at_far`, :func:`kfold_accuracy`, :func:`best_threshold`.
* Identification metrics (:mod:`marginface.eval.search_metrics`): :func:`subject_ranks`,
  :func:`cmc`, :func:`dir_at_fpir`, FNIR at FPIR. The decision they measure, the k-NN vote and
  the operating points, is :mod:`marginface.decision`'s (what the gallery decides with).
* Calibration (:mod:`marginface.eval.calibrate`): :func:`calibrate` -> ``Calibration`` (1:1
  thresholds) for the card; the impostor table of the card
  (:func:`marginface.eval.openset.measure_impostors`).
* Protocol runners: :func:`marginface.eval.pairs.load_pairs`,
  :func:`marginface.eval.verify.verify`, :func:`marginface.eval.identification.identify_folder`
  and :func:`~marginface.eval.identification.identify_lists`.
"""

from marginface.eval.calibrate import CALIBRATION_FARS, calibrate
from marginface.eval.metrics import (
    DEFAULT_FARS,
    auc,
    best_threshold,
    eer,
    kfold_accuracy,
    roc,
    tar_at_far,
    threshold_at_far,
)
from marginface.eval.search_metrics import cmc, dir_at_fpir, subject_ranks

__all__ = [
    "CALIBRATION_FARS",
    "DEFAULT_FARS",
    "auc",
    "best_threshold",
    "calibrate",
    "cmc",
    "dir_at_fpir",
    "eer",
    "kfold_accuracy",
    "roc",
    "subject_ranks",
    "tar_at_far",
    "threshold_at_far",
]
