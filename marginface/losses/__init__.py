"""Margin losses for face recognition by learned similarity.

Classification heads (``head(embeddings, labels) -> loss``, weights ``(num_classes, dim)``):
:class:`Softmax`, :class:`NormFace`, :class:`SphereFace`, :class:`CosFace`, :class:`ArcFace`,
:class:`CombinedMargin`, :class:`SubCenterArcFace`. Metric losses: :class:`TripletLoss`
(online all / batch-hard / semi-hard mining), :class:`CenterLoss`, :class:`InterClassLoss`.
Helpers: :func:`cosface_min_scale`, :func:`cosface_margin_range`, :func:`create`.
"""

from marginface.losses.arcface import ArcFace
from marginface.losses.base import MarginHead, check_embeddings, check_labels
from marginface.losses.bounds import cosface_margin_range, cosface_min_scale
from marginface.losses.center import CenterLoss, InterClassLoss
from marginface.losses.combined import CombinedMargin
from marginface.losses.cosface import CosFace
from marginface.losses.functional import margin_cross_entropy
from marginface.losses.normface import NormFace
from marginface.losses.registry import create, create_head, is_head, list_losses
from marginface.losses.softmax import Softmax
from marginface.losses.sphereface import LambdaSchedule, SphereFace
from marginface.losses.subcenter import SubCenterArcFace
from marginface.losses.triplet import TripletLoss, pairwise_distances

__all__ = [
    "ArcFace",
    "CenterLoss",
    "CombinedMargin",
    "CosFace",
    "InterClassLoss",
    "LambdaSchedule",
    "MarginHead",
    "NormFace",
    "Softmax",
    "SphereFace",
    "SubCenterArcFace",
    "TripletLoss",
    "check_embeddings",
    "check_labels",
    "cosface_margin_range",
    "cosface_min_scale",
    "create",
    "create_head",
    "is_head",
    "list_losses",
    "margin_cross_entropy",
    "pairwise_distances",
]
