"""NormFace / NSL: normalised weights and features, logits ``s·cos θ_j``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from marginface.losses.base import MarginHead

__all__ = ["NormFace"]


class NormFace(MarginHead):
    """Normalised softmax loss: ``‖W_j‖ = 1``, ``‖x‖ = s``, logits ``s·cos θ_j``
    (default s = 64)."""

    def __init__(
        self, num_classes: int, embedding_dim: int, *, scale: float = 64.0, **kwargs: Any
    ) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.scale = float(scale)

    def scale_for(self, embeddings: Tensor) -> float:
        return self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"
