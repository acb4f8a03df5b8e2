"""Softmax: a plain fully connected layer (optional bias) followed by cross-entropy."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from marginface.losses.base import MarginHead

__all__ = ["Softmax"]


class Softmax(MarginHead):
    """``logits = x·Wᵀ + b``; no normalisation, no margin.

    ``target_logit(θ)`` is ``cos θ`` (unit norms), the shape a Softmax target logit takes when
    ``‖W‖·‖x‖ = 1``.
    """

    normalize_embeddings = False
    normalize_weight = False

    def __init__(
        self, num_classes: int, embedding_dim: int, *, bias: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(num_classes, embedding_dim, bias=bias, **kwargs)

    def target_logit(self, theta: Tensor) -> Tensor:
        """``cos θ``: the target logit for unit feature and weight norms."""
        return super().target_logit(theta)
