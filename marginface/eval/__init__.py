"""Evaluation: verification and identification protocols, metrics, threshold calibration.

* Pure metrics on scores (:mod:`marginface.eval.metrics`): :func:`roc`, :func:`auc`,
  :func:`eer`, :func:`tar_at_far`, :func:`kfold_accuracy`, :func:`best_threshold`.
* Identification (:mod:`marginface.eval.identify`): :func:`vote_neighbours` (the k-NN vote,
  the gallery's decision rule: ``marginface.gallery.knn_vote`` is this function),
  :func:`knn_vote` (the vote for every probe), :func:`subject_ranks`, :func:`cmc`,
  :func:`dir_at_fpir`.
* Calibration (:mod:`marginface.eval.calibrate`): :func:`calibrate` -> ``Calibration`` (1:1
  thresholds) for the card.
* Open-set operating points (:mod:`marginface.eval.openset`): the impostor table of the card
  (:func:`~marginface.eval.openset.measure_impostors`) and the threshold meeting a target FPIR
  for a gallery (:func:`~marginface.eval.openset.operating_point`), which the gallery uses.
* Protocol runners: :func:`marginface.eval.pairs.load_pairs`,
  :func:`marginface.eval.verify.verify`, :func:`marginface.eval.identification.identify_folder`
  and :func:`~marginface.eval.identification.identify_lists`.
"""

from marginface.eval.calibrate import CALIBRATION_FARS, calibrate
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
    "roc",
    "subject_ranks",
    "tar_at_far",
    "threshold_at_far",
    "vote_neighbours",
]
