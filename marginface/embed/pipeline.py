"""``Pipeline``: photo -> faces -> aligned crops -> embeddings; what the gallery, the service
and evaluation all use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from marginface.align.aligner import (
    DEFAULT_MIN_FACE_SIZE,
    DEFAULT_SCORE_THRESHOLD,
    Aligner,
    AlignResult,
)
from marginface.align.detect import Detector, Selection, load_detector
from marginface.card import ModelCard
from marginface.embed.base import Embedder
from marginface.embed.loader import load_embedder
from marginface.errors import NoFaceError
from marginface.imaging import DEFAULT_MAX_PIXELS

__all__ = ["EmbedderLike", "Face", "FaceLike", "FacePipeline", "Pipeline"]


@dataclass
class Face:
    """One face in a photo, aligned and embedded."""

    box: np.ndarray  # (4,) float32 x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2) float32, image pixels
    crop: np.ndarray  # (112, 112, 3) (or the card's size) uint8 RGB
    embedding: np.ndarray  # (D,) float32, unit norm
    image_shape: tuple[int, int]  # (H, W) of the decoded photo: where the box lies
    notes: list[str] = field(default_factory=list)  # e.g. "animated GIF: first frame used"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly box, score and landmarks (no crop, no embedding)."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


class FaceLike(Protocol):
    """What callers read of a :class:`Face` (a stand-in, e.g. a test's, provides the same)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    crop: np.ndarray
    embedding: np.ndarray
    image_shape: tuple[int, int]


class EmbedderLike(Protocol):
    """What the gallery and the service read of a pipeline's embedder (an :class:`Embedder`
    has it all; a stand-in may have no card)."""

    @property
    def name(self) -> str: ...

    @property
    def embedding_dim(self) -> int: ...

    @property
    def card(self) -> ModelCard | None: ...


class FacePipeline(Protocol):
    """The face pipeline the gallery's :class:`~marginface.gallery.Recognizer` and the service
    use: :class:`Pipeline`, or any object with the same ``embedder``, ``selection`` and
    ``embed_image`` (the tests' fakes)."""

    @property
    def embedder(self) -> EmbedderLike: ...

    @property
    def selection(self) -> str: ...

    def embed_image(self, image: np.ndarray | str | Path | bytes) -> Sequence[FaceLike]: ...


class Pipeline:
    """Detector + alignment + embedder, with the face-selection policy.

    ``selection``: ``largest`` (default), ``central`` or ``all``. Faces whose box is smaller
    than ``min_face_size`` pixels (shorter side) or score below ``score_threshold`` are ignored
    (the :class:`~marginface.align.Aligner`'s rule and defaults, which evaluation and
    training-time verification share). The alignment template comes from the embedder's card.
    ``flip`` turns on flip test-time augmentation.
    """

    def __init__(
        self,
        detector: Detector,
        embedder: Embedder,
        selection: Selection = "largest",
        min_face_size: float = DEFAULT_MIN_FACE_SIZE,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        *,
        flip: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.flip = flip
        self.aligner = Aligner(
            detector,
            template=embedder.template,
            selection=selection,
            min_face_size=min_face_size,
            score_threshold=score_threshold,
            max_pixels=max_pixels,
        )

    @classmethod
    def from_names(
        cls,
        model: str | Path = "default",
        detector: str = "yunet",
        *,
        runtime: str = "auto",
        precision: str = "fp32",
        detector_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Pipeline:
        """Build from a model spec (see :func:`marginface.embed.load_embedder`, which takes
        ``runtime`` and ``precision``) and a detector name; other keyword arguments go to the
        constructor."""
        return cls(
            load_detector(detector, **(detector_options or {})),
            load_embedder(model, runtime=runtime, precision=precision),
            **kwargs,
        )

    @property
    def selection(self) -> Selection:
        return self.aligner.selection

    @property
    def min_face_size(self) -> float:
        return self.aligner.min_face_size

    @property
    def score_threshold(self) -> float:
        return self.aligner.score_threshold

    def __repr__(self) -> str:
        return f"Pipeline({self.aligner!r}, embedder={self.embedder!r}, flip={self.flip})"

    def align(self, image: np.ndarray | str | Path | bytes) -> AlignResult:
        """Detect, select and align without embedding."""
        return self.aligner.align(image)

    def _faces(self, result: AlignResult, embeddings: np.ndarray) -> list[Face]:
        return [
            Face(
                box=d.box.astype(np.float32),
                score=float(d.score),
                landmarks=d.landmarks.astype(np.float32),
                crop=crop,
                embedding=emb,
                image_shape=result.image_shape,
                notes=list(result.notes),
            )
            for d, crop, emb in zip(result.faces, result.crops, embeddings, strict=True)
        ]

    def embed_image(self, image: np.ndarray | str | Path | bytes) -> list[Face]:
        """Every selected face of one image (an empty list when there is none).

        Raises :class:`~marginface.errors.ImageError` for unreadable images and images too
        small to hold a face.
        """
        result = self.aligner.align(image)
        if not result.faces:
            return []
        return self._faces(result, self.embedder.embed(result.crops, flip=self.flip))

    def embed_one(self, image: np.ndarray | str | Path | bytes) -> Face:
        """The selected face of one image, or :class:`NoFaceError`."""
        faces = self.embed_image(image)
        if not faces:
            name = image if isinstance(image, str | Path) else "the image"
            raise NoFaceError(f"no face found in {name}")
        return faces[0]

    def embed_images(
        self, images: Sequence[np.ndarray | str | Path | bytes], *, batch_size: int = 64
    ) -> list[list[Face]]:
        """:meth:`embed_image` for many images, embedding the crops in batches."""
        results = [self.aligner.align(img) for img in images]
        crops = [r.crops for r in results if len(r.crops)]
        if not crops:
            return [[] for _ in results]
        embeddings = self.embedder.embed(
            np.concatenate(crops), flip=self.flip, batch_size=batch_size
        )
        out, start = [], 0
        for r in results:
            n = len(r.faces)
            out.append(self._faces(r, embeddings[start : start + n]) if n else [])
            start += n
        return out
