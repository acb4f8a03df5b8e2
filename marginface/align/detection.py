"""What every face detector returns, the detector interface, and the face-selection policy.

Landmark order (all backends): eye on the image's left, eye on the image's right, nose tip,
mouth corner on the image's left, mouth corner on the image's right; in the input image's pixel
coordinates. Images are RGB ``uint8`` as everywhere in marginface. The backends (``detect``:
YuNet; ``mtcnn``: MTCNN) build on this module, so neither imports the other's basics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Detection", "Detector", "Selection", "box_coverage", "box_iou", "select_faces"]

Selection = Literal["largest", "central", "all"]


@dataclass
class Detection:
    """One detected face."""

    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2) float32
    #: MTCNN's output network's probability that the box holds a face, where a detector
    #: measured it (MTCNN itself, YuNet with ONet landmark refinement); None otherwise. A
    #: second opinion from another network: YuNet finds "faces" on the backs of heads, on
    #: hair and on patterns, which ONet scores low (docs/streams.md, "Only faces open visits").
    face_prob: float | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        """The face size used for the minimum-size rule: the box's shorter side, pixels."""
        return min(self.width, self.height)

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2.0, float(self.box[1] + self.box[3]) / 2.0

    def scaled(self, factor: float) -> Detection:
        """The same detection with coordinates multiplied by ``factor``."""
        return Detection(
            box=(self.box * factor).astype(np.float32),
            score=self.score,
            landmarks=(self.landmarks * factor).astype(np.float32),
            face_prob=self.face_prob,
        )


def box_iou(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes (0 when they do not meet)."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def box_coverage(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """How much of the smaller of two ``x1, y1, x2, y2`` boxes lies in the other (0-1)."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    smaller = min((ax2 - ax1) * (ay2 - ay1), (bx2 - bx1) * (by2 - by1))
    return inter / smaller if smaller > 0 else 0.0


class Detector(ABC):
    """Finds faces in an RGB ``uint8`` image."""

    name: str = "detector"

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Every face found, best score first."""


def select_faces(
    detections: list[Detection],
    image_shape: tuple[int, ...],
    *,
    selection: Selection = "largest",
    min_face_size: float = 0.0,
    score_threshold: float = 0.0,
) -> list[Detection]:
    """Apply the score threshold and minimum face size, then the selection policy:
    ``largest`` (biggest box), ``central`` (box centre nearest the image centre) or ``all``
    (every face, largest first)."""
    kept = [d for d in detections if d.score >= score_threshold and d.size >= min_face_size]
    if not kept:
        return []
    if selection == "largest":
        return [max(kept, key=lambda d: d.area)]
    if selection == "central":
        cy, cx = image_shape[0] / 2.0, image_shape[1] / 2.0
        return [
            min(kept, key=lambda d: ((d.center[0] - cx) ** 2 + (d.center[1] - cy) ** 2, -d.area))
        ]
    if selection == "all":
        return sorted(kept, key=lambda d: d.area, reverse=True)
    raise ValueError(f"unknown face selection {selection!r}; use largest, central or all")
