"""The :class:`Embedder` interface: aligned crops in, L2-normalised float32 embeddings out.

Preprocessing (colour order, normalisation, input size) always comes from the model's card.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from marginface.align.transform import template_size
from marginface.card import ModelCard
from marginface.errors import ImageError, ModelError

__all__ = ["PRECISIONS", "Embedder", "l2_normalize"]

#: Numeric precisions an embedder can run in (``bf16``: PyTorch weights only).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``x`` scaled to unit L2 norm along its last axis (each row of a matrix, or one vector),
    as float32: marginface's one normalisation rule. A norm below ``eps`` divides by ``eps``
    (a zero vector stays zero). float64 input is normalised in float64, then rounded; any
    other input is taken as float32."""
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = x.astype(np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)


class Embedder(ABC):
    """Turns aligned face crops into identity embeddings.

    Subclasses implement :meth:`_forward` on a preprocessed ``(N, 3, H, W)`` float32 batch and
    return ``(N, D)`` raw (unnormalised) embeddings.
    """

    #: Crops per network call inside :meth:`embed`: a larger ``batch_size`` is run in chunks of
    #: this size, whose activations stay in the CPU caches (``None``: the whole batch at once).
    micro_batch: int | None = None

    def __init__(self, card: ModelCard, name: str | None = None) -> None:
        self.card = card
        self.name = name or card.name

    @property
    def embedding_dim(self) -> int:
        return int(self.card.embedding_dim)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the crops this model takes."""
        h, w = self.card.preprocessing.input_size
        return int(h), int(w)

    @property
    def template(self) -> str:
        return self.card.preprocessing.template

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.embedding_dim})"

    @abstractmethod
    def _forward(self, batch: Any) -> np.ndarray:
        """Raw embeddings of a preprocessed (N, 3, H, W) batch (see :meth:`_network_input`)."""

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB crops -> (N, 3, H, W) float32 network input, per the card."""
        pre = self.card.preprocessing
        x = crops[..., ::-1] if pre.color == "BGR" else crops
        x = x.astype(np.float32)
        if pre.mean != 0.0:
            x -= np.float32(pre.mean)
        if pre.std != 1.0:
            x *= np.float32(1.0 / pre.std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _check_crops(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        h, w = self.input_size
        if crops.ndim != 4 or crops.shape[3] != 3:
            raise ImageError(f"crops must be (N, H, W, 3) RGB arrays, got shape {crops.shape}")
        if crops.shape[1:3] != (h, w) and crops.shape[1:3] == template_size(self.template):
            # The model was trained on template crops resized to its input size: do the same.
            from marginface.data.augment import resize_to  # heavy: torch (marginface.data)

            crops = np.stack([resize_to(c, (h, w)) for c in crops])
        if crops.shape[1:3] != (h, w):
            raise ImageError(
                f"{self.name} expects {h}x{w} aligned crops ({self.template}), "
                f"got {crops.shape[1]}x{crops.shape[2]}"
            )
        if crops.dtype != np.uint8:
            raise ImageError(f"crops must be uint8, got {crops.dtype}")
        return crops

    def _network_input(self, crops: np.ndarray) -> Any:
        """What :meth:`_forward` takes, sliced along axis 0 into micro-batches: by default
        :meth:`preprocess`'s array; a runtime may keep its own tensor type."""
        return self.preprocess(crops)

    def _raw(self, crops: np.ndarray) -> np.ndarray:
        x = self._network_input(crops)
        step = self.micro_batch or len(x)
        parts = [
            np.asarray(self._forward(x[i : i + step]), dtype=np.float32)
            for i in range(0, len(x), step)
        ]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        out = out.reshape(out.shape[0], -1)
        if out.shape[1] != self.embedding_dim:
            raise ModelError(
                f"{self.name}: the network produces {out.shape[1]}-d embeddings but its card "
                f"says embedding_dim={self.embedding_dim}"
            )
        return out

    def embed(self, crops: np.ndarray, *, flip: bool = False, batch_size: int = 64) -> np.ndarray:
        """Embeddings (N, D) float32 with unit-norm rows for (N, H, W, 3) uint8 RGB crops.

        ``flip`` adds the embedding of each crop's mirror image before normalising (test-time
        augmentation).
        """
        crops = self._check_crops(crops)
        n = crops.shape[0]
        if n == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        batch_size = max(1, int(batch_size))
        out = np.empty((n, self.embedding_dim), dtype=np.float32)
        for start in range(0, n, batch_size):
            chunk = crops[start : start + batch_size]
            if flip:
                both = np.concatenate([chunk, chunk[:, :, ::-1]], axis=0)
                raw = self._raw(both)
                raw = raw[: len(chunk)] + raw[len(chunk) :]
            else:
                raw = self._raw(chunk)
            out[start : start + len(chunk)] = raw
        if not np.all(np.isfinite(out)):
            raise ModelError(f"{self.name}: the network produced NaN or infinite embeddings")
        return l2_normalize(out)
