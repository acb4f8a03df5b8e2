"""Identification's decision rules, below both the gallery (which decides with them) and
evaluation (which measures them), so that what ``eval identify`` measures is what the service
decides.

* :mod:`~marginface.decision.policy` - :class:`IdentificationPolicy` (target FPIR or explicit
  threshold, ``k``, verification's FAR), built once from the settings and handed to the
  gallery, the recogniser and the cameras; :func:`resolve_target`, the one precedence rule
  (request > settings > gallery > default, an explicit threshold before any target FPIR);
  :func:`resolve_threshold`, the 1:1 threshold.
* :mod:`~marginface.decision.operating_point` - the card's impostor table read for a gallery:
  :func:`operating_point` (the threshold meeting a target FPIR), :func:`expected_fpir`,
  :class:`GalleryComposition`, :class:`OperatingPoint`, :func:`require_impostors`.
* :mod:`~marginface.decision.vote` - the k-NN vote: :func:`vote_neighbours` (one query) and
  :func:`knn_vote` (every probe of a score matrix at once, the same rule).
* :mod:`~marginface.decision.rates` - :func:`far_key` / :func:`parse_far`, the one reading of
  a rate's text (``0.001`` and ``"1e-3"`` are one target).

It imports only :mod:`marginface.card` and :mod:`marginface.errors` (and numpy).
"""

from marginface.decision.operating_point import (
    DEFAULT_FPIR,
    GalleryComposition,
    OperatingPoint,
    expected_fpir,
    far_threshold,
    operating_point,
    require_impostors,
)
from marginface.decision.policy import (
    DEFAULT_K,
    IdentificationPolicy,
    Origin,
    Target,
    fpir_key,
    one_to_one_threshold,
    resolve_target,
    resolve_threshold,
)
from marginface.decision.rates import far_key, parse_far
from marginface.decision.vote import KnnVote, VoteResult, knn_vote, vote_neighbours

__all__ = [
    "DEFAULT_FPIR",
    "DEFAULT_K",
    "GalleryComposition",
    "IdentificationPolicy",
    "KnnVote",
    "OperatingPoint",
    "Origin",
    "Target",
    "VoteResult",
    "expected_fpir",
    "far_key",
    "far_threshold",
    "fpir_key",
    "knn_vote",
    "one_to_one_threshold",
    "operating_point",
    "parse_far",
    "require_impostors",
    "resolve_target",
    "resolve_threshold",
    "vote_neighbours",
]
