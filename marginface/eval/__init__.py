"""Evaluation: verification and identification protocols, metrics, threshold calibration.

* Pure metrics on scores (:mod:`marginface.eval.metrics`): :func:`roc`, :func:`auc`,
  :func:`eer`, :func:`tar_at_far`, :func:`kfold_accuracy`, :func:`best_threshold`.
* Identification (:mod:`marginface.eval.identify`): :func:`vote_neighbours` (the k-NN vote,
  the gallery's decision rule: ``marginface.gallery.knn_vote`` is this function),
  :func:`knn_vote` (the vote for every probe), :func:`subject_ranks`, :func:`cmc`,
  :func:`dir_at_fpir`.
* Calibration (:mod:`marginface.eval.calibrate`): :func:`calibrate` -> ``Calibration`` for the
  card, and :func:`require_threshold`, which the gallery and the service use to get a threshold.
* Protocol runners: :func:`marginface.eval.pairs.load_pairs`,
  :func:`marginface.eval.verify.verify`, :func:`marginface.eval.identification.identify`.
"""

from marginface.eval.calibrate import (
    CALIBRATION_FARS,
    UncalibratedThresholdWarning,
    calibrate,
    require_threshold,
)
from marginface.eval.identify import (
    KnnVote,
    VoteResult,
    cmc,
    dir_at_fpir,
    knn_vote,
    subject_ranks,
    vote_neighbours,
)
from marginface.eval.metrics import (
    DEFAULT_FARS,
    auc,
    best_threshold,
    eer,
    far_key,
    kfold_accuracy,
    roc,
    tar_at_far,
    threshold_at_far,
)

__all__ = [
    "CALIBRATION_FARS",
    "DEFAULT_FARS",
    "KnnVote",
    "UncalibratedThresholdWarning",
    "VoteResult",
    "auc",
    "best_threshold",
    "calibrate",
    "cmc",
    "dir_at_fpir",
    "eer",
    "far_key",
    "kfold_accuracy",
    "knn_vote",
    "require_threshold",
    "roc",
    "subject_ranks",
    "tar_at_far",
    "threshold_at_far",
    "vote_neighbours",
]
