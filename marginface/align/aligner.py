"""Detect, select and align: from a photo to aligned face crops."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marginface.align.detect import Detection, Detector, Selection, load_detector, select_faces
from marginface.align.image import MIN_IMAGE_SIDE, ImageTooSmallError
from marginface.align.transform import estimate_similarity, template_points, template_size, warp
from marginface.detection_defaults import DEFAULT_MIN_FACE_SIZE, DEFAULT_SCORE_THRESHOLD
from marginface.errors import ConfigError
from marginface.imaging import DEFAULT_MAX_PIXELS, ImageSource, decode_image

__all__ = ["DEFAULT_MIN_FACE_SIZE", "DEFAULT_SCORE_THRESHOLD", "AlignResult", "Aligner"]


@dataclass
class AlignResult:
    """The faces kept in one image, their aligned crops, and why others were dropped."""

    faces: list[Detection]
    crops: np.ndarray  # (N, H, W, 3) uint8 RGB
    image_shape: tuple[int, int]
    n_detected: int = 0  # detections before the score/size/selection rules
    n_too_small: int = 0  # detections above the score threshold but below the minimum size
    notes: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        """``None`` when a face was kept, else ``"too small"`` or ``"no face"``."""
        if self.faces:
            return None
        return "too small" if self.n_too_small else "no face"


class Aligner:
    """Finds faces with a :class:`Detector`, applies the selection policy, and warps each kept
    face onto an alignment template.

    This is the one rule for turning a photo into crops: faces scoring below
    ``score_threshold`` or smaller than ``min_face_size`` are not used, images too small to
    hold a face are refused. The pipeline (gallery, service), evaluation, training-time
    verification and ``train-dev-crops`` all align through it (the last three by way of
    :class:`marginface.eval.embeddings.CropPreparer`)."""

    def __init__(
        self,
        detector: Detector | str = "yunet",
        *,
        template: str = "arcface_112x112",
        selection: Selection = "largest",
        min_face_size: float = DEFAULT_MIN_FACE_SIZE,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if selection not in ("largest", "central", "all"):
            raise ConfigError(f"unknown face selection {selection!r}; use largest, central or all")
        template_size(template)  # validates the name
        self.detector = load_detector(detector) if isinstance(detector, str) else detector
        self.template = template
        self.selection: Selection = selection
        self.min_face_size = float(min_face_size)
        self.score_threshold = float(score_threshold)
        self.max_pixels = max_pixels

    def load(self, image: ImageSource) -> tuple[np.ndarray, list[str]]:
        """Decode ``image`` (path, bytes or array) to RGB, refusing images too small to hold a
        face (:class:`ImageTooSmallError`). Returns the pixels and decoding notes."""
        decoded = decode_image(image, max_pixels=self.max_pixels)
        h, w = decoded.pixels.shape[:2]
        need = max(MIN_IMAGE_SIDE, int(np.ceil(self.min_face_size)))
        if min(h, w) < need:
            raise ImageTooSmallError(
                f"{decoded.source}: image is {w}x{h} pixels, too small to hold a face "
                f"(needs at least {need} px on its shorter side)"
            )
        return decoded.pixels, decoded.notes

    def crop(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The aligned crop for one set of five landmarks."""
        points, size = template_points(self.template)
        return warp(image, estimate_similarity(landmarks, points), size)

    def align(self, image: ImageSource) -> AlignResult:
        """Detect, select and align the faces of one image."""
        pixels, notes = self.load(image)
        detections = self.detector.detect(pixels)
        kept = select_faces(
            detections,
            pixels.shape,
            selection=self.selection,
            min_face_size=self.min_face_size,
            score_threshold=self.score_threshold,
        )
        scored = [d for d in detections if d.score >= self.score_threshold]
        too_small = sum(1 for d in scored if d.size < self.min_face_size)
        h, w = template_size(self.template)
        crops = (
            np.stack([self.crop(pixels, d.landmarks) for d in kept])
            if kept
            else np.zeros((0, h, w, 3), dtype=np.uint8)
        )
        return AlignResult(
            faces=kept,
            crops=crops,
            image_shape=(pixels.shape[0], pixels.shape[1]),
            n_detected=len(detections),
            n_too_small=too_small,
            notes=notes,
        )

    def __repr__(self) -> str:
        return (
            f"Aligner(detector={getattr(self.detector, 'name', self.detector)!r}, "
            f"template={self.template!r}, selection={self.selection!r}, "
            f"min_face_size={self.min_face_size}, score_threshold={self.score_threshold})"
        )

    @classmethod
    def from_options(
        cls, detector: str = "yunet", detector_options: dict[str, Any] | None = None, **kwargs: Any
    ) -> Aligner:
        """Build with a detector by name and its options."""
        return cls(load_detector(detector, **(detector_options or {})), **kwargs)
