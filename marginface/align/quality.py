"""Face quality from what detection and alignment already give: size, detection score,
sharpness of the aligned crop, head pose from the five landmarks, and (where the detector
measured it) MTCNN ONet's probability that the box holds a face.

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

__all__ = ["FACE_PROB_MIN", "FaceQuality", "face_quality", "sharpness"]

#: ONet face probability above which a detection is taken for a face turned towards the camera
#: (with :data:`MAX_YAW` and the pitch range below). On the real clips of ``video-real`` 1,060
#: of 1,163 faces pass and 1 of 567 detections of crests, hair, backs of heads and ears does
#: (docs/streams.md, "Only faces open visits").
FACE_PROB_MIN = 0.9
#: Largest nose offset from the eyes' midline, in eye distances, of a face turned towards the
#: camera (about 55 degrees of head turn; a profile is 1 or more).
MAX_YAW = 0.8
#: Nose height between eyes and mouth (0.5 level) of a face not tilted away (faces of the real
#: clips lie between 0.29 and 0.85; rendered passers looking down a little reach 0.87).
PITCH_RANGE = (0.1, 0.95)


@dataclass(frozen=True)
class FaceQuality:
    """Measures of one face (see :func:`face_quality`)."""

    size: float  # distance between the eyes, pixels of the source image
    detection_score: float
    sharpness: float  # variance of the Laplacian of the aligned crop's grey levels
    yaw: float  # nose offset from the eyes' midline, in eye distances (0 frontal, ~0.5 profile)
    pitch: float  # nose height between eyes and mouth, 0.5 ~ level, extremes tilt
    face_prob: float | None = None  # ONet's face probability, where the detector measured it

    @property
    def score(self) -> float:
        """One number in [0, 1] to rank faces of one person (a track's best face): the
        product of soft scores for size, sharpness and pose, times the detection score (and
        ONet's face probability, when known)."""
        s_size = min(1.0, self.size / 40.0)
        s_sharp = min(1.0, self.sharpness / 200.0)
        s_pose = max(0.0, 1.0 - abs(self.yaw) / 0.5) * max(0.0, 1.0 - abs(self.pitch - 0.5) / 0.4)
        s_face = 1.0 if self.face_prob is None else min(max(self.face_prob, 0.0), 1.0)
        return float(s_size * s_sharp * s_pose * s_face * min(max(self.detection_score, 0.0), 1.0))

    @property
    def faces_camera(self) -> bool:
        """Whether this detection shows a face turned towards the camera: ONet takes it for a
        face (:data:`FACE_PROB_MIN`; not judged when unknown) and the landmarks show a head not
        turned to profile or tilted away (:data:`MAX_YAW`, :data:`PITCH_RANGE`). The back of a
        head, an ear, hair or a pattern is not; how a camera tells a person facing it from
        everything else a face detector finds."""
        if self.face_prob is not None and self.face_prob < FACE_PROB_MIN:
            return False
        return abs(self.yaw) <= MAX_YAW and PITCH_RANGE[0] <= self.pitch <= PITCH_RANGE[1]

    def to_dict(self) -> dict[str, float | None]:
        return {
            "size": round(self.size, 1),
            "detection_score": round(self.detection_score, 4),
            "sharpness": round(self.sharpness, 1),
            "yaw": round(self.yaw, 3),
            "pitch": round(self.pitch, 3),
            "face_prob": None if self.face_prob is None else round(self.face_prob, 4),
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
    landmarks: np.ndarray,
    detection_score: float,
    crop: np.ndarray | None,
    face_prob: float | None = None,
) -> FaceQuality:
    """The quality of one detected face: ``landmarks`` (5, 2) in source pixels (eyes, nose,
    mouth corners, as every marginface detector gives them), its detection score, its
    aligned crop (None: sharpness unknown, counted as sharp) and ONet's face probability
    (:attr:`marginface.align.Detection.face_prob`; None: unknown)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_l, mouth_r = lm
    eyes = right_eye - left_eye
    iod = float(np.hypot(*eyes))
    if iod < 1e-6:
        return FaceQuality(0.0, float(detection_score), 0.0, 1.0, 0.5, face_prob)
    # coordinates along the eye line (u) and across it (v), in eye distances
    u_axis = eyes / iod
    v_axis = np.array([-u_axis[1], u_axis[0]])
    mid_eye = (left_eye + right_eye) / 2
    mid_mouth = (mouth_l + mouth_r) / 2
    yaw = float((nose - mid_eye) @ u_axis / iod)
    mouth_v = float((mid_mouth - mid_eye) @ v_axis)
    pitch = float((nose - mid_eye) @ v_axis / mouth_v) if abs(mouth_v) > 1e-6 else 0.5
    sharp = sharpness(crop) if crop is not None else math.inf
    return FaceQuality(iod, float(detection_score), sharp, yaw, pitch, face_prob)
