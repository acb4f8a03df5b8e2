"""Face quality from what detection and alignment already give: size, detection score,
sharpness of the aligned crop, and head pose from the five landmarks.

Low-quality faces (tiny, blurred, turned away) give embeddings that resemble many people. A
video track keeps its best faces by :attr:`FaceQuality.score`. Refusing low-quality probes
outright ("unknown (low quality)") was measured and not adopted: on celeba-dev every gate
raised FNIR at the same FPIR (``bench/decision_rules.py``, docs/identification.md).

Every measure is cheap (a few microseconds to a millisecond) and needs no extra model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FaceQuality", "face_quality", "sharpness"]


@dataclass(frozen=True)
class FaceQuality:
    """Measures of one face (see :func:`face_quality`)."""

    size: float  # distance between the eyes, pixels of the source image
    detection_score: float
    sharpness: float  # variance of the Laplacian of the aligned crop's grey levels
    yaw: float  # nose offset from the eyes' midline, in eye distances (0 frontal, ~0.5 profile)
    pitch: float  # nose height between eyes and mouth, 0.5 ~ level, extremes tilt

    @property
    def score(self) -> float:
        """One number in [0, 1] to rank faces of one person (a track's best face): the
        product of soft scores for size, sharpness and pose, times the detection score."""
        s_size = min(1.0, self.size / 40.0)
        s_sharp = min(1.0, self.sharpness / 200.0)
        s_pose = max(0.0, 1.0 - abs(self.yaw) / 0.5) * max(0.0, 1.0 - abs(self.pitch - 0.5) / 0.4)
        return float(s_size * s_sharp * s_pose * min(max(self.detection_score, 0.0), 1.0))

    def to_dict(self) -> dict[str, float]:
        return {
            "size": round(self.size, 1),
            "detection_score": round(self.detection_score, 4),
            "sharpness": round(self.sharpness, 1),
            "yaw": round(self.yaw, 3),
            "pitch": round(self.pitch, 3),
            "score": round(self.score, 4),
        }


def sharpness(crop: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a crop's grey levels (higher: sharper)."""
    g = np.asarray(crop, dtype=np.float32)
    if g.ndim == 3:
        g = g[..., :3] @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def face_quality(
    landmarks: np.ndarray, detection_score: float, crop: np.ndarray | None
) -> FaceQuality:
    """The quality of one detected face: ``landmarks`` (5, 2) in source pixels (eyes, nose,
    mouth corners, as every marginface detector gives them), its detection score and its
    aligned crop (None: sharpness unknown, counted as sharp)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_l, mouth_r = lm
    eyes = right_eye - left_eye
    iod = float(np.hypot(*eyes))
    if iod < 1e-6:
        return FaceQuality(0.0, float(detection_score), 0.0, 1.0, 0.5)
    # coordinates along the eye line (u) and across it (v), in eye distances
    u_axis = eyes / iod
    v_axis = np.array([-u_axis[1], u_axis[0]])
    mid_eye = (left_eye + right_eye) / 2
    mid_mouth = (mouth_l + mouth_r) / 2
    yaw = float((nose - mid_eye) @ u_axis / iod)
    mouth_v = float((mid_mouth - mid_eye) @ v_axis)
    pitch = float((nose - mid_eye) @ v_axis / mouth_v) if abs(mouth_v) > 1e-6 else 0.5
    sharp = sharpness(crop) if crop is not None else math.inf
    return FaceQuality(iod, float(detection_score), sharp, yaw, pitch)
