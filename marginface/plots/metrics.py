"""Angular statistics of a labelled set of features on the hypersphere.

All angles are in degrees and computed on L2-normalised features:

- the **class centre** of class ``k`` is the normalised mean of its normalised features;
- the **mean intra-class angle** is the mean, over all samples, of the angle between a feature
  and its own class centre;
- the **minimum inter-class angle** is the smallest angle between two class centres;
- the **angular gap** is ``min over class pairs (k, l) of angle(c_k, c_l) - r_k - r_l``, where
  ``r_k`` is the ``quantile`` (default 95 %) of the angles of class ``k``'s features to its
  centre: the empty angle left between the two clusters once each is given its radius. It is
  negative when clusters overlap. The quantile keeps one stray sample from deciding it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["AngularStats", "angular_stats", "class_centres"]


@dataclass(frozen=True)
class AngularStats:
    """The angular statistics of one feature set (degrees)."""

    mean_intra_angle: float
    min_inter_angle: float
    angular_gap: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _angle(cos: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def class_centres(
    features: np.ndarray, labels: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """``(C, D)`` unit class centres: normalised means of the normalised features."""
    f = _normalise(features)
    labels = np.asarray(labels)
    C = int(labels.max()) + 1 if num_classes is None else num_classes
    centres = np.zeros((C, f.shape[1]))
    for k in range(C):
        members = f[labels == k]
        if len(members) == 0:
            raise ValueError(f"class {k} has no samples")
        centres[k] = members.mean(axis=0)
    return _normalise(centres)


def angular_stats(
    features: np.ndarray, labels: np.ndarray, *, quantile: float = 0.95
) -> AngularStats:
    """Mean intra-class angle, minimum inter-class angle and angular gap (see module doc)."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features {features.shape} and labels {labels.shape} do not match")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    f = _normalise(features)
    centres = class_centres(f, labels)
    C = centres.shape[0]
    if C < 2:
        raise ValueError("at least two classes are needed")
    intra = _angle(np.einsum("nd,nd->n", f, centres[labels]))
    radius = np.array([np.quantile(intra[labels == k], quantile) for k in range(C)])
    between = _angle(centres @ centres.T)
    iu = np.triu_indices(C, k=1)
    gaps = between - radius[:, None] - radius[None, :]
    return AngularStats(
        mean_intra_angle=float(intra.mean()),
        min_inter_angle=float(between[iu].min()),
        angular_gap=float(gaps[iu].min()),
    )
